# Fresh-boot checker for the power-cut proof: mount, recover, dump, then take new
# numbers to show none is reused.
import board
from refund.outbox import Outbox

info = board.mount_flash(lambda *a, **k: None)
print("FORMATTED", info["formatted"])
ob = Outbox("/flash/ob", board.now, lambda *a, **k: print("LOG", a, k))
r = ob.recover()
print("RECOVER", r["live"], r["damaged"])
# Every number ever handed out, looked up the way staff and tools look a refund up.
for seq in range(1, ob.next_seq):
    e = ob.get("%s-%06d" % (ob.gen, seq))
    if e:
        print("E", e["rid"], e["state"], e["flags"], e["stan"], e["rstan"])
for i in range(2):
    e = ob.accept(777, 156, "NEWX%08d" % i)
    print("NEW", e["rid"], e["stan"])
print("STAN", ob.take_stan())
print("END")
