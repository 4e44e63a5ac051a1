# Runs the printer driver (refund.printer) on MicroPython on the virtual board: the
# outbox on the board's littlefs flash, the printer on board.uart('printer')
# (REFUND_PRINTER), until every approved refund is printed and every decline slip is
# out, or a deadline. Started by host_tools/printrun.py.
#
# argv[1]: JSON file (argv strings >= 255 chars crash this interpreter):
#   cfg        terminal config for the receipts
#   opts       Printer settings (refund.printer.DEFAULTS)
#   baud       line rate the driver paces to (115200)
#   n          refunds to take in (0: use what the flash holds, e.g. after a power cut)
#   approve    indexes (0-based, of this run's refunds) approved, in this order
#   decline    [[index, code], ...] declined by the host
#   sent       indexes only marked sent (stay queued: never a receipt)
#   amount     first amount (minor units), +1 per refund; currency (156)
#   gen        fixed rid generation for a new outbox (golden tests); clock: fixed UTC s
#   reprint    indexes to reprint (staff) once the queue is done; report: queue report
#   host_down  the sender's view of the host is "down" (pending notices at once)
#   damage     indexes whose intake record is overwritten on flash (CRC fails: the
#              outbox cannot read that entry any more)
#   notices    also wait until this many pending notices are printed
#   deadline_ms, verbose
# Prints "BOOT <rid> <state> <flags>" per live entry before the driver starts, "LOG ..."
# lines, then "RESULT {json}" (entries, printer status, elapsed).
import os
import sys
import json
import time
import asyncio
import board
from refund.outbox import Outbox
from refund.printer import Printer
from refund import record as R

with open(sys.argv[1]) as f:
    cfg = json.load(f)


def log(tag, msg, level="INFO", ev=True):
    if level != "INFO" or cfg.get("verbose") or tag == "printer":
        print("LOG %d %s %s: %s" % (time.ticks_ms(), level, tag, msg))


board.mount_flash(log)
clock = board.now
if cfg.get("clock"):
    fixed = cfg["clock"]

    def clock():
        return fixed

if cfg.get("gen"):
    Outbox._new_gen = lambda self: cfg["gen"]  # deterministic rids for golden receipts
ob = Outbox("/flash/ob", clock, log)
ob.recover()
for seq in range(1, ob.next_seq):
    st = ob.state(ob.rid(seq))
    if st:
        e = ob.get(ob.rid(seq))
        print("BOOT", e["rid"], e["state_name"], e["flags"])


def jfiles():
    # The journal's record files (docs/outbox-format.md: FLASH/ob/j/GGGGGGG/NNNNNNNN).
    out = []
    for d in os.listdir("/flash/ob/j"):
        for f in os.listdir("/flash/ob/j/" + d):
            out.append("/flash/ob/j/%s/%s" % (d, f))
    return out


rids = []
for i in range(cfg.get("n", 0)):
    before = jfiles() if i in cfg.get("damage", []) else None
    e = ob.accept(cfg.get("amount", 1234) + i, cfg.get("currency", 156), "ORIG%08d" % i,
                  "%02d" % (i % 100))
    rids.append(e["rid"])
    if before is not None:
        for path in jfiles():
            if path not in before:
                n = os.stat(path)[6]
                with open(path, "wb") as f:
                    f.write(b"\xa5" * n)
for i in cfg.get("sent", []):
    ob.mark_sent(rids[i])
for i in cfg.get("approve", []):
    ob.mark_sent(rids[i])
    seq = ob.seq_of(rids[i])
    ob.approve(rids[i], "%012d" % (500000000000 + seq), "A%05d" % seq)
for i, code in cfg.get("decline", []):
    ob.mark_sent(rids[i])
    ob.decline(rids[i], code)

uart = board.uart("printer")
p = Printer(uart, ob, cfg.get("cfg", {}), log, clock, cfg.get("baud", 115200), cfg.get("opts"))
ob.on_change = p.wake
if cfg.get("host_down"):
    p.host_up = lambda: False


def owed():
    for st in (R.APPROVED, R.DECLINED):
        for _ in ob.seqs(st):
            return True
    return False


async def main():
    t0 = time.ticks_ms()
    task = asyncio.create_task(p.run())
    deadline = cfg.get("deadline_ms", 30000)
    while (owed() or p.counts["notices"] < cfg.get("notices", 0)) and \
            time.ticks_diff(time.ticks_ms(), t0) < deadline:
        await asyncio.sleep_ms(20)
    extra = []
    for i in cfg.get("reprint", []):
        extra.append(await p.reprint(rids[i]))
    if cfg.get("report"):
        extra.append(await p.queue_report())
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    task.cancel()
    await asyncio.sleep_ms(0)
    entries = []
    for seq in range(1, ob.next_seq):
        try:
            e = ob.get(ob.rid(seq))
        except Exception as ex:  # damaged on purpose
            print("UNREADABLE", ob.rid(seq), repr(ex))
            continue
        if e:
            entries.append({"rid": e["rid"], "seq": seq, "state": e["state_name"],
                            "flags": e["flags"], "aver": e["aver"], "code": e["code"],
                            "i": rids.index(e["rid"]) if e["rid"] in rids else -1})
    print("RESULT " + json.dumps({"elapsed_ms": elapsed, "status": p.status(), "gen": ob.gen,
                                  "entries": entries, "extra": extra, "rids": rids}))


asyncio.run(main())
