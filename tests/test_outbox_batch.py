"""Settlement batches in the outbox (issue 13, firmware batch part): a refund joins the
batch open when it is first sent (durably, with the entry) and carries it as field 62
`batch` in its 0200 and every 0201; cut / close are durable; per-currency totals are
exact after approvals, declines and reversals, and after a power cut at every flash
write; entries of batches not closed outlive the history limits; a flash written before
batches existed still recovers (its refunds are in batch 0)."""
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import mp_env_path, mp_exe
from host_tools import REPO, vboard
from host_tools.fwrun import KEY, run_terminal
from host_tools.hostsim import HostSim, Faults
from host_tools.hostsim_msg import decode

SESSION = os.path.join(REPO, "tests", "mp", "batch_session.py")
CHECK = os.path.join(REPO, "tests", "mp", "batch_check.py")

MODEL = r"""
import board
from refund.outbox import Outbox
from refund import batch
board.mount_flash(print)
CFG = {"compact_min": 8, "compact_max": 8, "keep_n": 1, "keep_s": 86400}
ob = Outbox("/flash/ob", board.now, print, CFG)
ob.recover()
a = [ob.accept(100 + i, (156, 978)[i % 2], "ORIG%08d" % i, "01")["rid"] for i in range(8)]
assert ob.get(a[0])["batch"] == 0  # not sent: in no batch yet
for r in a[:6]:
    assert ob.mark_sent(r)["batch"] == 1
assert ob.mark_sent(a[0])["batch"] == 1  # a repeat keeps it
ob.approve(a[0], "RRN000000001", "AU0001")  # 156 100
ob.approve(a[1], "RRN000000002", "AU0002")  # 978 101
ob.approve(a[2], "RRN000000003", "AU0003")  # 156 102
ob.decline(a[3], "05")  # 978: declined, not counted
ob.cancel(a[4])  # 156, sent: cancelling (reversal in flight)
ob.cancel(a[6])  # never sent: cancelled, in no batch
print("T1", sorted(ob.batch_info()["totals"][1].items()))
print("CUT", ob.cut(), ob.cut())  # the second call resumes the same cut
print("UNRES", sorted(batch.unresolved(ob, 1)))
ob.mark_sent(a[7])
print("B7", ob.get(a[7])["batch"])
ob.approve(a[5], "RRN000000006", "AU0006")  # 978 105: cut batch, answered after the cut
ob.approve(a[7], "RRN000000008", "AU0008")  # 978 107: batch 2
ob.reversal_sent(a[4])
ob.reversal_done(a[4])
for r in (a[0], a[2], a[5]):
    ob.print_begun(r)
    ob.printed(r)
for r in a:  # many writes: compactions and history trims happen
    if ob.state(r) == 4:
        ob.print_begun(r)
        ob.slip_printed(r)
for i in range(20):
    ob.notice_printed(ob.accept(1, 156, "FILL%08d" % i)["rid"])
print("HIST", ob.stats()["history"])
print("UP156", sorted(x["rid"] for x in batch.approved(ob, 1, 156)))
print("UP978", sorted((x["rid"], x["amount"], x["rrn"], x["orrn"]) for x in batch.approved(ob, 1, 978)))
print("INFO", sorted(ob.batch_info()["totals"].items()))
ob2 = Outbox("/flash/ob", board.now, print, CFG)
ob2.recover()
print("REC", sorted(ob2.batch_info()["totals"].items()), ob2.bt.open, ob2.bt.cut)
print("CLOSE", ob2.close(1), ob2.close(1))
try:
    ob2.close(2)
except Exception as e:
    print("OPEN2", type(e).__name__)
ob3 = Outbox("/flash/ob", board.now, print, CFG)
ob3.recover()
print("AFTER", sorted(ob3.batch_info()["totals"].items()), ob3.bt.open, ob3.bt.cut, ob3.cut())
"""


def _lines(out, tag):
    return [l[len(tag) + 1:] for l in out.splitlines() if l.startswith(tag + " ")]


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_batches_totals_cut_close_and_recovery(mp, tmp_path):
    out = mp(MODEL, env={"REFUND_FLASH": str(tmp_path / "f.img")}).stdout
    rids = _lines(out, "UNRES")
    gen = out.split("UP978 [('")[1][:4]
    rid = lambda i: "%s-%06d" % (gen, i + 1)
    # Batch 1 before the cut: approved 156: 100 + 102, 978: 101; declines, reversals, unsent
    # cancels count nothing.
    assert _lines(out, "T1") == ["[(156, (2, 202)), (978, (1, 101))]"]
    assert _lines(out, "CUT") == ["1 1"]
    # sent and unanswered (a[5]) and a reversal in flight (a[4]): the settlement waits on them
    assert rids == ["['%s', '%s']" % (rid(4), rid(5))]
    assert _lines(out, "B7") == ["2"]  # first sent after the cut: the next batch
    totals = "[(1, {156: (2, 202), 978: (2, 206)}), (2, {978: (1, 107)})]"
    assert _lines(out, "INFO") == [totals]
    # keep_n 1: the history would hold one entry, but batch 1 is not closed
    assert int(_lines(out, "HIST")[0]) >= 4
    assert _lines(out, "UP156") == ["['%s', '%s']" % (rid(0), rid(2))]
    assert _lines(out, "UP978") == ["[('%s', 101, 'RRN000000002', 'ORIG00000001'), "
                                    "('%s', 105, 'RRN000000006', 'ORIG00000005')]" % (rid(1), rid(5))]
    assert _lines(out, "REC") == [totals + " 2 1"]
    assert _lines(out, "CLOSE") == ["True False"]
    assert _lines(out, "OPEN2") == ["BadTransition"]
    assert _lines(out, "AFTER") == ["[(2, {978: (1, 107)})] 2 0 2"]


