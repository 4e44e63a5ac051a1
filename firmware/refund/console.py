# USB console watcher: Ctrl-C from a technician (or mpremote) stops the
# application and leaves the REPL, as main.py on an ESP32 behaves.
# Bytes are read one at a time into a preallocated buffer so nothing after the
# Ctrl-C is swallowed: mpremote sends "\r\x03\r\x01" and the REPL needs the \x01.
import asyncio
from micropython import const

_CTRL_C = const(3)
_IDLE_MS = const(250)


async def watch(stream, stop):
    r = asyncio.StreamReader(stream)
    buf = bytearray(1)
    while True:
        n = await r.readinto(buf)
        if not n:
            # EOF: the console is unplugged (or not a tty); look again later.
            await asyncio.sleep_ms(_IDLE_MS)
        elif buf[0] == _CTRL_C:
            stop.set()
            return
