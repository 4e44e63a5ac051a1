# Test driver: config + staff + outbox + Intake on the virtual board's littlefs flash,
# behind the ECR framing. argv[1]: a JSON file (long argv strings crash this port):
#   {"config": PATH, "outbox": {...}, "clock_offset": s,
#    "batch": [request dict | {"_advance": s} | {"_raw": HEX} | {"_cancel_all": 1}, ...]}
#      every request is framed, parsed by ecr.Parser and answered by ecr.answer;
#      prints "REPLY <json>" per step (null when dropped), then "STATS <json>"
#      "_approve"/"_complete": seq -> approved / printed; "_compact": outbox compaction;
#      "_heap_out": "before"|"after": the next Outbox.accept raises MemoryError (after its write)
#   or {"serve": PORT, "die_after": N}: TCP server, one ecr.serve per connection;
#      prints "LISTENING"; "die_after": power cut (SIGKILL) right after the N-th refund
#      is durably queued, before its reply is written.
import sys
import os
import json
import asyncio
import board
from refund import config, ecr, record as R
from refund.outbox import Outbox
from refund.staff import Staff
from refund.intake import Intake

with open(sys.argv[1]) as f:
    T = json.load(f)

LOGS = T.get("log_all")


def log(tag, msg, level="INFO", ev=True):
    if LOGS or level != "INFO":
        print("LOG", level, tag, msg)


clock = [T.get("clock_offset", 0)]


def now():
    return board.now() + clock[0]


board.mount_flash(log)
cfg = config.load(T["config"], board.DEFAULTS)
ob_cfg = dict(cfg["limits"])
ob_cfg.update(T.get("outbox", {}))
ob = Outbox("/flash/ob", now, log, ob_cfg)
ob.recover()
staff = Staff(cfg, "/flash/staff.lock", log, now)
intake = Intake(ob, staff, cfg, log, now, T.get("recent_max"))


async def batch(steps):
    p = ecr.Parser()
    stats = {}
    for st in steps:
        if "_advance" in st:
            clock[0] += st["_advance"]
            continue
        if "_cancel_all" in st:
            for rid in [ob.rid(s) for s in ob.seqs(None)]:  # a list: cancel changes the index
                ob.cancel(rid)
            continue
        if "_approve" in st:
            rid = ob.rid(st["_approve"])
            ob.mark_sent(rid)
            ob.approve(rid, "RRN000000001", "AUTH01")
            continue
        if "_complete" in st:  # sent, approved, receipt printed: a completed refund
            rid = ob.rid(st["_complete"])
            ob.mark_sent(rid)
            ob.approve(rid, "RRN000000002", "AUTH02")
            ob.print_begun(rid)
            ob.printed(rid)
            continue
        if "_compact" in st:
            ob.compact()
            continue
        if "_heap_out" in st:  # the next accept runs out of heap "before" / "after" its write
            real = ob.accept

            def once(*a, _when=st["_heap_out"], **k):
                ob.accept = real
                if _when == "after":
                    real(*a, **k)
                raise MemoryError("memory allocation failed, allocating 64 bytes")

            ob.accept = once
            continue
        raw = bytes.fromhex(st["_raw"]) if "_raw" in st else ecr.frame(ecr.encode(st))
        out = []
        for payload in p.feed(raw):
            r = await ecr.answer(payload, intake.handle, log, stats)
            if r is not None:
                for rp in ecr.Parser().feed(r):
                    d, err = ecr.decode(rp)
                    out.append(d)
        print("REPLY " + json.dumps(out[0] if len(out) == 1 else (out or None)))
    stats["parser"] = p.stats
    stats["intake"] = intake.stats
    print("STATS " + json.dumps(stats))


async def serve(port, die_after):
    n = [0]

    def handler(req):
        rep = intake.handle(req)
        if rep.get("state") == "queued" and not rep.get("resend"):
            n[0] += 1
            if die_after and n[0] >= die_after:
                print("POWER CUT after", rep["rid"])
                os.system("kill -9 $PPID")  # SIGKILL this interpreter: no reply, no cleanup
        return rep

    async def conn(r, w):
        await ecr.serve(r, handler, log, writer=w, stop_on_eof=True)
        w.close()

    await asyncio.start_server(conn, "127.0.0.1", port)
    print("LISTENING", port)
    while True:
        await asyncio.sleep_ms(1000)


if "serve" in T:
    asyncio.run(serve(T["serve"], T.get("die_after", 0)))
else:
    asyncio.run(batch(T["batch"]))
