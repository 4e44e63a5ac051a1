# Outbox figures on the virtual board's block device (MicroPython). Prints one JSON line.
#   bench_outbox.py flash N K      bytes/erases per lifecycle at N live, ours vs naive
#   bench_outbox.py boot           mount + recover time of the image in REFUND_FLASH
#   bench_outbox.py fill N [nocompact]   write N journal records (lifecycles of 5 records)
#   bench_outbox.py mem N          heap in use after gc.collect() with N live entries
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


def fill(n, compact):
    board.mount_flash(quiet)
    cfg = {"max_live": 5000}
    if not compact:
        cfg["compact_min"] = cfg["compact_max"] = 100000
    ob = Outbox("/flash/ob", board.now, quiet, cfg)
    ob.recover()
    i = 0
    while ob.ver < n:
        lifecycle(ob, i)
        i += 1
    return {"records": ob.ver, "journal_files": ob.ver - ob.head["base"], "live": ob.live}


def boot():
    t0 = time.ticks_us()
    board.mount_flash(quiet)
    ob = Outbox("/flash/ob", board.now, quiet)
    r = ob.recover()
    return {"boot_us": time.ticks_diff(time.ticks_us(), t0), "recovered": r}


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
    out = fill(int(sys.argv[2]), len(sys.argv) < 4)
elif cmd == "boot":
    out = boot()
else:
    out = mem(int(sys.argv[2]))
print(json.dumps(out))
