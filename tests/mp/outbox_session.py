# A scripted outbox session (MicroPython) for the power-cut proof. It prints an event
# line after every durable step, so the checker knows what was acknowledged when the
# power went: "TRY rid state" before a transition, "ST rid state flags" after it,
# "ACK rid stan" after an intake, "PB rid" after print_begun.
import board
from refund.log import log
from refund.outbox import Outbox
from refund import record as R

board.mount_flash(lambda *a, **k: None)
ob = Outbox("/flash/ob", board.now, lambda *a, **k: None, {"compact_min": 16})
ob.recover()


N = 44  # refunds in the scripted session


def st(e):
    print("ST", e["rid"], e["state"], e["flags"])


def step(rid, name, fn, *args):
    want = {"mark_sent": R.QUEUED, "approve": R.APPROVED, "decline": R.DECLINED,
            "print_begun": ob.state(rid), "printed": R.PRINTED, "reversal_sent": R.CANCELLING,
            "slip_printed": R.DECLINED, "reversal_done": R.CANCELLED}.get(name)
    if name == "cancel":
        want = R.CANCELLING if sent(rid) else R.CANCELLED
    print("TRY", rid, want)
    e = fn(rid, *args)
    st(e)
    if name == "print_begun":
        print("PB", rid)


def sent(rid):
    return ob.ix.flags[ob.ix.idx(ob.seq_of(rid))] & R.F_SENT


def run():
    rids = []
    for i in range(N):
        e = ob.accept(1000 + i, 156, "ORIG%08d" % i, "01", "", "E%d" % i)
        print("ACK", e["rid"], e["stan"])
        rids.append(e["rid"])
        if i % 3 == 2:  # host traffic interleaved with intake, as in a shop
            r = rids[i - 2]
            step(r, "mark_sent", ob.mark_sent)
    plan = {
        "full": rids[0:16], "decline": rids[16:19], "cancel_unsent": [rids[20], rids[23]],
        "cancel_sent": [rids[19], rids[22]], "print_begun": rids[25:28], "sent": rids[28:34],
    }
    for r in plan["full"]:
        if not sent(r):
            step(r, "mark_sent", ob.mark_sent)
        step(r, "approve", ob.approve, "RRN%09d" % ob.seq_of(r), "AU%04d" % ob.seq_of(r))
        step(r, "print_begun", ob.print_begun)
        step(r, "printed", ob.printed)
    for r in plan["decline"]:
        if not sent(r):
            step(r, "mark_sent", ob.mark_sent)
        step(r, "decline", ob.decline, "05")
    for r in plan["cancel_unsent"]:
        step(r, "cancel", ob.cancel)
    for r in plan["cancel_sent"]:
        if not sent(r):
            step(r, "mark_sent", ob.mark_sent)
        step(r, "cancel", ob.cancel)
        step(r, "reversal_sent", ob.reversal_sent)
    for r in plan["decline"][:2]:
        step(r, "print_begun", ob.print_begun)
        step(r, "slip_printed", ob.slip_printed)
    for r in plan["print_begun"]:
        if not sent(r):
            step(r, "mark_sent", ob.mark_sent)
        step(r, "approve", ob.approve, "RRN%09d" % ob.seq_of(r), "AU%04d" % ob.seq_of(r))
        step(r, "print_begun", ob.print_begun)
    step(plan["cancel_sent"][0], "reversal_done", ob.reversal_done)
    for r in plan["sent"]:
        if not sent(r):
            step(r, "mark_sent", ob.mark_sent)
    ob.compact()
    print("COMPACTED")
    for i in range(3):
        e = ob.accept(5000 + i, 156, "LATE%08d" % i, "02")
        print("ACK", e["rid"], e["stan"])
    print("DONE", board.flash_dev().ops())


try:
    run()
except Exception as e:  # the power went: every later flash access fails
    print("CUT", repr(e))
