# The serial link to an ESC/POS printer: pacing, XON/XOFF, the reader task and the
# request/reply of status answers. What to print and when is refund.printer's job.
#
# Writing: in-band bytes go in whole commands per write where possible (escpos.Splitter),
# honouring XON/XOFF and paced to the line rate, baud/10 bytes a second: a pty or a
# UART driver would buffer kilobytes that the printer then overruns. A real-time
# request goes only between two whole commands, never inside one.
#
# Reading: the reader task demultiplexes everything the printer sends: XON/XOFF, a
# "_ ... NUL" identification frame while one is expected (refund.prident, if present),
# the reply to the outstanding real-time request (0xx1xx10), the reply to the
# outstanding GS r (0xx0xxxx; the two sets do not overlap and exclude XON/XOFF), and
# an automatic status back (0xx1xx00 and three 0xx0xxxx, back to back: the printer
# sends one at every status change after escpos.ASB_ON, which starts every slip), and
# garbage (anything else: logged, counted, ignored). A fault an automatic status back
# reports while a job is watched is latched (`seen`): a paper end reloaded between two
# polls still fails the job, which is printed again. A byte that arrives while a
# real-time request is outstanding but violates its fixed bits is counted as
# untrusted_status; a status request answered only by such bytes leaves the printer in
# state "error".
#
# Hardware comes only through the stream handed in (a raw non-blocking tty on the unix
# board, machine.UART on a board): no `machine` here.
import asyncio
import time
from micropython import const
from refund import escpos as P

_RBUF = const(32)
_NOISE_LOG = const(8)  # garbage bytes logged one by one, then every _NOISE_EVERY-th
_NOISE_EVERY = const(64)
_ASB_GAP_MS = const(50)  # the 4 bytes come back to back: a longer gap = not a frame
ABSENT = "absent"

# Every printer setting (config key "printer"; refund.config checks the names).
DEFAULTS = {
    "status_ms": 500,  # a real-time status reply must come within this: else absent
    "poll_ms": 1000,  # retry period while the printer is not ready
    "idle_ms": 10000,  # status poll period while there is nothing to print
    "xoff_check_ms": 500,  # XOFF lasting this long: ask the printer why (again)
    "xoff_max_ms": 60000,  # XOFF from a printer reporting ready this long: give up
    "confirm_ms": 30000,  # GS r 1 answer (whole receipt printed) within this
    "settle_ms": 100,  # after a failure, before DLE ENQ 2 (bytes still on the line)
    "chunk": 16,  # bytes per write: a UART FIFO's worth
}


class Message:
    """micropython-async's Message, reduced to what a request/reply needs: an event that
    carries a value (instead of a flag, a value and an asyncio.Event side by side).
    expect(): a reply is wanted (value back to `none`); the reader: `if m.open and
    fits(b): m.set(b)`; `await m.wait(ms)`: the value, or `none` after ms."""

    def __init__(self, none=None):
        self.none = none
        self.val = none
        self.open = False  # a reply is expected: the reader may set() one
        self._ev = asyncio.Event()

    def expect(self):
        self.val = self.none
        self._ev.clear()
        self.open = True

    def set(self, v):
        self.val = v
        self.open = False
        self._ev.set()

    def close(self):
        self.open = False

    def poke(self):
        """Wake the waiter without a value (it gets `none` and looks why)."""
        self._ev.set()

    async def wait(self, ms):
        """The value once set(), or `none` when ms pass first."""
        try:
            await asyncio.wait_for_ms(self._ev.wait(), ms)
        except asyncio.TimeoutError:
            pass
        return self.val


