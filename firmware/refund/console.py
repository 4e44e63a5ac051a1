# USB console reader: service frames (refund.svcframe) go to the service task; a Ctrl-C
# outside a frame stops the application and leaves the REPL (what mpremote needs when
# the application is down or must be stopped), as main.py on an ESP32 behaves. Inside a
# frame a Ctrl-C is a frame error: the application keeps running.
# Never reads past the frame being received or past a Ctrl-C: mpremote sends
# "\r\x03\r\x01" and the REPL needs the \x01.
import asyncio
from micropython import const
from refund import svcframe

_IDLE_MS = const(250)
_CHUNK = const(64)


async def watch(stream, stop, service=None):
    r = asyncio.StreamReader(stream)
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    dec = svcframe.Decoder()
    if service is not None:
        service.decoder = dec
    while True:
        n = await r.readinto(mv[:max(1, min(_CHUNK, dec.want()))])
        if not n:
            # EOF: the console is unplugged (or not a tty); look again later.
            await asyncio.sleep_ms(_IDLE_MS)
            continue
        for i in range(n):
            b = buf[i]
            if dec.is_break(b):
                stop.set()
                return
            p = dec.push(b)
            if p is not None and service is not None:
                service.submit(p)
