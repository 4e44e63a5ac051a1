# RAM list of the refunds accepted within the duplicate window, for the duplicate guard
# and ECR resend recognition: parallel arrays, 20 B an entry, in entry-number order. It only
# finds candidates (the original RRN is kept as a CRC-32); the caller confirms each one
# against the entry on flash.
from array import array
from binascii import crc32


def key(orrn):
    return crc32(orrn.encode()) & 0xFFFFFFFF


class Recent:
    def __init__(self, cap):
        self.cap = cap
        self.n = 0
        self.cut = 0  # newest `created` dropped for room while still in the window
        self.created = array("I", bytes(4 * cap))
        self.amount = array("I", bytes(4 * cap))  # low 32 bits: candidates only
        self.key = array("I", bytes(4 * cap))
        self.ecr = array("I", bytes(4 * cap))  # ECR seq, 0 if none
        self.seq = array("I", bytes(4 * cap))

    def add(self, created, amount, orrn, ecr, seq):
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
        for a in (self.created, self.amount, self.key, self.ecr, self.seq):
            for i in range(self.n, lo, -1):
                a[i] = a[i - 1]
        self.created[lo] = created
        self.amount[lo] = amount & 0xFFFFFFFF
        self.key[lo] = key(orrn)
        self.ecr[lo] = ecr
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
        for a in (self.created, self.amount, self.key, self.ecr, self.seq):
            for i in range(n):
                a[i] = a[i + k]
        self.n = n

    def find(self, amount, orrn, ecr=0):
        """Entry numbers (oldest first) with this amount and original RRN (and ECR seq
        when ecr is not 0)."""
        k = key(orrn)
        amount &= 0xFFFFFFFF
        out = []
        for i in range(self.n):
            if self.key[i] == k and self.amount[i] == amount and (not ecr or self.ecr[i] == ecr):
                out.append(self.seq[i])
        return out