class Link:
    def __init__(self, stream, baud, o, counts, log, fault):
        """stream: asyncio-stream capable; baud: the line rate the UART runs at; o:
        settings (DEFAULTS); counts: the printer's counters; fault(state, detail): a
        write stopped by the printer (state says why)."""
        self.s = stream
        self.o = o
        self.counts = counts
        self.log = log
        self.fault = fault
        self.baud = baud
        self._chunk = o["chunk"]
        # Line pacing: microseconds of line time per byte x 1000 (integer math).
        self._ns_byte = 10 * 1000000000 // baud
        self._fifo_us = self._chunk * self._ns_byte // 1000
        self._free_at = time.ticks_us()
        self._mv_write = False  # the stream lacks write(buf, off, n): use memoryviews
        self._rs = asyncio.StreamReader(stream)
        self._rbuf = bytearray(_RBUF)
        self._task = None
        self.split = P.Splitter()
        self.xoff = False
        self._xon = asyncio.Event()
        self.rt = Message(-1)  # the real-time status reply
        self.gsr = Message(-1)  # the GS r 1 reply
        self.ident = None  # refund.prident.Ident: takes identification frames
        self.why = None  # detail of the last check() that was not READY
        self.last_status = None
        self.near_end = False
        self._asb = bytearray(4)
        self._asb_n = 0  # > 0: inside an automatic status back, bytes so far
        self._asb_t0 = 0
        self.watch = False  # a job is printing: latch what a status back reports
        self.seen = None  # (state, detail) of the first fault reported while watched

    def start(self):
        if self._task is None:
            self._task = asyncio.create_task(self._reader())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # ---- status ------------------------------------------------------------------

    async def ask(self, req):
        """One real-time status request: the trusted reply byte, or -1."""
        self.rt.expect()
        try:
            await self.raw(req)
            return await self.rt.wait(self.o["status_ms"])
        finally:
            self.rt.close()

    async def check(self):
        """DLE EOT 1, 2, 4 -> READY / PAPER_OUT / COVER_OPEN / OFFLINE / ERROR / ABSENT."""
        u0 = self.counts["untrusted_status"]
        self.why = None
        b1 = await self.ask(P.STATUS_PRINTER)
        b2 = await self.ask(P.STATUS_OFFLINE) if b1 >= 0 else -1
        b4 = await self.ask(P.STATUS_PAPER) if b2 >= 0 else -1
        if b4 < 0:
            if self.counts["untrusted_status"] > u0:
                self.why = "status replies violate the fixed bits: not trusted"
                return P.ERROR
            self.why = "no status answer in %d ms" % self.o["status_ms"]
            return ABSENT
        self.last_status = (b1, b2, b4)
        self.near_end = P.near_end(b4)
        st = P.state(b1, b2, b4)
        if st == P.ERROR:
            self.why = "printer error (DLE EOT 2 = 0x%02x)" % b2
        return st

    async def clear(self):
        """Drop what the printer still buffers (DLE ENQ 2), after the line settles."""
        await asyncio.sleep_ms(self.o["settle_ms"])
        await self.raw(P.RECOVER_CLEAR)
        self.xoff = False  # its buffer is empty: a lost XON must not stall us for good
        self._xon.set()

    def watching(self, on):
        """Start (forgetting what was seen) or stop latching status back faults."""
        self.watch = on
        if on:
            self.seen = None

    def _asb_take(self, b):
        """A byte after a status back's first: True if it belongs to the frame."""
        a = self._asb
        n = self._asb_n
        if b & 0x90 or time.ticks_diff(time.ticks_ms(), self._asb_t0) > _ASB_GAP_MS:
            self._asb_n = 0  # the first byte was not a status back's:
            self.noise(a[0], "garbage")  # this one is looked at on its own
            return False
        a[n] = b
        if n < 3:
            self._asb_n = n + 1
            return True
        self._asb_n = 0
        self.counts["asb"] += 1
        st = P.asb_state(a[0], a[1], a[2])
        if st != P.READY and self.watch and self.seen is None:
            self.seen = (st, "the printer reported it during printing")
            # Whatever the job waits for ends now (put() and the completion check look
            # at `seen`): XON, the GS r 1 or the GS I answer.
            self._xon.set()
            self.gsr.poke()
            if self.ident is not None:
                self.ident.ans.poke()
            self.log("printer", "status back during printing: %s" % st, level="WARN")
        return True

    def stopped(self):
        """A latched fault ends the job: False after saying why (fault())."""
        if self.seen is None:
            return True
        self.fault(self.seen[0], self.seen[1])
        return False

    # ---- writing -------------------------------------------------------------------

    async def _pace(self):
        while True:
            d = time.ticks_diff(self._free_at, time.ticks_us())
            if d <= self._fifo_us:
                return
            await asyncio.sleep_ms((d - self._fifo_us) // 1000 + 1)

    def _sent(self, n):
        now = time.ticks_us()
        if time.ticks_diff(self._free_at, now) < 0:
            self._free_at = now
        self._free_at = time.ticks_add(self._free_at, n * self._ns_byte // 1000)
        self.counts["bytes"] += n

    def _write(self, data, off, n):
        if not self._mv_write:
            try:
                return self.s.write(data, off, n)
            except TypeError:
                self._mv_write = True
        return self.s.write(memoryview(data)[off:off + n])

    async def raw(self, data):
        """A real-time command: sent even under XOFF (the printer takes these at once)."""
        off = 0
        n = len(data)
        while off < n:
            k = self._write(data, off, n - off)
            if not k:
                await asyncio.sleep_ms(2)
                continue
            off += k
            self._sent(k)

    async def put(self, data):
        """In-band bytes: whole commands per write where possible, paced to the line
        rate, stopping on XOFF. False if the printer failed (fault() said why)."""
        n = len(data)
        off = 0
        length = self.split.length
        while off < n:
            # Piece: whole commands up to `chunk` bytes (a longer command alone).
            end = off
            while end < n:
                k = length(data, end, n)
                if end > off and end + k - off > self._chunk:
                    break
                end += k
            pos = off
            while pos < end:  # inside one piece; only a long command has several writes
                if self.seen is not None:
                    return self.stopped()
                if self.xoff and not await self._wait_xon(pos == off):
                    return False
                await self._pace()
                if self.xoff:
                    continue
                k = self._write(data, pos, min(self._chunk, end - pos))
                if not k:
                    await asyncio.sleep_ms(2)
                    continue
                pos += k
                self._sent(k)
            off = end
        return True

    async def _wait_xon(self, safe):
        """Wait for XON. A full buffer drains at paper speed; if XOFF lasts
        xoff_check_ms, ask the printer why (only at a command boundary: `safe`), and
        again every xoff_check_ms: a fault ends the job; a ready printer is waited out
        up to xoff_max_ms. (Not at once: each request takes 3 bytes of a full buffer.)"""
        self.counts["xoff_count"] += 1
        t0 = time.ticks_ms()
        while self.xoff:
            try:
                await asyncio.wait_for_ms(self._xon.wait(), self.o["xoff_check_ms"])
            except asyncio.TimeoutError:
                pass
            if not self.xoff:
                break
            if self.seen is not None:
                return self.stopped()
            if safe:
                st = await self.check()
                if st != P.READY:
                    self.fault(st, self.why or "during printing")
                    return False
            if time.ticks_diff(time.ticks_ms(), t0) > self.o["xoff_max_ms"]:
                self.fault(P.ERROR, "XOFF for %d ms" % self.o["xoff_max_ms"])
                return False
        return True

    # ---- reading -----------------------------------------------------------------

    async def _reader(self):
        buf = self._rbuf
        rt = self.rt
        gsr = self.gsr
        while True:
            try:
                n = await self._rs.readinto(buf)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.log("printer", "read failed: %r" % (e,), level="ERROR")
                await asyncio.sleep_ms(200)
                continue
            if not n:
                await asyncio.sleep_ms(10)
                continue
            idn = self.ident
            for i in range(n):
                b = buf[i]
                if b == P.XON:
                    self.xoff = False
                    self._xon.set()
                elif b == P.XOFF:
                    self.xoff = True
                    self._xon.clear()
                elif self._asb_n and self._asb_take(b):
                    pass
                elif idn is not None and idn.take(b):
                    pass
                elif P.asb_first(b):
                    self._asb[0] = b
                    self._asb_n = 1
                    self._asb_t0 = time.ticks_ms()
                elif rt.open and P.status_valid(b):
                    rt.set(b)
                elif gsr.open and P.paper_sensor_valid(b):
                    gsr.set(b)
                elif rt.open:
                    self.noise(b, "untrusted_status")
                else:
                    self.noise(b, "garbage")

    def noise(self, b, what):
        c = self.counts
        c[what] += 1
        k = c[what]
        if k <= _NOISE_LOG or k % _NOISE_EVERY == 0:
            self.log("printer", "%s byte 0x%02x from the printer ignored (%d so far)"
                     % (what, b, k), level="WARN")
