"""Issue 13: power cuts at every flash write during a settlement of 100 refunds with a
forced upload (the host lost one of them), on the whole terminal (tests/mp/
settle_session.py: refund.app's Terminal and tasks, the printer driver on the printer
emulator's tty, the host simulator over TCP).

For each cut point k: a copy of the 100-refund flash and of the host's ledger; the
settlement starts (three refunds are taken while it runs) and the power goes at the k-th
program/erase after it started; a fresh interpreter boots the same flash, resumes and
finishes. Then: the batch closed exactly once on both sides with the terminal's totals,
every refund is in exactly one batch (the 100 in batch 1, those taken during settlement
in batch 2, on the terminal and on the host), no batch number was used twice, the slip
lists the lost refund, and every copy printed after the first says REPRINT.

make test runs every REFUND_SETTLE_CUT_STEP-th (default 4th) cut point, clean cuts, on
the 64-bit build; make soak every one, clean and torn, on 64 and 32 (REFUND_SETTLE_CUTS=all).
"""
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import mp_env_path, mp_exe
from host_tools import REPO, vboard
from host_tools.fwrun import KEY
from host_tools.hostsim import Faults, HostSim
from host_tools.nullmodem import NullModem
from host_tools.printer_emu import PrinterEmulator
from host_tools.shop import BENCH_CFG

SESSION = os.path.join(REPO, "tests", "mp", "settle_session.py")
N = 100
MORE = 3
FULL = os.environ.get("REFUND_SETTLE_CUTS") == "all"
STEP = 1 if FULL else int(os.environ.get("REFUND_SETTLE_CUT_STEP", "4"))


class Bench:
    """Host simulator (on a copy of the ledger), printer emulator on a null-modem."""

    def __init__(self, d, ledger=None, lost=()):
        os.makedirs(d, exist_ok=True)
        self.d = d
        self.ledger = os.path.join(d, "ledger.jsonl")
        if ledger:
            shutil.copy(ledger, self.ledger)
        self.sim = HostSim(bytes.fromhex(KEY), seed=3, faults=Faults(settle_missing=list(lost)),
                           ledger_path=self.ledger)
        self.sim.start()
        self.nm = NullModem().start()
        self.printer = PrinterEmulator(os.path.join(d, "receipts"), font="none")  # text is enough
        self.printer.start(tty_path=self.nm.b, baud=115200)
        with open(BENCH_CFG) as f:
            cfg = json.load(f)
        cfg["host"] = "127.0.0.1:%d" % self.sim.port
        self.cfg = os.path.join(d, "config.json")
        with open(self.cfg, "w") as f:
            json.dump(cfg, f)

    def run(self, img, interp, cut=0, torn=False, **env):
        e = vboard.board_env(img, printer=self.nm.a, cut_at=0)
        e["MICROPYPATH"] = mp_env_path(interp)
        e["REFUND_CONFIG"] = self.cfg
        e["SETTLE_CUT"] = str(cut)
        e["REFUND_CUT_TORN"] = "1" if torn else "0"
        e.update({k: str(v) for k, v in env.items()})
        r = subprocess.run([mp_exe(interp), "-X", "heapsize=512k", SESSION], env=e,
                           capture_output=True, text=True, timeout=180)
        with open(os.path.join(self.d, "console.log"), "a") as f:
            f.write(r.stdout + r.stderr)
        return r

    def docs(self):
        """(doc, text) of every receipt, once those still queued are written."""
        self.printer.out.stop()  # writes what is queued; from now on at once
        out = []
        for doc in list(self.printer.receipts):
            with open(doc["files"]["txt"], encoding="utf-8") as f:
                out.append((doc, f.read()))
        return out

    def close(self):
        self.printer.stop()
        self.nm.close()
        self.sim.stop()


def _acks(out):
    return [ln.split()[1] for ln in out.splitlines() if ln.startswith("ACK ")]


def _facts(out):
    ent, bat, last = {}, None, None
    for ln in out.splitlines():
        x = ln.split()
        if x and x[0] == "E":
            ent[x[1]] = (int(x[2]), int(x[3]), int(x[4]))  # the latest record wins
        elif x and x[0] == "BATCH":
            bat = (int(x[1]), int(x[2]))
        elif x and x[0] == "LAST":
            last = (int(x[1]), int(x[2]))
    return ent, bat, last


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """100 refunds approved and printed in batch 1 (one flash image, one ledger per build)."""
    made = {}

    def get(interp):
        if interp not in made:
            d = str(tmp_path_factory.mktemp("settle-base-" + interp))
            b = Bench(d)
            try:
                img = os.path.join(d, "base.img")
                r = b.run(img, interp, SETTLE_MODE="fill", SETTLE_N=N)
                assert "FILLED" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
                rids = _acks(r.stdout)
                assert len(rids) == N
            finally:
                b.close()
            made[interp] = (img, b.ledger, rids)
        return made[interp]

    return get


