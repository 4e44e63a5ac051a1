# Printer-status fuzz runner (tests/test_fuzz_printer.py): the outbox on the board's
# littlefs flash and the printer driver (refund.printer) on board.uart('printer'), with
# refunds approved at start and every add_ms until the file cfg["switch"] exists; then a
# SNAP line per entry, the driver's timings become cfg["after"], and the run goes on until nothing is owed or the deadline.
# Lines: LOG (WARN/ERROR), DIED (the printer task ended), PRINTED (an entry became
# printed before the switch), SNAP, E, RESULT.
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


loud = [False]  # after the switch WARNs too: the emulator's line has no reason to fail


def log(tag, msg, level="INFO", ev=True):
    if level == "ERROR" or (loud[0] and level == "WARN"):
        print("LOG", level, tag, msg)


from refund.journal import exists  # noqa: E402

board.mount_flash(log)
ob = Outbox("/flash/ob", board.now, log)
ob.recover()
made = 0


def add():
    global made
    e = ob.accept(1000 + made, 156, "PFUZ%08d" % made, "01")
    ob.mark_sent(e["rid"])
    seq = ob.seq_of(e["rid"])
    ob.approve(e["rid"], "%012d" % (500000000000 + seq), "A%05d" % seq)
    made += 1


for i in range(cfg["n"]):
    add()
uart = board.uart("printer")
p = Printer(uart, ob, cfg["cfg"], log, board.now, cfg["baud"], cfg["opts"])
ob.on_change = p.wake


def entries(tag):
    for seq in range(1, ob.next_seq):
        e = ob.get(ob.rid(seq))
        if e:
            print(tag, e["rid"], e["state_name"], e["flags"], e["aver"])


def owed():
    for _ in ob.seqs(R.APPROVED):
        return True
    return False


async def main():
    t0 = time.ticks_ms()
    task = asyncio.create_task(p.run())
    last_add = t0
    switched = False
    while True:
        now = time.ticks_ms()
        if task.done():
            try:
                await task
                print("DIED printer task returned")
            except Exception as e:
                print("DIED", repr(e))
            break
        if not switched:
            for _ in ob.seqs(R.PRINTED):
                entries("PRINTED")
                break
            if exists(cfg["switch"]):
                switched = True
                loud[0] = True
                p.o.update(cfg["after"])  # the settings dict the driver and its link share
                entries("SNAP")
                print("SNAPPED", made, json.dumps(p.status()))
            elif time.ticks_diff(now, last_add) >= cfg["add_ms"]:
                last_add = now
                add()
        elif not owed() or time.ticks_diff(now, t0) > cfg["deadline_ms"]:
            break
        await asyncio.sleep_ms(20)
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    task.cancel()
    await asyncio.sleep_ms(0)
    for seq in range(1, ob.next_seq):  # a line each: one big JSON would need a big heap
        e = ob.get(ob.rid(seq))
        if e:
            print("E", json.dumps({"rid": e["rid"], "seq": seq, "state": e["state_name"],
                                   "flags": e["flags"], "aver": e["aver"], "code": e["code"]}))
    print("RESULT " + json.dumps({"elapsed_ms": elapsed, "status": p.status(), "made": made}))


asyncio.run(main())
