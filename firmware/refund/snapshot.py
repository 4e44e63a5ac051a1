# The outbox snapshot `snap`: a head frame (counters, rid generation, history
# counters), then the latest frame of every live entry as of version `base`
# (docs/outbox-format.md). Loaded into the RAM index at recovery; written by
# compaction to snap.tmp and renamed over snap (atomic).
import os
from refund import record as R
from refund.journal import IN_J


def load(j, ix, bt):
    """Read snap into the index ix and the batch totals into bt (refund.batch); its head
    dict, or None if there is none (or its head is damaged: the journal's records are
    then all there is)."""
    try:
        f = open(j.snap, "rb")
    except OSError:
        return None
    with f:
        try:
            typ, p = j.frame(f)
            if typ != R.T_HEAD:
                raise R.Corrupt("no head")
            h = R.parse_head(p)
            bt.load_head(h)
        except (R.Corrupt, ValueError, IndexError) as e:
            j.damage("snapshot head: %s" % e)
            return None
        n = 0
        for off, typ, p in j.frames(f, f.tell(), "snapshot"):
            try:
                if typ == R.T_TOTAL:  # written before the entries
                    bt.load_total(p)
                    continue
                ver, seq, state, flags, amt = R.entry_head(p)
                ix.upsert(seq, state, flags, amt, ver, off)
                n += 1
            except (R.Corrupt, ValueError) as e:
                j.damage("snapshot record at %d: %s" % (off, e))
            if n == h["count"]:
                break
    return h


def write(j, ix, h, bt):
    """Write head h, the batch totals of bt and every live entry of ix to snap.tmp and
    rename it over snap.
    Returns an array of the new offsets, parallel to the index (-1 for tombstones)."""
    h["count"] = ix.live
    n = ix.n
    locs = ix.tmp  # preallocated: 2 KB made here mid-drain failed on a fragmented heap
    tmp = j.root + "/snap.tmp"
    old = None  # the current snapshot, opened once and read forward (offsets ascend)
    try:
        with open(tmp, "wb") as f:
            bt.save_head(h)
            f.write(R.head(h))
            for fr in bt.frames():
                f.write(fr)
            for i in range(n):
                if not ix.state[i]:
                    continue
                if ix.loc[i] == IN_J:
                    j.read(ix.ver[i])
                else:
                    if old is None:
                        old = open(j.snap, "rb")
                    old.seek(ix.loc[i])
                    j.frame(old)
                # The latest frame, CRC checked, copied as it is: no parse, no encode.
                locs[i] = f.tell()
                f.write(j.last())
    finally:
        if old is not None:
            old.close()
    os.rename(tmp, j.snap)
    return locs