def verify(b, out1, out2, rids, lost, where):
    """out1: the cut run's output, out2: the resumed run's."""
    assert "DONE" in out2, where + out2[-3000:]
    assert "LOADED False" in out2, where + "the settlement task was not unloaded after it ended"
    ent, bat, last = _facts(out2)
    more = _acks(out1)  # acknowledged while settling (before the power went)
    assert last == (1, 1), where + "last settlement %r" % (last,)
    assert bat == (2, 0), where + "batches open/cut %r (a number used twice or not closed)" % (bat,)
    for rid in rids:
        assert ent[rid][1] == 1, where + "%s in batch %d" % (rid, ent[rid][1])
    for rid in more:
        assert rid in ent and ent[rid][1] == 2, where + "%s (taken while settling): %r" % (rid, ent.get(rid))
    sim = b.sim
    closes = [e for e in sim.settlements if e["type"] == "settlement"]
    assert [(e["batch"], e["count"], e["total"]) for e in closes] == \
        [("000001", N, sum(100 + i for i in range(N)))], where + repr(closes)
    diffs = sim.differences("TERM0001")
    assert [(d["rid"], d["kind"]) for d in diffs] == [(lost, "missing")], where + repr(diffs)
    host = {rid: r.batch for (tid, rid), r in sim.refunds.items() if r.rc == "00"}
    for rid in rids:
        assert host[rid] == "000001", where + rid
    for rid in more:
        assert host.get(rid) == "000002", where + "%s on the host: %r" % (rid, host.get(rid))
    net = sim.net("TERM0001")
    assert all(v in (0, ent[r][2]) for r, v in net.items()), where + "a refund booked twice"
    slips = [t for _d, t in b.docs() if "SETTLEMENT" in t]
    assert slips, where + "no settlement slip"
    for t in slips:
        assert "000001" in t and "DIFFERENCES (1)" in t and lost in t and "HOST MISSING" in t, where + t
        assert ("退货笔数 REFUNDS (156)" in t) and str(N) in t, where + t
    assert all("REPRINT" in t for t in slips[1:]), where + "a second copy not marked REPRINT"
    return 1