OLD = r"""
import board, os
from refund.outbox import Outbox
from refund import record as R
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"compact_min": 1000, "compact_max": 1000})
ob.recover()
a = [ob.accept(100 + i, 156, "ORIG%08d" % i, "01")["rid"] for i in range(4)]
for r in a[:3]:
    ob.mark_sent(r)
ob.approve(a[0], "RRN000000001", "AU0001")
ob.compact()  # a[0..3] in the snapshot
ob.approve(a[1], "RRN000000002", "AU0002")  # in the journal
# Rewrite the flash as the firmware before batches wrote it: entry records without the
# trailing batch, a format-1 snapshot head.
def old(fr):
    typ, p = R.check(fr)
    p = bytes(p)
    if typ == R.T_ENTRY:
        p = p[:-4]
    elif typ == R.T_HEAD:
        p = b"\x01" + p[1:33]
    return bytes(R._frame(typ, p))
for v in ob.j.versions():
    with open(ob.j.path(v), "rb") as f:
        fr = f.read()
    with open(ob.j.path(v), "wb") as f:
        f.write(old(fr))
out = b""
with open("/flash/ob/snap", "rb") as f:
    s = f.read()
i = 0
while i < len(s):
    n = s[i]
    if s[i + 1] != R.T_TOTAL:
        out += old(s[i:i + n])
    i += n
with open("/flash/ob/snap", "wb") as f:
    f.write(out)
ob = Outbox("/flash/ob", board.now, print)
r = ob.recover()
print("REC", r["live"], r["damaged"], ob.bt.open, ob.bt.cut, ob.batch_info()["totals"])
print("B", [ob.get(x)["batch"] for x in a])
print("RESENT", ob.mark_sent(a[2])["batch"], ob.mark_sent(a[3])["batch"])
ob.approve(a[2], "RRN000000003", "AU0003")
ob.approve(a[3], "RRN000000004", "AU0004")
print("T", ob.batch_info()["totals"])
ob.compact()
ob = Outbox("/flash/ob", board.now, print)
ob.recover()
print("T2", ob.batch_info()["totals"], [ob.get(x)["batch"] for x in a])
"""


def test_flash_from_before_batches_recovers_in_batch_0(mp, tmp_path):
    out = mp(OLD, env={"REFUND_FLASH": str(tmp_path / "f.img")}).stdout
    assert _lines(out, "REC") == ["4 0 1 0 {}"], out
    assert _lines(out, "B") == ["[0, 0, 0, 0]"]  # sent before batches existed: batch 0
    # a[2] was sent by the old firmware: it keeps batch 0 (its 0201 stays identical);
    # a[3] is first sent now: the open batch
    assert _lines(out, "RESENT") == ["0 1"]
    assert _lines(out, "T") == ["{1: {156: (1, 103)}}"]
    assert _lines(out, "T2") == ["{1: {156: (1, 103)}} [0, 0, 0, 1]"]


