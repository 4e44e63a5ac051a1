"""Issue 13 end to end: settlement on the whole terminal (virtual board, host simulator,
printer emulator), started the ways users start it — refundctl on the ECR link by a
supervisor, refundctl on the console with the technician key, and `settle_at`."""
import json
import os
import time

import pytest

from host_tools.shop import BENCH_CFG, Shop
from test_service_e2e import BENCH_TECH_KEY, Tech

SUP = ("--supervisor", "99", "--supervisor-pin", "9999")


def take(shop, n, amount=1000, tag="A"):
    rids = [shop.refund(amount + i, orrn="ORIG%s%07d" % (tag, i), check=True)["rid"] for i in range(n)]
    for rid in rids:
        shop.wait_state(rid, ("printed",), timeout=60)
    return rids


def slips(shop, n0=0):
    out = []
    for doc in shop.printer.receipts[n0:]:
        with open(doc["files"]["txt"], encoding="utf-8") as f:
            t = f.read()
        if "SETTLEMENT" in t:
            out.append(t)
    return out


def wait_slips(shop, n, n0=0, timeout=20):
    end = time.time() + timeout
    while time.time() < end and len(slips(shop, n0)) < n:
        time.sleep(0.2)
    return slips(shop, n0)


def closed(sim, batch):
    return [e for e in sim.settlements if e["type"] == "settlement" and e["batch"] == batch]


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_a_day_that_agrees_then_a_day_the_host_lost_a_refund(shop):
    day1 = take(shop, 3)
    # An operator may not settle; the reason says why.
    op = shop.ctl("settle", "--supervisor", "01", "--supervisor-pin", "1234")
    assert op["_rc"] == 1 and op["reason"] == "not_supervisor", op
    assert shop.ctl("status", check=True)["batch"] == "000001"
    r = shop.ctl("settle", *SUP, timeout=5, check=True)
    assert r["closed"] and r["batch"] == 1 and r["diff_n"] == 0, r
    assert r["totals"] == [["156", 3, 1000 + 1001 + 1002]], r
    got = wait_slips(shop, 1)
    assert len(got) == 1 and "TOTALS AGREE" in got[0] and "000001" in got[0], got
    assert "REPRINT" not in got[0]
    host = closed(shop.sim, "000001")
    assert len(host) == 1 and host[0]["count"] == 3 and host[0]["total"] == 3003, host
    st = shop.ctl("status", check=True)
    assert st["batch"] == "000002" and st["lbatch"] == "000001" and st["settle"] == "idle", st

    # Day 2: the host "loses" one refund; the upload finds it by rid.
    day2 = take(shop, 2, amount=2000, tag="B")
    shop.sim.faults.settle_missing.append(day2[0])
    n0 = len(shop.printer.receipts)
    r = shop.ctl("settle", *SUP, timeout=5, check=True)
    assert r["closed"] and r["batch"] == 2 and r["diff_n"] == 1, r
    got = wait_slips(shop, 1, n0)
    assert len(got) == 1 and "DIFFERENCES (1)" in got[0] and day2[0] in got[0], got
    assert "HOST MISSING" in got[0] and day2[1] not in got[0] and "TOTALS AGREE" not in got[0]
    diffs = shop.sim.differences("TERM0001")
    assert [(d["rid"], d["kind"], d["batch"]) for d in diffs] == [(day2[0], "missing", "000002")], diffs
    assert len(closed(shop.sim, "000002")) == 1
    # Each refund is in the batch it was first sent in, on the host too.
    assert {rid: shop.sim.refunds[("TERM0001", rid)].batch for rid in day1 + day2} == \
        dict([(rid, "000001") for rid in day1] + [(rid, "000002") for rid in day2])
    # The difference is in the log: explain on the console shows it.
    tech = Tech(shop, shop.dir)
    ex = tech("explain", day2[0], "--json")
    assert ex.returncode == 0, ex.stderr
    res = json.loads(ex.stdout)
    evs = [e["fields"] for e in res["events"] if e["name"] == "settle_diff"]
    assert evs == [{"batch": "000002", "cur": "156", "host": "", "what": "missing"}], res["events"]
    assert any(ln.startswith("SETTLEMENT DIFFERENCE batch 000002") for ln in res["timeline"]), res["timeline"]


