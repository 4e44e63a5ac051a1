# Runs outbox + host link + sender on MicroPython against a host (the simulator or a
# test's own evil host) over real TCP, until every refund is final or time runs out.
# argv[1]: path of a JSON file (argv strings >= 255 chars crash this interpreter) {"port", "key", "tid", "mid", "n", "host": {...sender cfg}, "cancel": [i..],
#               "cancel_after_ms", "deadline_ms", "keep": bool}
import sys
import json
import time
import asyncio
import board
from refund.outbox import Outbox
from refund.hostlink import Link
from refund.sender import Sender
from refund.mac import Mac
from refund import record as R

with open(sys.argv[1]) as f:
    cfg = json.load(f)
logs = []


def log(tag, msg, level="INFO", ev=True):
    if level != "INFO" or cfg.get("verbose"):
        print("LOG", level, tag, msg)


board.mount_flash(log)
ob = Outbox("/flash/ob", board.now, log, {"max_live": 2000, "max_pending": 10 ** 12})
ob.recover()
for i in range(cfg.get("n", 0)):
    ob.accept(cfg.get("amount", 1000) + i, 156, "ORIG%08d" % i, "01")
link = Link("127.0.0.1", cfg["port"], Mac.from_hex(cfg["key"]), cfg["tid"], log)
s = Sender(ob, link, {"tid": cfg["tid"], "mid": cfg["mid"]}, cfg.get("host"), log, board.now,
           board.localtime)
ob.on_change = s.wake


def busy():
    n = 0
    for st in (R.QUEUED, R.CANCELLING):
        for _ in ob.seqs(st):
            n += 1
    return n > cfg.get("done_when_left", 0)


async def main():
    t0 = time.ticks_ms()
    task = asyncio.create_task(s.run())
    cancel = cfg.get("cancel", [])
    deadline = cfg.get("deadline_ms", 20000)
    while True:
        el = time.ticks_diff(time.ticks_ms(), t0)
        if cancel and el >= cfg.get("cancel_after_ms", 0):
            for i in cancel:
                try:
                    ob.cancel(ob.rid(i + 1))
                except Exception as e:
                    print("CANCEL_REFUSED", i, e)
            cancel = []
        if (not busy() and not cancel) or el > deadline:
            break
        await asyncio.sleep_ms(20)
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    task.cancel()
    link.close()
    for seq in range(1, ob.next_seq):  # one line each: the harness holds no big dict
        e = ob.get(ob.rid(seq))
        if e:
            print("E", e["rid"], e["state_name"], e["rrn"] or "-", e["auth"] or "-", e["code"] or "-",
                  e["amount"])
    print("RESULT " + json.dumps({"elapsed_ms": elapsed, "sender": s.stats, "link": link.stats,
                                  "gen": ob.gen}))


asyncio.run(main())
