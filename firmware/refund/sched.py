# The sender's retry schedule: for each live entry that has failed at least once, when
# to try again, how many attempts so far, and whether its last request timed out
# (suspect). Parallel arrays sorted by entry number, sized once for the outbox's
# max_live: 10 B an entry, where a dict of lists cost ~50 B (32-bit) and fragmented a
# small heap during an outage with every refund retrying.
from bisect import bisect_left

from refund import zeros


class Sched:
    def __init__(self, cap):
        self.cap = cap
        self.n = 0
        self.seq = zeros("I", cap)
        self.due = zeros("i", cap)  # ticks_ms of the next attempt
        self.att = bytearray(cap)  # attempts that failed (saturates at 255)
        self.sus = bytearray(cap)  # 1: the last request timed out with the link up

    def find(self, seq):
        return bisect_left(self.seq, seq, 0, self.n)

    def index(self, seq):
        i = self.find(seq)
        return i if i < self.n and self.seq[i] == seq else -1

    def add(self, seq):
        """Slot of seq, inserted (attempts 0) if missing; -1 if the table is full."""
        i = self.find(seq)
        if i < self.n and self.seq[i] == seq:
            return i
        if self.n >= self.cap:
            return -1
        for a in (self.seq, self.due, self.att, self.sus):
            for k in range(self.n, i, -1):
                a[k] = a[k - 1]
        self.seq[i] = seq
        self.due[i] = 0
        self.att[i] = 0
        self.sus[i] = 0
        self.n += 1
        return i

    def attempts(self, seq):
        i = self.index(seq)
        return self.att[i] if i >= 0 else 0

    def remove(self, seq):
        i = self.index(seq)
        if i >= 0:
            self._drop(i)

    def _drop(self, i):
        n = self.n - 1
        for a in (self.seq, self.due, self.att, self.sus):
            for k in range(i, n):
                a[k] = a[k + 1]
        self.n = n

    def keep(self, alive):
        """Drop the entries for which alive(seq) is false (they left the queue)."""
        i = 0
        while i < self.n:
            if alive(self.seq[i]):
                i += 1
            else:
                self._drop(i)

    def all_due(self, now):
        for i in range(self.n):
            self.due[i] = now

    def clear_suspects(self):
        for i in range(self.n):
            self.sus[i] = 0

    def suspect(self, seq):
        i = self.index(seq)
        return i >= 0 and self.sus[i] == 1

    def set_suspect(self, seq, v):
        i = self.add(seq) if v else self.index(seq)
        if i >= 0:
            self.sus[i] = 1 if v else 0
