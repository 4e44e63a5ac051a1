# Drives the outbox from JSON lines on stdin (one op per line), one JSON answer per
# line on stdout. Used by the model test; a reboot is a new process on the same image.
import sys
import json
import board
from refund.outbox import Outbox
from refund.errors import Refused, BadTransition

board.mount_flash(lambda *a, **k: None)
cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
ob = Outbox("/flash/ob", board.now, lambda *a, **k: None, cfg)
ob.recover()
OPS = {
    "send": ob.mark_sent, "approve": lambda r: ob.approve(r, "RRN000000042", "AUTH01"),
    "decline": lambda r: ob.decline(r, "05"), "print_begun": ob.print_begun,
    "printed": ob.printed, "slip_printed": ob.slip_printed, "cancel": ob.cancel,
    "reversal_sent": ob.reversal_sent, "reversal_done": ob.reversal_done,
}


def dump():
    out = {}
    for seq in range(1, ob.next_seq):
        e = ob.get("%s-%06d" % (ob.gen, seq))
        if e:
            out[e["rid"]] = [e["state"], e["flags"], e["amount"]]
    return out


print(json.dumps({"ready": 1, "gen": ob.gen}))
for line in sys.stdin:
    c = json.loads(line)
    op = c["op"]
    try:
        if op == "accept":
            e = ob.accept(c["amount"], 156, c["orrn"], "01")
            r = {"ok": e["rid"]}
        elif op == "compact":
            ob.compact()
            r = {"ok": 1}
        elif op == "dump":
            r = {"entries": dump(), "live": ob.live, "pending": ob.pending}
        else:
            e = OPS[op](c["rid"])
            r = {"ok": [e["state"], e["flags"]]}
    except Refused as e:
        r = {"refused": e.code}
    except BadTransition as e:
        r = {"bad": str(e)}
    print(json.dumps(r))
