# RAM index of the outbox's live entries: parallel arrays sorted by entry number,
# 22 B an entry, made for max_live at boot. Capacity grows in chunks, and always *before* any element changes,
# so a MemoryError (likely on a fragmented board heap) never leaves it half-updated.
from array import array
from bisect import bisect_left
from micropython import const
from refund import record as R
from refund import zeros

_CHUNK = const(64)


class Index:
    def __init__(self, cap=0):
        """cap: slots allocated now (the outbox's max_live: the long-lived arrays are then
        made once, at boot, before recovery fragments the heap)."""
        self.n = 0  # slots in use (live entries + tombstones of completed ones)
        self.live = 0
        self.pending = 0  # amount of queued + cancelling entries
        self.seq = array("I")
        self.state = bytearray()  # 0 = tombstone: completed since the last compaction
        self.flags = bytearray()
        self.amt = array("i")
        self.ver = array("I")  # version of the latest record
        self.loc = array("i")  # offset in snap, or -1: the latest record is journal file <ver>
        self.tmp = array("i")  # compaction's new offsets: made with the rest, never mid-drain
        self.reserve(cap)

    def clear(self):
        """Empty, keeping the arrays (recovery runs again)."""
        self.n = self.live = self.pending = 0

    def reserve(self, need):
        cap = len(self.seq)
        if need <= cap:
            return
        cap = max(need, cap + max(_CHUNK, cap // 4))
        # Allocate everything first; only then swap (nothing changes if this raises).
        # amounts fit 32 bits: config caps limits.max_amount below 2**31
        new = (zeros("I", cap), bytearray(cap), bytearray(cap), zeros("i", cap), zeros("I", cap),
               zeros("i", cap), zeros("i", cap))
        n = self.n
        for dst, src in zip(new, (self.seq, self.state, self.flags, self.amt, self.ver, self.loc)):
            for i in range(n):
                dst[i] = src[i]
        self.seq, self.state, self.flags, self.amt, self.ver, self.loc, self.tmp = new

    def find(self, seq):
        return bisect_left(self.seq, seq, 0, self.n)

    def idx(self, seq):
        """Slot of live entry seq, or -1."""
        if seq is None:
            return -1
        i = self.find(seq)
        if i < self.n and self.seq[i] == seq and self.state[i]:
            return i
        return -1

    def upsert(self, seq, state, flags, amt, ver, loc):
        i = self.find(seq)
        if i < self.n and self.seq[i] == seq:
            if ver <= self.ver[i]:
                return
            self._account(i, -1)
        else:
            # A completed entry never seen live (recovery: its earlier records damaged)
            # still gets a tombstone: compaction moves the records tombstones name.
            self.reserve(self.n + 1)
            for j in range(self.n, i, -1):  # open slot i (only recovery inserts mid-way)
                self.seq[j] = self.seq[j - 1]
                self.state[j] = self.state[j - 1]
                self.flags[j] = self.flags[j - 1]
                self.amt[j] = self.amt[j - 1]
                self.ver[j] = self.ver[j - 1]
                self.loc[j] = self.loc[j - 1]
            self.n += 1
            self.seq[i] = seq
            self.state[i] = 0
        self.state[i] = 0 if R.complete(state, flags) else state
        self.flags[i] = flags
        self.amt[i] = amt
        self.ver[i] = ver
        self.loc[i] = loc
        self._account(i, 1)

    def _account(self, i, sign):
        s = self.state[i]
        if s:
            self.live += sign
            if s == R.QUEUED or s == R.CANCELLING:
                self.pending += sign * self.amt[i]

    def squeeze(self, locs):
        """Drop tombstones in place after a compaction; locs[i] = new offset of slot i."""
        k = 0
        for i in range(self.n):
            if self.state[i]:
                self.seq[k] = self.seq[i]
                self.state[k] = self.state[i]
                self.flags[k] = self.flags[i]
                self.amt[k] = self.amt[i]
                self.ver[k] = self.ver[i]
                self.loc[k] = locs[i]
                k += 1
        self.n = k
