# Fresh-boot checker of the batch power-cut proof: recover, dump every refund with its
# batch, the batch numbers and totals, a recount, the upload iteration, then a new cut.
import board
from refund.outbox import Outbox
from refund import batch
from refund import record as R

info = board.mount_flash(lambda *a, **k: None)
print("FORMATTED", info["formatted"])
ob = Outbox("/flash/ob", board.now, lambda *a, **k: print("LOG", a, k),
            {"compact_min": 8, "compact_max": 8, "keep_n": 2, "keep_s": 86400})
r = ob.recover()
print("RECOVER", r["live"], r["damaged"])
bi = ob.batch_info()
print("BATCH", bi["open"], bi["cut"])
count = {}
for seq in range(1, ob.next_seq):
    e = ob.get(ob.rid(seq))
    if e:
        print("E", e["rid"], e["state"], e["flags"], e["batch"], e["currency"], e["amount"])
        if e["state"] in (R.APPROVED, R.PRINTED):
            k = (e["batch"], e["currency"])
            c = count.setdefault(k, [0, 0, []])
            c[0] += 1
            c[1] += e["amount"]
            c[2].append(e["rid"])
for b in (bi["open"], bi["cut"]):
    if not b:
        continue
    t = bi["totals"].get(b, {})
    for cur in t:
        print("TOT", b, cur, t[cur][0], t[cur][1])
    for k in count:
        if k[0] == b:
            print("RECOUNT", b, k[1], count[k][0], count[k][1])
            up = sorted(x["rid"] for x in batch.approved(ob, b, k[1]))
            print("UPLOAD", b, k[1], "ok" if up == sorted(count[k][2]) else "BAD %s %s" % (up, count[k][2]))
    print("UNRESOLVED", b, " ".join(batch.unresolved(ob, b)) or "-")
print("NEWCUT", ob.cut())
print("END")
