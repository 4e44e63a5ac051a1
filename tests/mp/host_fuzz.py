# Host-frame fuzz runner (tests/test_fuzz_host.py): outbox + host link + sender on
# MicroPython against whatever listens on the port (the fuzzing server, then the host
# simulator). New refunds keep arriving and some sent ones are cancelled until the file
# cfg["switch"] exists; then a SNAP line per entry, and the run goes on until every entry
# is final or the deadline. Lines: LOG (WARN/ERROR), DIED (the sender task ended), SNAP,
# E (final entries), RESULT.
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


def log(tag, msg, level="INFO", ev=True):
    if level == "ERROR":  # WARNs are the expected drops: thousands of them
        print("LOG", level, tag, msg)


from refund.journal import exists  # noqa: E402

board.mount_flash(log)
ob = Outbox("/flash/ob", board.now, log, {"max_live": 2000, "max_pending": 10 ** 12})
ob.recover()
made = 0


def add():
    global made
    ob.accept(1000 + made, 156, "FUZZ%08d" % made, "01")
    made += 1


for i in range(cfg["n"]):
    add()
link = Link("127.0.0.1", cfg["port"], Mac.from_hex(cfg["key"]), cfg["tid"], log)
s = Sender(ob, link, {"tid": cfg["tid"], "mid": cfg["mid"]}, cfg.get("host"), log, board.now,
           board.localtime)
ob.on_change = s.wake


def entries(tag):
    for seq in range(1, ob.next_seq):
        e = ob.get(ob.rid(seq))
        if e:
            print(tag, e["rid"], e["state_name"], e["rrn"] or "-", e["auth"] or "-", e["code"] or "-",
                  e["amount"])


def busy():
    for st in (R.QUEUED, R.CANCELLING):
        for _ in ob.seqs(st):
            return True
    return False


async def main():
    t0 = time.ticks_ms()
    task = asyncio.create_task(s.run())
    last_add = t0
    switched = False
    cancels = 0
    while True:
        now = time.ticks_ms()
        if task.done():
            try:
                await task
                print("DIED sender returned")
            except Exception as e:
                print("DIED", repr(e))
            break
        if not switched:
            if exists(cfg["switch"]):
                switched = True
                entries("SNAP")
                print("SNAPPED", made, cancels)
            else:
                if time.ticks_diff(now, last_add) >= cfg["add_ms"]:
                    last_add = now
                    add()
                # every cancel_every-th refund is cancelled once it may have reached the host
                for seq in ob.seqs(R.QUEUED):
                    if seq % cfg["cancel_every"] == 0:
                        e = ob.get(ob.rid(seq))
                        if e["flags"] & R.F_SENT:
                            ob.cancel(e["rid"])
                            cancels += 1
        elif not busy() or time.ticks_diff(now, t0) > cfg["deadline_ms"]:
            break
        await asyncio.sleep_ms(20)
    elapsed = time.ticks_diff(time.ticks_ms(), t0)
    task.cancel()
    link.close()
    entries("E")
    print("RESULT " + json.dumps({"elapsed_ms": elapsed, "sender": s.stats, "link": link.stats,
                                  "made": made, "cancels": cancels}))


asyncio.run(main())