class _Sim(HostSim):
    """The bench host simulator, noting each request's MTI, STAN and field 62."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen = []

    def _on_message(self, conn, body):
        try:
            d = decode(body)
            self.seen.append((d.get("t"), d.get("11"), d.get("62")))
        except Exception:  # noqa: undecodable: the simulator itself counts it
            pass
        return super()._on_message(conn, body)


def test_0200_and_every_0201_carry_the_same_batch(tmp_path):
    sim = _Sim(bytes.fromhex(KEY), seed=7, faults=Faults(drop_answer=0.5))
    sim.start()
    try:
        res = run_terminal(str(tmp_path / "f.img"), sim.port, 8)
    finally:
        sim.stop()
    assert sum(1 for e in res["entries"].values() if e[0] == "approved") == 8, res["log"][-2000:]
    first = {}
    repeats = 0
    for mti, stan, f62 in sim.seen:
        if mti not in ("0200", "0201"):
            continue
        keys = dict(kv.split("=", 1) for kv in f62.split(";"))
        assert keys["batch"] == "000001", f62
        if mti == "0200":
            first[stan] = f62
        else:
            repeats += 1
            assert f62 == first[stan]  # field 62 of a repeat is that of its 0200
    assert len(first) == 8 and repeats > 0


def _mp(script, img, cut=0, torn=False, interp="64"):
    env = vboard.board_env(img, cut_at=cut, torn=torn)
    env["MICROPYPATH"] = mp_env_path(interp)
    r = subprocess.run([mp_exe(interp), "-X", "heapsize=256k", script], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def verify_cut(w, c, where):
    """w: the session's output up to the power cut; c: the checker's on that flash."""
    sent = {}
    cuts, closed = [], []
    try_cut = try_close = None
    for l in w.splitlines():
        x = l.split()
        if x[0] == "SENT":
            sent[x[1]] = int(x[2])
        elif x[0] == "TRYCUT":
            try_cut = True
        elif x[0] == "CUT":
            cuts.append(int(x[1]))
            try_cut = None
        elif x[0] == "TRYCLOSE":
            try_close = int(x[1])
        elif x[0] == "CLOSED":
            closed.append(int(x[1]))
            try_close = None
    lines = c.splitlines()
    assert "FORMATTED False" in lines, where + c
    assert [l for l in lines if l.startswith("RECOVER")][0].endswith(" 0"), where + c  # no damage
    b_open, b_cut = map(int, [l for l in lines if l.startswith("BATCH")][0].split()[1:])
    # The numbers the session left (a cut or close under way may or may not have landed).
    o = 1 + len(cuts)
    k = cuts[-1] if cuts and cuts[-1] not in closed else 0
    ok = {(o, k)}
    if try_cut:
        ok.add((o + 1, o) if not k else (o, k))
    if try_close:
        ok.add((o, 0))
    assert (b_open, b_cut) in ok, where + "batches %r, expected one of %r" % ((b_open, b_cut), ok)
    for b in closed:  # closed stays closed, and is never open again
        assert b != b_cut and b < b_open, where + "batch %d reopened" % b
    for l in lines:
        if l.startswith("E "):
            _, rid, state, flags, b, cur, amt = l.split()
            b, flags = int(b), int(flags)
            if rid in sent:
                assert b == sent[rid], where + "%s moved from batch %d to %d" % (rid, sent[rid], b)
            elif flags & 1:  # mark_sent landed as the power went: some batch then open
                assert 1 <= b <= b_open, where + l
            else:
                assert b == 0, where + "%s unsent but in batch %d" % (rid, b)
            assert b <= b_open, where + l
    tot = sorted(l.split()[1:] for l in lines if l.startswith("TOT "))
    rec = sorted(l.split()[1:] for l in lines if l.startswith("RECOUNT "))
    assert tot == rec, where + "totals %r, recount %r" % (tot, rec)
    assert all(l.endswith(" ok") for l in lines if l.startswith("UPLOAD")), where + c
    new = int([l for l in lines if l.startswith("NEWCUT")][0].split()[1])
    assert new not in closed and new == (b_cut or b_open), where + c
    return 1


def _check_cut(base, tmp, k, torn, interp):
    img = os.path.join(tmp, "cut-%d-%d.img" % (k, torn))
    shutil.copy(base, img)
    w = _mp(SESSION, img, cut=k, torn=torn, interp=interp)
    assert "CUT_POWER" in w and "DONE" not in w, (k, torn, w[-500:])
    c = _mp(CHECK, img, interp=interp)
    os.remove(img)
    return verify_cut(w, c, "cut at op %d (%s): " % (k, "torn" if torn else "clean"))


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_power_cut_at_every_flash_write_keeps_batches_exact(tmp_path, interp):
    base = str(tmp_path / "base.img")
    subprocess.run([mp_exe(interp), "-c",
                    "import board\nfrom refund.outbox import Outbox\nboard.mount_flash(print)\n"
                    "Outbox('/flash/ob', board.now, print).recover()\n"],
                   env=dict(vboard.board_env(base), MICROPYPATH=mp_env_path(interp)),
                   check=True, capture_output=True)
    full = str(tmp_path / "full.img")
    shutil.copy(base, full)
    out = _mp(SESSION, full, interp=interp)
    assert "DONE" in out, out[-2000:]
    verify_cut(out, _mp(CHECK, full, interp=interp), "no cut: ")
    total = int(out.split("DONE")[1])
    jobs = [(k, t) for k in range(1, total + 1) for t in (False, True)]
    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        done = sum(pool.map(lambda kt: _check_cut(base, str(tmp_path), *kt, interp=interp), jobs))
    print("\nbatch power cuts (%s-bit): %d cut points (%d programs+erases, clean and torn)"
          % (interp, done, total))
    assert done == len(jobs) and done >= 400