def _case(base_img, ledger, rids, tmp, interp, k, torn):
    d = os.path.join(tmp, "cut-%s-%d-%d" % (interp, k, torn))
    b = Bench(d, ledger, lost=[rids[N // 2]])
    try:
        img = os.path.join(d, "t.img")
        shutil.copy(base_img, img)
        r1 = b.run(img, interp, cut=k, torn=torn, SETTLE_MODE="settle", SETTLE_MORE=MORE)
        if "CUT_POWER" not in r1.stdout:
            assert "DONE" in r1.stdout, r1.stdout[-3000:] + r1.stderr[-2000:]
            return 0  # the settlement needed fewer writes than k
        r2 = b.run(img, interp, SETTLE_MODE="settle")
        return verify(b, r1.stdout, r2.stdout, rids, rids[N // 2],
                      "cut at write %d (%s, %s-bit): " % (k, "torn" if torn else "clean", interp))
    finally:
        b.close()


def _record(kind, interp, done, total):
    """make soak: the campaign's counts for docs/reliability.md (every case verified, or
    the test failed before this)."""
    from host_tools.reliability import record

    record("%s_%s" % (kind, interp), done, 0, {"cut_points": done}, [], kind=kind, interp=interp,
           writes=total, torn=FULL)


def _interps():
    return ["64", "32"] if FULL else ["64"]


@pytest.mark.parametrize("interp", _interps(), indirect=True)
def test_power_cut_at_every_flash_write_during_a_settlement(base, tmp_path, interp):
    base_img, ledger, rids = base(interp)
    # The whole settlement without a cut: how many programs+erases it makes.
    b = Bench(str(tmp_path / "nocut"), ledger, lost=[rids[N // 2]])
    try:
        img = str(tmp_path / "nocut" / "t.img")
        shutil.copy(base_img, img)
        r = b.run(img, interp, SETTLE_MODE="settle", SETTLE_MORE=MORE)
        total = int(r.stdout.split("DONE")[1].split()[0])
        verify(b, r.stdout, r.stdout, rids, rids[N // 2], "no cut: ")
    finally:
        b.close()
    jobs = [(k, t) for k in range(1, total + 1, STEP) for t in ((False, True) if FULL else (False,))]
    with ThreadPoolExecutor(2) as pool:
        done = sum(pool.map(lambda kt: _case(base_img, ledger, rids, str(tmp_path), interp, *kt), jobs))
    print("\nsettlement power cuts (%s-bit): %d cut points of %d writes (every %d%s), all verified"
          % (interp, done, total, STEP, ", clean and torn" if FULL else ", clean"))
    assert done >= len(jobs) - 2 and done > 0
    _record("powercut_settle", interp, done, total)


DAY_N = 6
DAY_STEP = 1 if FULL else int(os.environ.get("REFUND_DAY_CUT_STEP", "9"))


def _kind(text):
    return "merchant" if "MERCHANT COPY" in text else "cardholder" if "CARDHOLDER COPY" in text else None


def verify_day(b, out1, out2, where):
    assert "DONE" in out2 and "LOADED False" in out2, where + out2[-3000:]
    ent, bat, last = _facts(out2)
    acks1, acks2 = _acks(out1), _acks(out2)
    # the resent requests (same seq) got the rids the first answers named: never a second refund
    assert len(acks2) == DAY_N and len(set(acks2)) == DAY_N, where + repr(acks2)
    assert acks1 == acks2[:len(acks1)], where + "resend got another rid: %r vs %r" % (acks1, acks2)
    assert last == (1, 0) and bat == (2, 0), where + repr((last, bat))
    sim = b.sim
    lines = [e for e in sim.ledger if e["type"] == "refund"]
    assert sorted(e["rid"] for e in lines) == sorted(acks2), where + "host ledger %r" % lines
    closes = [e for e in sim.settlements if e["type"] == "settlement"]
    assert [(e["batch"], e["count"], e["total"]) for e in closes] == \
        [("000001", DAY_N, sum(100 + i for i in range(DAY_N)))], where + repr(closes)
    docs = b.docs()
    for rid in acks2:
        for kind in ("merchant", "cardholder"):
            mine = [(d, t) for d, t in docs if rid in t and _kind(t) == kind]
            originals = [1 for d, t in mine if "REPRINT" not in t]
            assert len(originals) <= 1, where + "%s %s copy printed %d times as an original" % (
                rid, kind, len(originals))
            assert any(d["cut_clean"] for d, t in mine), where + "%s: no whole %s copy" % (rid, kind)
    slips = [t for d, t in docs if "SETTLEMENT" in t]
    assert slips and all("TOTALS AGREE" in t for t in slips), where + repr(slips)
    assert all("REPRINT" in t for t in slips[1:]), where + "a second slip not marked REPRINT"
    return 1


def _day_case(tmp, interp, k, torn):
    d = os.path.join(tmp, "day-%s-%d-%d" % (interp, k, torn))
    b = Bench(d)
    try:
        img = os.path.join(d, "t.img")
        r1 = b.run(img, interp, cut=k, torn=torn, SETTLE_MODE="day", SETTLE_N=DAY_N)
        if "CUT_POWER" not in r1.stdout:
            assert "DONE" in r1.stdout, r1.stdout[-3000:] + r1.stderr[-2000:]
            return 0
        r2 = b.run(img, interp, SETTLE_MODE="day", SETTLE_N=DAY_N)
        return verify_day(b, r1.stdout, r2.stdout, "day, cut at write %d (%s, %s-bit): " % (
            k, "torn" if torn else "clean", interp))
    finally:
        b.close()


@pytest.mark.parametrize("interp", _interps(), indirect=True)
def test_power_cut_at_every_flash_write_of_a_shop_day(tmp_path, interp):
    """Exhaustive block-level cuts over a whole application session on a fresh terminal:
    intake (ECR requests, resent after the cut) -> send -> approve -> print -> settle."""
    b = Bench(str(tmp_path / "nocut"))
    try:
        r = b.run(str(tmp_path / "nocut" / "t.img"), interp, SETTLE_MODE="day", SETTLE_N=DAY_N)
        total = int(r.stdout.split("DONE")[1].split()[0])
        verify_day(b, "", r.stdout, "no cut: ")
    finally:
        b.close()
    jobs = [(k, t) for k in range(1, total + 1, DAY_STEP) for t in ((False, True) if FULL else (False,))]
    with ThreadPoolExecutor(2) as pool:
        done = sum(pool.map(lambda kt: _day_case(str(tmp_path), interp, *kt), jobs))
    print("\nshop-day power cuts (%s-bit): %d cut points of %d writes (every %d%s), all verified"
          % (interp, done, total, DAY_STEP, ", clean and torn" if FULL else ", clean"))
    assert done >= len(jobs) - 2 and done > 0
    _record("powercut_day", interp, done, total)
