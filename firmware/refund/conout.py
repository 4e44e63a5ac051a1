# Console output that never blocks the terminal (an unread serial monitor, a USB cable
# to a sleeping laptop). Lines go into a preallocated ring drained with non-blocking
# writes (board.console_out(): write() returns the bytes taken, or None); a line that
# does not fit is dropped and counted. Service frames are written by the service task
# alone (write_all), which may wait for the line; lines keep queueing meanwhile and are
# never written into the middle of a frame.
import asyncio
import time
from micropython import const

_SIZE = const(1024)
_IDLE_MS = const(200)
_BUSY_MS = const(10)


class ConOut:
    def __init__(self, stream):
        self.s = stream
        self.buf = bytearray(_SIZE)
        self.mv = memoryview(self.buf)
        self.head = 0  # next byte to write into the ring
        self.used = 0
        self.framing = False  # a service frame is on the line: lines wait
        self.dropped = 0  # lines lost to a full line
        self.cut = 0  # service replies abandoned (technician stopped reading)

    def _put(self, b):
        n = len(b)
        h = self.head
        k = min(n, _SIZE - h)
        self.mv[h:h + k] = b[:k]
        if k < n:
            self.mv[0:n - k] = b[k:]
        self.head = (h + n) % _SIZE
        self.used += n

    def line(self, text):
        """Queue one line; never waits. Dropped (counted) when the ring is full."""
        b = text.encode() if isinstance(text, str) else text
        if len(b) + 1 > _SIZE - self.used:
            self.drain()
            if len(b) + 1 > _SIZE - self.used:
                self.dropped += 1
                return False
        self._put(b)
        self._put(b"\n")
        self.drain()
        return True

    def _write(self, mv):
        try:
            return self.s.write(mv) or 0
        except OSError:
            return 0  # EAGAIN and friends: the line is full

    def drain(self):
        """Write what the line takes now; True when the ring is empty."""
        while self.used and not self.framing and self.s is not None:
            tail = (self.head - self.used) % _SIZE
            n = min(self.used, _SIZE - tail)
            w = self._write(self.mv[tail:tail + n])
            if not w:
                return False
            self.used -= w
        return not self.used

    async def run(self):
        # Lines a full line could not take go out when it drains.
        while True:
            await asyncio.sleep_ms(_BUSY_MS if self.used else _IDLE_MS)
            self.drain()

    async def begin(self, timeout_ms):
        """Service task, before a frame: queued lines go out first (never inside a
        frame), then lines wait until end()."""
        t0 = time.ticks_ms()
        while not self.drain():
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                self.cut += 1
                raise OSError(110)
            await asyncio.sleep_ms(_BUSY_MS)
        self.framing = True

    def end(self):
        self.framing = False
        self.drain()

    async def write_all(self, mv, timeout_ms):
        """Service task, between begin() and end(): write mv whole, waiting (only this
        task) while the line is full. OSError if no byte moves for timeout_ms (the
        technician stopped reading)."""
        t0 = time.ticks_ms()
        off = 0
        n = len(mv)
        while off < n:
            w = self._write(mv[off:])
            if w:
                off += w
                t0 = time.ticks_ms()
                continue
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                self.cut += 1
                raise OSError(110)
            await asyncio.sleep_ms(_BUSY_MS)
