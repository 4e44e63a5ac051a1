# Outbox figures on the virtual board's block device (MicroPython). Prints one JSON line.
#   bench_outbox.py flash N K      bytes/erases per lifecycle at N live, ours vs naive
#   bench_outbox.py boot           mount + recover time of the image in REFUND_FLASH
#   bench_outbox.py fill N [nocompact] [live=L]   L live (queued) entries, then journal records
#                  (lifecycles of 5 records) until N records have been written
#   bench_outbox.py boot [max_live]     (max_live for images with more than the default live)
#   bench_outbox.py compact N J   compaction with N live and J journal records: time, bytes read
#   bench_outbox.py mem N          heap in use after gc.collect() with N live entries
import os
import sys
import gc
import json
import time
import board
from refund.outbox import Outbox

quiet = lambda *a, **k: None


def lifecycle(ob, i):
    r = ob.accept(1000 + i, 156, "ORIG%08d" % i, "01")["rid"]
    ob.mark_sent(r)
    ob.approve(r, "RRN%09d" % i, "AUTH01")
    ob.print_begun(r)
    ob.printed(r)


def naive_lifecycle(nb, i):
    r = nb.intake(1000 + i, 156, "ORIG%08d" % i, "01")
    nb.change(r, "queued", flags=1)
    nb.change(r, "approved", rrn="RRN%09d" % i, auth="AUTH01")
    nb.change(r, "approved", flags=3)
    nb.change(r, "printed")


def flash(n, k, kind):
    board.mount_flash(quiet)
    dev = board.flash_dev()
    if kind == "ours":
        ob = Outbox("/flash/ob", board.now, quiet, {"max_live": 2000})
        ob.recover()
        for i in range(n):
            ob.mark_sent(ob.accept(500 + i, 156, "PREF%08d" % i, "01")["rid"])
        step = lambda i: lifecycle(ob, n + i)
    else:
        from naive_outbox import NaiveOutbox

        nb = NaiveOutbox("/flash/naive.json")
        for i in range(n):
            nb.change(nb.intake(500 + i, 156, "PREF%08d" % i, "01"), "queued", flags=1)
        step = lambda i: naive_lifecycle(nb, n + i)
    p0, e0 = dev.pbytes, dev.erases
    for i in range(k):
        step(i)
    return {"live": n, "kind": kind, "lifecycles": k,
            "bytes_per_lifecycle": (dev.pbytes - p0) // k,
            "erases_per_lifecycle": (dev.erases - e0) / k}


def fill(n, compact, live=0):
    board.mount_flash(quiet)
    cfg = {"max_live": 5000, "max_pending": 10 ** 12}
    if not compact:
        cfg["compact_min"] = cfg["compact_max"] = 100000
    ob = Outbox("/flash/ob", board.now, quiet, cfg)
    ob.recover()
    for i in range(live):
        ob.mark_sent(ob.accept(500 + i, 156, "PREF%08d" % i, "01")["rid"])
    i = live
    while ob.ver < n:
        lifecycle(ob, i)
        i += 1
    return {"records": ob.ver, "journal_files": ob.ver - ob.head["base"], "live": ob.live}


def boot(max_live=0):
    t0 = time.ticks_us()
    board.mount_flash(quiet)
    ob = Outbox("/flash/ob", board.now, quiet, {"max_live": max_live} if max_live else None)
    r = ob.recover()
    return {"boot_us": time.ticks_diff(time.ticks_us(), t0), "recovered": r}


def _counts(dev):
    return (time.ticks_us(), dev.rbytes, dev.reads, dev.pbytes, dev.erases)


def _delta(a, b):
    return {"us": time.ticks_diff(b[0], a[0]), "bytes_read": b[1] - a[1], "reads": b[2] - a[2],
            "bytes_programmed": b[3] - a[3], "erases": b[4] - a[4]}


def _sizes(ob):
    js = 0
    for v in range(ob.head["base"] + 1, ob.ver + 1):
        js += os.stat(ob.j.path(v))[6]
    return {"snap": os.stat(ob.j.snap)[6], "journal_files": ob.ver - ob.head["base"], "journal_bytes": js,
            "hist": os.stat(ob.hist.path)[6] if _exists(ob.hist.path) else 0}


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _nth(s, ch, k):
    i = -1
    for _ in range(k):
        i = s.index(ch, i + 1)
    return i


