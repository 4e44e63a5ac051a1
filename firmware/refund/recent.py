# RAM list of the refunds accepted within the duplicate window, for the duplicate guard
# and ECR resend recognition: parallel arrays, 6 B an entry, in entry-number order. It only
# finds candidates (original RRN and amount are kept as 16 bits of a CRC-32: with 1,100
# refunds kept one lookup in 60 reads a stranger from flash); the caller confirms
# each one against the entry on flash, ECR seq included (a refund of the same sale and
# amount under another ECR seq is rare: not worth 4 B an entry of a board's heap).
from binascii import crc32
from bisect import bisect_left
from micropython import const
from refund import zeros

_SPAN = const(65535)  # 16-bit fields: minutes since t0, entry numbers since s0
_BACK_MIN = const(44640)  # t0 = first created - 31 days (the longest duplicate window)
_REBASE_MIN = const(1440)  # a day of minutes freed when created outgrows the span


_RECENT_MIN = const(600)  # completed refunds kept in RAM for the duplicate / resend checks


def recent_cap(ob_cfg):
    """Every live refund plus a day's worth of completed ones (beyond it the checks read
    the flash: slow, and heavy on a small heap)."""
    return max(_RECENT_MIN, ob_cfg["max_live"] + _RECENT_MIN)


def key(orrn, amount):
    return crc32(b"%d" % amount, crc32(orrn.encode())) & 0xFFFF


class Recent:
    """created is kept as minutes after t0 rounded up (an entry may linger up to a minute
    past the window: the caller checks `created` on flash) and the entry number as an
    offset from s0: 16 bits each, next to a 16-bit key."""

    def __init__(self, cap):
        self.cap = cap
        self.n = 0
        self.cut = 0  # newest `created` dropped for room while still in the window
        self.t0 = -1  # UTC s, set by the first add
        self.s0 = 0
        self.top = 0  # highest entry number ever added (kept or not)
        self.mins = zeros("H", cap)
        self.key = zeros("H", cap)
        self.dseq = zeros("H", cap)

    def created(self, i):
        """Upper bound of entry i's created (UTC s)."""
        return self.t0 + self.mins[i] * 60

    def seq(self, i):
        return self.s0 + self.dseq[i]

    def _minutes(self, created):
        if self.t0 < 0:
            self.t0 = (created - _BACK_MIN * 60) // 60 * 60  # on the clock's minutes
        m = (created - self.t0 + 59) // 60
        if m > _SPAN:
            # Far past t0: move it on; what falls below 0 is older than any window.
            shift = m - _SPAN + _REBASE_MIN
            for i in range(self.n):
                self.mins[i] = max(0, self.mins[i] - shift)
            self.t0 += shift * 60
            m -= shift
        return max(0, m)  # a clock set back by over 31 days: counts as old as t0

    def _offset(self, seq, created):
        """seq - s0, moving s0 if needed; -1 if seq cannot be kept (counted in cut)."""
        if not self.n:
            self.s0 = max(0, seq - _SPAN // 2)
        d = seq - self.s0
        if d < 0:
            top = self.dseq[self.n - 1] if self.n else 0
            if top - d > _SPAN:
                self.cut = max(self.cut, created)
                return -1
            for i in range(self.n):
                self.dseq[i] -= d
            self.s0 = seq
            return 0
        if d > _SPAN:
            shift = d - _SPAN + _SPAN // 4
            k = 0
            while k < self.n and self.dseq[k] < shift:
                k += 1
            if k:
                self.cut = max(self.cut, self.created(k - 1))
                self._drop(k)
            for i in range(self.n):
                self.dseq[i] -= shift
            self.s0 += shift
            d -= shift
        return d

    def add(self, created, amount, orrn, seq):
        """Insert in entry-number order (= intake order); a number already there is
        kept as it is (recovery may meet one refund in several places)."""
        if seq > self.top:
            self.top = seq
        m = self._minutes(created)
        d = self._offset(seq, created)
        if d < 0:
            return
        a = self.dseq
        lo = bisect_left(a, d, 0, self.n)
        if lo < self.n and a[lo] == d:
            return
        if self.n == self.cap:
            if lo == 0:
                self.cut = max(self.cut, created)  # older than everything kept
                return
            self.cut = max(self.cut, self.created(0))
            self._drop(1)
            lo -= 1
        for arr in (self.mins, self.key, self.dseq):
            for i in range(self.n, lo, -1):
                arr[i] = arr[i - 1]
        self.mins[lo] = m
        self.key[lo] = key(orrn, amount)
        self.dseq[lo] = d
        self.n += 1

    def prune(self, since):
        k = 0
        while k < self.n and self.created(k) < since:
            k += 1
        if k:
            self._drop(k)

    def _drop(self, k):
        n = self.n - k
        for arr in (self.mins, self.key, self.dseq):
            for i in range(n):
                arr[i] = arr[i + k]
        self.n = n

    def find(self, amount, orrn):
        """Entry numbers (oldest first) that may have this amount and original RRN."""
        k = key(orrn, amount)
        out = []
        for i in range(self.n):
            if self.key[i] == k:
                out.append(self.s0 + self.dseq[i])
        return out
