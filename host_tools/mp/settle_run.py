# make bench, section settle (host_tools/benchmarks.py): the terminal's own parts
# (refund.app Terminal: outbox, sender, settlement; no printer, no ECR wired).
# SETTLE_MODE=fill: SETTLE_N refunds through the intake, until all are approved: FILLED.
# SETTLE_MODE=settle: settle the open batch; RESULT {"ms": start to closed, "diff_n",
#   "count", "collect_ms", "upload_ms", "window", "phases": [[phase, ms], ...]}.
import os
import time
import json
import asyncio
import board
from refund import app as A
from refund import record as R

reason, info, uarts = A.boot(board)
term = A.Terminal(board, A._config(board), uarts)


async def main():
    for n, f in term.tasks():
        asyncio.create_task(A._supervise(n, f))
    ob = term.ob
    if os.getenv("SETTLE_MODE") == "fill":
        for i in range(int(os.getenv("SETTLE_N"))):
            rep = term.intake.handle({"cmd": "REFUND", "seq": str(1 + i), "amount": str(100 + i),
                                      "orrn": "BNCH%08d" % i, "op": "01", "pin": "1234"})
            if "rid" not in rep:
                raise SystemExit("refused: %r" % (rep,))
            if i % 8 == 7:
                await asyncio.sleep_ms(0)
        while any(True for _ in ob.seqs(R.QUEUED)):
            await asyncio.sleep_ms(20)
        print("FILLED", ob.stats()["live"])
        return
    t0 = time.ticks_ms()
    term.settle.start("bench")
    st = term.settle.obj  # the task, loaded while it runs (refund.settlecmd.Gate)
    phases = []
    while st.st is not None:
        if not phases or phases[-1][0] != st.phase:
            phases.append([st.phase, time.ticks_diff(time.ticks_ms(), t0)])
        await asyncio.sleep_ms(1)
    ms = time.ticks_diff(time.ticks_ms(), t0)
    res = {"ms": ms, "diff_n": st.last["diff_n"], "count": st.last["totals"][0][1], "phases": phases}
    res.update(st.took)
    print("RESULT " + json.dumps(res))


asyncio.run(main())