def compact_cost(n, jn):
    # n live queued entries in the snapshot, then jn journal records of lifecycles (the
    # state in which maybe_compact fires with n live: journal = max(64, n // 2) files).
    from refund import snapshot

    board.mount_flash(quiet)
    dev = board.flash_dev()
    ob = Outbox("/flash/ob", board.now, quiet, {"max_live": 2000, "max_pending": 10 ** 12,
                                                   "compact_min": 100000, "compact_max": 100000})
    ob.recover()
    for i in range(n):
        ob.mark_sent(ob.accept(500 + i, 156, "PREF%08d" % i, "01")["rid"])
    ob.compact()
    out = {"live": n}
    k = [n]

    def journal():
        while ob.ver - ob.head["base"] < jn:
            lifecycle(ob, k[0])
            k[0] += 1

    journal()
    out["before"] = _sizes(ob)
    # One compaction whole, as the outbox runs it.
    a = _counts(dev)
    h0 = ob.head["hist_count"]
    ob.compact()
    out["total"] = _delta(a, _counts(dev))
    out["moved"] = ob.head["hist_count"] - h0  # completed entries: the records hist.add opens
    # The same state again, the steps of Outbox.compact() one by one.
    journal()
    out["before2"] = _sizes(ob)
    h = dict(ob.head)
    ob.bt.save_head(h)  # as Outbox.compact: the history keeps entries of batches not closed
    old_base = h["base"]
    steps = []
    a = _counts(dev)
    ob.hist.add(old_base + 1, ob.ver, h, ob.ix)
    b = _counts(dev)
    steps.append(("hist.add: open the completed entries' latest records of journal %d..%d, append them" % (old_base + 1, ob.ver), _delta(a, b)))
    h["base"] = ob.ver
    h["seq_limit"] = ob.seq_limit
    h["stan_limit"] = ob.stan_limit
    locs = snapshot.write(ob.j, ob.ix, h, ob.bt)
    c = _counts(dev)
    steps.append(("snapshot.write: every live entry to snap.tmp, rename", _delta(b, c)))
    ob.head = h
    for v in range(old_base + 1, h["base"] + 1):
        ob.j.drop(v)
    d = _counts(dev)
    steps.append(("journal.drop of each compacted record", _delta(c, d)))
    ob.j.rmdirs(old_base + 1, h["base"])
    ob.ix.squeeze(locs)
    e = _counts(dev)
    steps.append(("rmdirs (newest first) + index squeeze", _delta(d, e)))
    out["steps"] = steps
    # Unit costs: one journal record read, one snapshot frame read at its offset.
    lifecycle(ob, k[0])
    a = _counts(dev)
    ob.j.read(ob.ver)
    out["one_journal_read"] = _delta(a, _counts(dev))
    a = _counts(dev)
    with open(ob.j.snap, "rb") as f:
        f.seek(out["before"]["snap"] // 2)
        f.read(60)
    out["one_snap_seek_read"] = _delta(a, _counts(dev))
    # os.stat of each prefix of that record's path: what one path walk costs per level.
    p = ob.j.path(ob.ver)
    walk = []
    for k in range(2, p.count("/") + 1):
        q = p if k == p.count("/") else p[:_nth(p, "/", k + 1)]
        a = _counts(dev)
        os.stat(q)
        walk.append((q, _delta(a, _counts(dev))))
    out["stat_walk"] = walk
    out["after"] = _sizes(ob)
    out["lfs"] = board.LFS
    return out


def mem(n):
    board.mount_flash(quiet)
    ob = Outbox("/flash/ob", board.now, quiet, {"max_live": 2000})
    ob.recover()
    for i in range(n):
        ob.accept(100 + i, 156, "ORIG%08d" % i, "01")
    ob.compact()
    # A fresh boot holds only what recovery rebuilds: measure that.
    ob = None
    gc.collect()
    base = gc.mem_alloc()
    ob = Outbox("/flash/ob", board.now, quiet)
    ob.recover()
    gc.collect()
    return {"live": ob.live, "heap_in_use": gc.mem_alloc() - base}


cmd = sys.argv[1]
if cmd == "flash":
    out = flash(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
elif cmd == "fill":
    opts = sys.argv[3:]
    live = [int(o[5:]) for o in opts if o.startswith("live=")]
    out = fill(int(sys.argv[2]), "nocompact" not in opts, live[0] if live else 0)
elif cmd == "boot":
    out = boot(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
elif cmd == "compact":
    out = compact_cost(int(sys.argv[2]), int(sys.argv[3]))
else:
    out = mem(int(sys.argv[2]))
print(json.dumps(out))
