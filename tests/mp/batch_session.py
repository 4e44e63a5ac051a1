# A scripted outbox session with settlement batches (MicroPython) for the power-cut
# proof of tests/test_outbox_batch.py. It prints a line after every durable step:
# "ACK rid", "SENT rid batch" (mark_sent returned), "TRYCUT" / "CUT b", "TRYCLOSE b" /
# "CLOSED b"; the checker (batch_check.py) then recovers the cut flash.
import board
from refund.outbox import Outbox

board.mount_flash(lambda *a, **k: None)
# Small limits: compaction and history trimming both happen during the session.
ob = Outbox("/flash/ob", board.now, lambda *a, **k: None,
            {"compact_min": 8, "compact_max": 8, "keep_n": 2, "keep_s": 86400})
ob.recover()


def intake(i, cur):
    e = ob.accept(100 + i, cur, "ORIG%08d" % i, "01")
    print("ACK", e["rid"])
    return e["rid"]


def send(rid):
    e = ob.mark_sent(rid)
    print("SENT", rid, e["batch"])


def approve(rid):
    ob.approve(rid, "RRN%09d" % ob.seq_of(rid), "AU0001")


def done(rid):
    ob.print_begun(rid)
    ob.printed(rid)


def cut():
    print("TRYCUT")
    print("CUT", ob.cut())


def close(b):
    print("TRYCLOSE", b)
    ob.close(b)
    print("CLOSED", b)


def run():
    a = [intake(i, (156, 978, 840)[i % 3]) for i in range(9)]
    for r in a[:7]:
        send(r)
    for r in a[:4]:
        approve(r)
    ob.decline(a[4], "05")
    ob.cancel(a[5])  # sent: reversal owed
    ob.reversal_sent(a[5])
    done(a[0])
    cut()  # batch 1 cut; a[6] (sent, unanswered) stays in it
    b = [intake(10 + i, (156, 978)[i % 2]) for i in range(5)]
    for r in b[:3] + a[7:8]:
        send(r)  # batch 2
    approve(a[6])  # a refund of the cut batch answered after the cut
    ob.reversal_done(a[5])
    approve(b[0])
    approve(a[7])
    done(a[1])
    done(b[0])
    close(1)
    ob.decline(b[1], "05")
    cut()  # batch 2
    send(b[3])  # batch 3
    approve(b[3])
    approve(b[2])  # batch 2
    done(b[2])
    close(2)
    cut()  # batch 3
    print("DONE", board.flash_dev().ops())


try:
    run()
except Exception as e:  # the power went: every later flash access fails
    print("CUT_POWER", repr(e))
