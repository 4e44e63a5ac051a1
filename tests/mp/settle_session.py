# The whole terminal (refund.app's Terminal and its tasks, the real printer driver on
# the printer tty, the host link over TCP) for tests/test_settle_powercut.py.
# SETTLE_MODE=fill: take SETTLE_N refunds through the intake (as the ECR would) and
#   wait until all are printed, then print "FILLED".
# SETTLE_MODE=day: a shop day on a fresh terminal: SETTLE_N refunds from the ECR, printed,
#   then settled; run again after a cut it is the ECR resending every request (same seq,
#   same fields) and the settlement resuming (or starting).
# SETTLE_MODE=settle: start settling the open batch (or resume the one on flash), take
#   SETTLE_MORE refunds during it, run until it has closed and its slip printed:
#   "DONE <ops>" (flash programs+erases since the start). SETTLE_CUT=k (> 0) cuts the
#   power at the k-th of them: the device dies there, this prints "CUT_POWER" and exits
#   at once, as a board whose supply went.
import os
import sys
import asyncio
import board
from refund import app as A

_mode = os.getenv("SETTLE_MODE")
_n = int(os.getenv("SETTLE_N") or "0")
_more = int(os.getenv("SETTLE_MORE") or "0")
_cut = int(os.getenv("SETTLE_CUT") or "0")

reason, info, uarts = A.boot(board)
cfg = A._config(board)
term = A.Terminal(board, cfg, uarts)
dev = board.flash_dev()


def refund(i, tag):
    # seq and fields depend on i and tag only: a second run resends the same request
    rep = term.intake.handle({"cmd": "REFUND", "seq": str(1000 + i), "amount": str(100 + i),
                              "orrn": "ORIG%s%07d" % (tag, i), "op": "01", "pin": "1234"})
    if "rid" in rep:
        print("ACK", rep["rid"])
    else:
        print("REFUSED", rep.get("err"))  # the flash died under it


def done_printing():
    from refund import record as R

    ob = term.ob
    for state in (R.QUEUED, R.APPROVED, R.CANCELLING):
        for _seq in ob.seqs(state):
            return False
    return True


def facts():
    from refund import record as R

    ob = term.ob
    for src in (ob.history(), ob.journal_entries(), ob.entries()):
        for e in src:
            print("E", R.rid_of(e["gen"], e["seq"]), e["state"], e["batch"], e["amount"])
    bi = ob.batch_info()
    print("BATCH", bi["open"], bi["cut"])
    print("LAST", term.settle.last["b"], term.settle.last["diff_n"])
    print("LOADED", "refund.settle" in sys.modules)


async def tick(ms):
    # The power went at the k-th write: stop at once, as a board whose supply went.
    if _cut and dev.ops() >= dev.cut_at:
        print("CUT_POWER")
        sys.exit(0)
    await asyncio.sleep_ms(ms)


async def main():
    tasks = [asyncio.create_task(A._supervise("conout", A._log.out.run))]
    tasks += [asyncio.create_task(A._supervise(n, f)) for n, f in term.tasks()]
    start = dev.ops()
    if _cut:
        dev.cut_at = start + _cut
    if _mode == "fill":
        for i in range(_n):
            refund(i, "F")
            await asyncio.sleep_ms(0)
        while not done_printing():
            await asyncio.sleep_ms(50)
        print("FILLED")
        return
    if _mode == "day":
        for i in range(_n):
            refund(i, "D")
            await tick(0)
        while not done_printing():
            await tick(20)
    st = term.settle  # refund.settlecmd.Gate: the task is loaded while a settlement runs
    if st.obj is None and not st.last and not term.ob.bt.cut:
        try:
            print("START", st.start("test"))
            for i in range(_more):
                refund(i, "M")  # taken while settling: they join the next batch
        except OSError as e:
            print("START_FAILED", e)  # the power went under it (the ECR reply says flash_error)
    while True:
        if st.obj is None and st.last and done_printing():
            print("DONE", dev.ops() - start)
            facts()
            return
        await tick(5)


asyncio.run(main())
