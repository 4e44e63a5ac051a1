# Printer identification (optional: refund.printer runs without this module, and then
# confirms a receipt by the one-byte GS r 1 answer alone).
#
# GS I 67 asks for the model name, answered in-band as "_" name NUL once everything
# before it is printed. The name is learnt before the first job (two identical answers);
# after that, the exact model frame is the completion proof of a receipt: one noise
# byte can look like a one-byte GS r answer, but cannot forge that frame. A printer
# that never answers GS I is confirmed by GS r 1 alone (logged: then a noise byte in
# the wrong place could confirm early).
import time
from micropython import const
from refund.prlink import Message

REQ = b"\x1dI\x43"  # GS I 67
_MAX = const(24)  # longest model name kept
_GAP_MS = const(50)  # a frame's bytes come back to back: longer = not a frame
_TRIES = const(3)
_START = const(0x5F)  # "_"
# step() results
DONE = const(1)
WAIT = const(0)
AGAIN = const(2)
FAIL = const(-1)


class Ident:
    def __init__(self, link, log):
        self.link = link
        self.log = log
        self.model = None  # bytes: the printer's GS I 67 answer, once it agreed twice
        self.tries = 0
        self.want = False  # a GS I 67 answer is expected: "_" starts a frame
        self.ans = Message(None)  # the last frame (the model object itself: it came)
        self._buf = bytearray(_MAX)
        self._n = -1  # >= 0: inside a "_...NUL" frame, bytes so far
        self._t0 = 0
        self._prev = None  # the previous frame that was not the model
        link.ident = self

    def take(self, b):
        """The reader's byte: True if it belongs to an identification frame."""
        if self._n >= 0 and (self._n >= _MAX or time.ticks_diff(
                time.ticks_ms(), self._t0) >= _GAP_MS):
            self._n = -1  # the "_" was not the start of a frame: this byte
            self.link.noise(_START, "garbage")  # is looked at on its own
        if self._n >= 0:
            if b == 0:
                self._end()
            else:
                self._buf[self._n] = b
                self._n += 1
            return True
        if self.want and b == _START:
            self._n = 0
            self._t0 = time.ticks_ms()
            return True
        return False

    def _end(self):
        n = self._n
        self._n = -1
        m = self.model
        if m is not None:
            ok = n == len(m)
            i = 0
            while ok and i < n:
                ok = self._buf[i] == m[i]
                i += 1
            if ok:
                self.ans.set(m)
                return
        f = bytes(self._buf[:n])
        if m is not None:
            self.link.counts["garbage"] += 1
            self.log("printer", "answer %s to GS I 67 is not the model %s"
                     % (text(f), text(m)), level="WARN")
            if self.ans.val is m:
                return  # the model frame came already: it stays the answer
        self.ans.set(f)

    # ---- learning the model ------------------------------------------------------

    def needed(self):
        return self.model is None and self.tries < _TRIES

    async def learn(self):
        """GS I 67 twice: the model name, if both answers agree (noise cannot)."""
        self.tries += 1
        a = await self._query()
        b = await self._query() if a else None
        if a and a == b:
            self.model = a
            self.log("printer", "printer model %s: completion check by GS I 67" % text(a))
        elif self.tries >= _TRIES:
            self.log("printer", "printer does not identify itself (GS I 67): completion "
                     "check by GS r 1 only", level="WARN")

    async def _query(self):
        self.ans.expect()
        self.want = True
        try:
            if await self.link.put(REQ):
                await self.ans.wait(self.link.o["status_ms"])
        finally:
            self.want = False
        return self.ans.val

    # ---- completion proof --------------------------------------------------------

    async def ask(self):
        """After the receipt: GS I 67; True if sent (else the link said why)."""
        self._prev = None
        self.ans.expect()
        self.want = True  # stays set until the job ends (end()): a second model frame
        return await self.link.put(REQ)  # is then taken as a frame, never as status

    async def step(self, ms):
        """Wait up to ms for the answer: DONE (the model frame came), WAIT (nothing:
        look at the printer's status), AGAIN (another frame: asked again), FAIL."""
        v = await self.ans.wait(ms)
        if v is None:
            return WAIT
        if v is self.model:
            return DONE
        self.ans.expect()
        if v == self._prev:
            # The same other name twice: not noise but another printer (swapped by a
            # technician). Its answer is a completion answer all the same.
            self.model = v
            self.log("printer", "printer model now %s" % text(v), level="WARN")
            return DONE
        # A frame that was not the model name (noise got into it): ask again; the
        # printer answers once it has printed everything before.
        self._prev = v
        return AGAIN if await self.link.put(REQ) else FAIL

    def end(self):
        self.want = False


def text(b):
    try:
        return b.decode()
    except Exception:
        return repr(b)
