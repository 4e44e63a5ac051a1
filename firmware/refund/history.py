# The outbox's history file `hist`: entry frames of completed refunds (for explain,
# QUERY and REPRINT), appended at compaction in completion order and trimmed to the
# retention window (keep_n entries, keep_s seconds; docs/outbox-format.md, Compaction).
# Read frame by frame: RAM stays at one frame whatever its length.
import os
from refund import record as R


class History:
    def __init__(self, journal, clock, cfg):
        """journal: the outbox's Journal (its frame reader and buffer); cfg: the outbox
        settings (keep_n, keep_s)."""
        self.j = journal
        self.path = journal.root + "/hist"
        self.clock = clock
        self.cfg = cfg
        # What the last trim had to keep (entries of batches not closed stay) and when:
        # without them an unsettled batch bigger than keep_n would rewrite the history
        # at every compaction. RAM only: after a boot the first compaction may trim again.
        self._floor = 0
        self._trimmed = 0

    def settled(self):
        """A batch closed: what the last trim had to keep may go at the next compaction."""
        self._floor = self._trimmed = 0

    def entries(self):
        """Completed entries (oldest first), read from flash one at a time."""
        try:
            f = open(self.path, "rb")
        except OSError:
            return
        with f:
            for _off, typ, p in self.j.frames(f, 0, "history"):
                if typ == R.T_ENTRY:
                    e = R.parse_entry(p)
                    e["rid"] = R.rid_of(e["gen"], e["seq"])
                    yield e

    def find(self, seq):
        """seq's latest record in the history (a cut compaction may repeat one), or None."""
        best = None
        for e in self.entries():
            if e["seq"] == seq and (best is None or e["ver"] > best["ver"]):
                best = e
        return best

    def add(self, lo, hi, h, ix):
        """Compaction steps 1 and 2: append the completed entries among journal records
        lo..hi not yet in the history (ver above h["hist_ver"]), one close() (atomic),
        then trim if due. Updates the head counters in h. ix: the outbox's index, whose
        tombstones name the latest record of each entry completed since compaction."""
        j = self.j
        n_done = 0
        # Every littlefs open walks the path's directories again (~16 KB read a record,
        # docs/benchmarks.md): open only the completed entries' latest records, named by
        # the index's tombstones, not every record lo..hi. Their versions, ascending
        # (completion order), go to ix.tmp (free until the snapshot fills it): insertion
        # sort in place, ~linear as seq order is nearly completion order.
        t = ix.tmp
        k = 0
        for i in range(ix.n):
            v = ix.ver[i]
            if not ix.state[i] and lo <= v <= hi:
                m = k
                while m and t[m - 1] > v:
                    t[m] = t[m - 1]
                    m -= 1
                t[m] = v
                k += 1
        with open(self.path, "ab") as hist:
            for i in range(k):
                v = t[i]
                try:
                    typ, p = j.read(v)
                    if typ == R.T_ENTRY:
                        ver, _seq, state, flags, _a = R.entry_head(p)
                        if R.complete(state, flags) and ver > h["hist_ver"]:
                            hist.write(j.last())
                            n_done += 1
                except (R.Corrupt, OSError, ValueError):
                    pass
        if n_done:
            h["hist_count"] += n_done
            h["hist_ver"] = hi
            if not h["hist_oldest"]:
                h["hist_oldest"] = self.clock()
        c = self.cfg
        most = max(c["keep_n"], self._floor)
        now = self.clock()
        if h["hist_count"] > most + most // 4 or (h["hist_oldest"] and now - h["hist_oldest"] > c["keep_s"] + 86400
                                                  and (not self._trimmed or now - self._trimmed > 86400)):
            self._trim(h)
            self._floor = h["hist_count"]
            self._trimmed = now

    def _trim(self, h):
        """Keep the keep_n most recently completed entries (the file is in completion
        order) updated within keep_s. Two streaming passes, O(1) RAM: sorting the
        history by seq took ~13 B an entry (16 KB at the default keep_n), more than a
        96 KiB board has free once its queue is full."""
        c = self.cfg
        cutoff = self.clock() - c["keep_s"]
        m = 0
        for _e in self.entries():
            m += 1
        skip = m - c["keep_n"]
        kept = oldest = 0
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            for e in self.entries():
                skip -= 1
                # An entry of a batch not yet closed stays whatever the limits say.
                if (skip < 0 and e["updated"] >= cutoff) or \
                        (e["batch"] and (e["batch"] == h["batch_open"] or e["batch"] == h["batch_cut"])):
                    f.write(R.entry(e))
                    kept += 1
                    if not oldest or e["updated"] < oldest:
                        oldest = e["updated"]
        os.rename(tmp, self.path)
        h["hist_count"] = kept
        h["hist_oldest"] = oldest
