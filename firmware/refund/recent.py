# RAM list of the refunds accepted within the duplicate window, for the duplicate guard
# and ECR resend recognition: parallel arrays, 12 B an entry, in entry-number order. It only
# finds candidates (original RRN and amount are kept as one CRC-32); the caller confirms
# each one against the entry on flash, ECR seq included (a refund of the same sale and
# amount under another ECR seq is rare: not worth 4 B an entry of a board's heap).
from binascii import crc32
from micropython import const
from refund import zeros


_RECENT_MIN = const(300)  # completed refunds kept in RAM for the duplicate / resend checks


def recent_cap(ob_cfg):
    """Every live refund plus a day's worth of completed ones."""
    return max(_RECENT_MIN, ob_cfg["max_live"] + _RECENT_MIN)


def key(orrn, amount):
    return crc32(b"%d" % amount, crc32(orrn.encode())) & 0xFFFFFFFF


class Recent:
    def __init__(self, cap):
        self.cap = cap
        self.n = 0
        self.cut = 0  # newest `created` dropped for room while still in the window
        self.created = zeros("I", cap)
        self.key = zeros("I", cap)
        self.seq = zeros("I", cap)

    def add(self, created, amount, orrn, seq):
        """Insert in entry-number order (= intake order); a number already there is
        kept as it is (recovery may meet one refund in several places)."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.seq[mid] < seq:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.n and self.seq[lo] == seq:
            return
        if self.n == self.cap:
            if lo == 0:
                self.cut = max(self.cut, created)  # older than everything kept
                return
            self.cut = max(self.cut, self.created[0])
            self._drop(1)
            lo -= 1
        for a in (self.created, self.key, self.seq):
            for i in range(self.n, lo, -1):
                a[i] = a[i - 1]
        self.created[lo] = created
        self.key[lo] = key(orrn, amount)
        self.seq[lo] = seq
        self.n += 1

    def prune(self, since):
        k = 0
        while k < self.n and self.created[k] < since:
            k += 1
        if k:
            self._drop(k)

    def _drop(self, k):
        n = self.n - k
        for a in (self.created, self.key, self.seq):
            for i in range(n):
                a[i] = a[i + k]
        self.n = n

    def find(self, amount, orrn):
        """Entry numbers (oldest first) that may have this amount and original RRN."""
        k = key(orrn, amount)
        out = []
        for i in range(self.n):
            if self.key[i] == k:
                out.append(self.seq[i])
        return out