def test_settlement_waits_for_unknown_outcomes_and_resumes_after_a_power_cut(tmp_path):
    from host_tools.hostsim import Faults

    shop = Shop(tmp_path, faults=Faults(drop_answer=1.0))  # sent, never answered: unknown
    try:
        rid = shop.refund(700, orrn="ORIGWAIT0001", check=True)["rid"]
        time.sleep(1.0)
        r = shop.ctl("settle", *SUP, "--no-wait", check=True)
        assert r["settle"] == "started" and r["batch"] == 1, r
        shop.sim.stop()  # and now the host is gone altogether
        end = time.time() + 30
        st = {}
        while time.time() < end:
            st = shop.ctl("status", check=True)
            if "host unreachable" in st.get("sdetail", ""):
                break
            time.sleep(0.5)
        assert st["settle"] == "waiting" and st["sunresolved"] == "1", st
        assert st["sdetail"] == "settlement waiting: host unreachable, 1 refunds unresolved", st
        assert st["batch"] == "000002"  # cut: new refunds join the next batch
        later = shop.refund(800, orrn="ORIGWAIT0002", check=True)["rid"]
        shop.power_cut()
        shop.sim.faults.drop_answer = 0.0
        shop.sim.start()
        shop.boot()
        shop.wait_state(rid, ("printed",), timeout=60)
        end = time.time() + 60
        while time.time() < end and not closed(shop.sim, "000001"):
            time.sleep(0.5)
        host = closed(shop.sim, "000001")
        assert len(host) == 1 and host[0]["count"] == 1 and host[0]["total"] == 700, host
        got = wait_slips(shop, 1)
        assert len(got) == 1 and "TOTALS AGREE" in got[0], got
        shop.wait_state(later, ("printed",), timeout=60)
        assert shop.sim.refunds[("TERM0001", later)].batch == "000002"
        st = shop.ctl("status", check=True)
        assert st["settle"] == "idle" and st["lbatch"] == "000001" and st["bcount_156"] == "1", st
    finally:
        shop.close()


def test_technician_settles_on_the_console_through_lost_answers_and_an_invented_refund(tmp_path):
    from host_tools.hostsim import Faults

    shop = Shop(tmp_path, faults=Faults(settle_extra=True, settle_drop_answer=True))
    try:
        take(shop, 2)
        # A resend of the same SETTLE frame (same seq) is answered again, never settles twice.
        a = shop.ctl("settle", *SUP, "--no-wait", seq=424242, check=True)
        b = shop.ctl("settle", *SUP, "--no-wait", seq=424242, check=True)
        assert a["batch"] == b["batch"] == 1, (a, b)
        end = time.time() + 60
        while time.time() < end and shop.ctl("status", check=True).get("lbatch") != "000001":
            time.sleep(0.5)
        take(shop, 1, tag="C")
        tech = Tech(shop, shop.dir)
        no_key = tech("settle")
        assert no_key.returncode == 2 and "tech-key" in no_key.stderr
        r = tech("--tech-key", BENCH_TECH_KEY, "settle", "--json", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout.strip().splitlines()[-1])
        # The host invented a refund: the upload names it "only the host has it".
        assert res["closed"] and res["batch"] == 2 and res["diff_n"] == 1, res
        got = wait_slips(shop, 2)
        assert len(got) == 2 and "XTRA-000002-156" in got[1] and "HOST ONLY" in got[1], got
        assert "XTRA-000001-156" in got[0]
        assert len(closed(shop.sim, "000001")) == 1 and len(closed(shop.sim, "000002")) == 1
    finally:
        shop.close()


def test_settle_at_settles_once_a_day_on_its_own(tmp_path):
    with open(BENCH_CFG) as f:
        cfg = json.load(f)
    # the bench's local time (tz_min) now: settle_at has passed today
    t = time.gmtime(time.time() + 60 * cfg.get("tz_min", 0) - 60)
    cfg["settle_at"] = "%02d:%02d" % (t.tm_hour, t.tm_min) if t.tm_hour or t.tm_min else "00:00"
    path = os.path.join(str(tmp_path), "cfg.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    shop = Shop(tmp_path, config=path)
    try:
        take(shop, 1)
        end = time.time() + 30
        while time.time() < end and not closed(shop.sim, "000001"):
            time.sleep(0.5)
        assert len(closed(shop.sim, "000001")) == 1
        shop.power_cut()  # the same day again: it does not settle twice
        shop.boot()
        take(shop, 1, tag="D")
        time.sleep(12)  # settle_at is checked every 5 s
        assert not closed(shop.sim, "000002")
        assert shop.ctl("status", check=True)["settle"] == "idle"
    finally:
        shop.close()
