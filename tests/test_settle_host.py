"""Settlement on the host simulator (host_tools/hostsim_settle.py, docs/host-link.md
"Settlement") over real TCP on 127.0.0.1: pyiso8583-built 0200s with a `batch`, then
0500 / 0320 flows, with each --settle-fault (missing:RID, extra, drop-answer)."""
import json

import pytest

from host_tools.hostsim import Faults, HostSim, encode, frame
from host_tools.hostsim_ledger import now_utc
from host_tools.hostsim_settle import _f62_extra
from test_hostsim import KEY, MID, ORRN, TID, Client, decoded, refund, reversal


def refund_b(stan, rid, amount, batch="000001", currency="156", mti="0200"):
    d = refund(stan, rid, amount, currency=currency, mti=mti)
    d["62"] += ";batch=" + batch
    return d


def recon(stan, count, total, batch="000001", phase="920000", mti="0500", currency="156"):
    return {"t": mti, "3": phase, "7": "1105200000", "11": "%06d" % stan, "41": TID, "42": MID,
            "49": currency, "62": "batch=" + batch, "74": "%010d" % count, "86": "%016d" % total}


def upload(answer0210, rid, amount, batch="000001", mti="0320", orrn=ORRN):
    a = answer0210
    return {"t": mti, "3": "200000", "4": "%012d" % amount, "7": "1105200100", "11": a["11"],
            "12": a["12"], "13": a["13"], "37": a["37"], "38": a["38"], "41": TID, "42": MID,
            "49": a["49"], "62": "rid=%s;orrn=%s;batch=%s" % (rid, orrn, batch)}


def f62(doc):
    return dict(kv.split("=", 1) for kv in doc["62"].split(";"))


@pytest.fixture
def sims():
    made = []

    def make(**kw):
        kw.setdefault("seed", 5)
        s = HostSim(KEY, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def clients():
    made = []

    def make(sim):
        c = Client(sim.port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def day(c, refunds):
    """Send the 0200s (stan, rid, amount[, batch, currency]) and return their 0210s by rid."""
    out = {}
    for r in refunds:
        c.send(refund_b(*r))
        a = c.recv()
        assert a["39"] == "00", a
        out[r[1]] = a
    return out


def test_agreeing_batch_closes_with_field_15_and_stays_closed(sims, clients, tmp_path):
    path = str(tmp_path / "ledger.jsonl")
    sim = sims(ledger_path=path)
    c = clients(sim)
    day(c, [(1, "R-1", 1000), (2, "R-2", 250), (3, "R-3", 700), (4, "R-4", 900, "000002"),
            (5, "R-5", 300, "000001", "978")])
    c.send(reversal(6, "R-3", 3, 700))
    assert c.recv()["39"] == "00"
    assert sim.batch(TID, "000001") == {"R-1": 1000, "R-2": 250}
    c.send(recon(10, 2, 1250))
    raw = c.recv_raw()
    a, ok = decoded(raw)
    assert ok and "128" in a and "64" not in a
    assert (a["t"], a["39"], a["11"], a["3"], a["74"], a["86"]) == ("0510", "00", "000010", "920000",
                                                                    "0000000002", "0000000000001250")
    assert a["15"] == now_utc().strftime("%m%d") and f62(a) == {"batch": "000001"}
    # the same 0501 gets the same answer; so does any 0500 for the closed batch
    c.send(recon(10, 2, 1250, mti="0501"), recon(11, 5, 9999))
    again = [c.recv(), c.recv()]
    for b in again:
        assert (b["39"], b["15"], b["62"], b["74"], b["86"]) == (a["39"], a["15"], a["62"], a["74"], a["86"])
    assert [b["11"] for b in again] == ["000010", "000011"]
    # the other currency and batch are settled on their own
    c.send(recon(12, 1, 300, currency="978"), recon(13, 1, 900, batch="000002"))
    assert [c.recv()["39"] for _ in range(2)] == ["00", "00"]
    st = sim.stats
    assert (st["settled"], st.get("settle_repeats", 0), st["settle_closed_repeats"]) == (3, 0, 2)
    assert sim.differences() == [] and len(sim.ledger) == 6  # 5 refunds, 1 reversal: no money by settling
    sim.stop()
    lines = [json.loads(x) for x in open(path)]
    closes = [e for e in lines if e["type"] == "settlement"]
    assert [(e["batch"], e["currency"], e["count"], e["total"]) for e in closes] == [
        ("000001", "156", 2, 1250), ("000001", "978", 1, 300), ("000002", "156", 1, 900)]
    assert [e["batch"] for e in lines if e["type"] == "refund"] == ["000001"] * 3 + ["000002", "000001"]
    # a restarted host still knows the batch is closed
    sim2 = sims(ledger_path=path)
    c2 = clients(sim2)
    c2.send(recon(10, 2, 1250, mti="0501"))
    b = c2.recv()
    assert (b["39"], b["15"], b["62"]) == (a["39"], a["15"], a["62"])


def test_missing_refund_gives_95_upload_finds_it_then_960000_closes(sims, clients, tmp_path):
    path = str(tmp_path / "ledger.jsonl")
    sim = sims(ledger_path=path, faults=Faults(settle_missing=["R-2"]))
    c = clients(sim)
    ok = day(c, [(1, "R-1", 1000), (2, "R-2", 250), (3, "R-3", 700)])
    money = len(sim.ledger)
    c.send(recon(20, 3, 1950))
    a = c.recv()
    assert (a["t"], a["39"], f62(a), "15" in a) == ("0510", "95", {"batch": "000001", "diff": "1"}, False)
    c.send(recon(20, 3, 1950, mti="0501"))
    assert c.recv()["62"] == a["62"]  # the same answer again
    views = {}
    for rid, amount in (("R-1", 1000), ("R-2", 250), ("R-3", 700)):
        c.send(upload(ok[rid], rid, amount))
        u = c.recv()
        assert (u["t"], u["39"], u["11"], u["4"]) == ("0330", "00", ok[rid]["11"], "%012d" % amount)
        assert "64" in u and "128" not in u
        views[rid] = f62(u)["host"]
        assert f62(u)["rid"] == rid and f62(u)["batch"] == "000001"
    assert views == {"R-1": "ok", "R-2": "missing", "R-3": "ok"}
    c.send(upload(ok["R-2"], "R-2", 250, mti="0321"))  # a repeat: same view, nothing recorded again
    assert f62(c.recv())["host"] == "missing"
    c.send(recon(21, 3, 1950, phase="960000"))
    z = c.recv()
    assert (z["39"], z["3"], z["15"], f62(z)) == ("00", "960000", now_utc().strftime("%m%d"),
                                                  {"batch": "000001", "extra_n": "0"})
    d = sim.differences(TID)
    assert [(e["rid"], e["kind"], e["terminal_amount"], e["host_amount"]) for e in d] == [("R-2", "missing", 250, None)]
    assert len(sim.ledger) == money  # uploads and settling moved no money
    assert sim.stats["uploads"] == 3 and sim.stats["upload_repeats"] == 1
    # the 920000 repeat now gets the answer that closed the batch
    c.send(recon(20, 3, 1950, mti="0501"))
    assert (c.recv()["39"]) == "00"
    sim.stop()
    kinds = [json.loads(x)["type"] for x in open(path)]
    assert kinds.count("upload") == 3 and kinds.count("difference") == 1 and kinds.count("settlement") == 1


def test_extra_refund_named_in_closing_answer(sims, clients):
    sim = sims(faults=Faults(settle_extra=True))
    c = clients(sim)
    ok = day(c, [(1, "R-1", 1000), (2, "R-2", 250)])
    c.send(recon(30, 2, 1250))
    a = c.recv()
    assert a["39"] == "95" and f62(a)["diff"] == "1"
    invented = [r for r in sim.refunds.values() if r.invented]
    assert [r.rid for r in invented] == ["XTRA-000001-156"] and invented[0].batch == "000001"
    for rid, amount in (("R-1", 1000), ("R-2", 250)):
        c.send(upload(ok[rid], rid, amount))
        assert f62(c.recv())["host"] == "ok"
    c.send(recon(31, 2, 1250, phase="960000"))
    z = c.recv()
    assert z["39"] == "00" and f62(z) == {"batch": "000001", "extra": "XTRA-000001-156", "extra_n": "1"}
    d = sim.differences()
    assert [(e["rid"], e["kind"], e["terminal_amount"]) for e in d] == [("XTRA-000001-156", "extra", None)]
    assert d[0]["host_amount"] == int(invented[0].amount)
    # invented once: a second reconciliation of the same batch invents nothing more
    c.send(recon(32, 2, 1250))
    c.recv()
    assert sum(r.invented for r in sim.refunds.values()) == 1


def test_drop_answer_repeat_gets_the_same_answer(sims, clients):
    sim = sims(faults=Faults(settle_drop_answer=True))
    c = clients(sim)
    ok = day(c, [(1, "R-1", 1000)])  # refunds are not affected
    c.send(recon(40, 1, 999))
    assert c.frames(1, timeout=0.5) == []  # processed, answer dropped
    c.send(recon(40, 1, 999, mti="0501"))
    a = c.recv()
    assert (a["11"], a["39"], f62(a)["diff"]) == ("000040", "95", "1")
    c.send(recon(40, 1, 999, mti="0501"))
    assert c.recv()["62"] == a["62"]
    c.send(upload(ok["R-1"], "R-1", 1000))
    assert c.frames(1, timeout=0.5) == []
    c.send(upload(ok["R-1"], "R-1", 1000, mti="0321"))
    assert f62(c.recv())["host"] == "ok"
    c.send(recon(41, 1, 999, phase="960000"))
    assert c.frames(1, timeout=0.5) == []
    c.send(recon(41, 1, 999, phase="960000", mti="0501"))
    assert c.recv()["39"] == "00"
    st = sim.stats
    assert st["settle_dropped_answers"] == 3 and st["uploads"] == 1 and st["settled"] == 1


def test_upload_of_unknown_rid_or_other_amount_is_a_difference_not_money(sims, clients):
    sim = sims()
    c = clients(sim)
    ok = day(c, [(1, "R-1", 1000), (2, "R-2", 500, "000002")])
    money = list(sim.ledger)
    fake = dict(ok["R-1"], **{"11": "000009"})
    c.send(upload(fake, "R-NEVER", 800), upload(ok["R-1"], "R-1", 1200), upload(ok["R-2"], "R-2", 500))
    got = {f62(u)["rid"]: f62(u)["host"] for u in (c.recv(), c.recv(), c.recv())}
    assert got == {"R-NEVER": "missing", "R-1": "amount:1000", "R-2": "missing"}  # R-2 is in batch 2
    assert [(e["rid"], e["kind"], e["terminal_amount"], e["host_amount"]) for e in sim.differences()] == [
        ("R-NEVER", "missing", 800, None), ("R-1", "amount", 1200, 1000), ("R-2", "missing", 500, None)]
    assert sim.ledger == money and (TID, "R-NEVER") not in sim.refunds
    assert sim.batch(TID, "000001") == {"R-1": 1000}  # the upload changed nothing


def test_bad_settlement_requests_are_dropped(sims, clients):
    sim = sims()
    c = clients(sim)
    ok = day(c, [(1, "R-1", 1000)])
    good = recon(50, 1, 1000)
    bad = [dict(good, **{"3": "200000"}), dict(good, **{"62": "batch=000000"}),
           dict(good, **{"62": "batch=12345"}), dict(good, **{"62": "rid=R-1"}),
           dict(good, **{"62": "batch=000001;rid=bad"}), {k: v for k, v in good.items() if k != "86"},
           dict(good, **{"4": "000000001000"}),
           {k: v for k, v in upload(ok["R-1"], "R-1", 1000).items() if k != "37"},
           dict(upload(ok["R-1"], "R-1", 1000), **{"62": "rid=R-1;orrn=%s" % ORRN}),
           dict(upload(ok["R-1"], "R-1", 1000), **{"62": "rid=R-1;batch=000001"}),
           dict(upload(ok["R-1"], "R-1", 1000), **{"38": "12_456"})]
    raw74 = encode(good, KEY)
    i = raw74.index(b"0000000001" + b"0" * 12)  # field 74 then 86
    c.send_raw(b"".join(frame(encode(d, KEY)) for d in bad)
               + frame(raw74[:i] + b"00000000x1" + raw74[i + 10:]))
    c.send(good)
    a = c.recv()
    assert a["11"] == "000050" and a["39"] == "00"
    st = sim.stats
    assert st.get("invalid", 0) + st.get("decode_errors", 0) + st.get("bad_mac_in", 0) == len(bad) + 1
    assert st["invalid"] >= len(bad)
    assert st["settled"] == 1 and sim.differences() == []


def test_extra_list_fits_field_62():
    rids = ["R%031d" % i for i in range(100)]
    s = _f62_extra("000001", rids)
    assert len(s) <= 999 and s.startswith("batch=000001;extra=R") and s.endswith(";extra_n=100")
    named = dict(kv.split("=", 1) for kv in s.split(";"))["extra"].split(",")
    assert named == rids[:len(named)] and 25 <= len(named) < 100
    assert _f62_extra("000001", []) == "batch=000001;extra_n=0"


def test_command_line_settle_faults():
    from host_tools.hostsim import from_args, parse_args

    sim = from_args(parse_args(["--mac-key", "00", "--settle-fault", "missing:R-1", "--settle-fault",
                                "missing:R-2", "--settle-fault", "extra", "--settle-fault", "drop-answer"]))
    f = sim.faults
    assert (f.settle_missing, f.settle_extra, f.settle_drop_answer) == (["R-1", "R-2"], True, True)
    for bad in ("missing:", "missing:r-1", "lost:R-1", "extra:1", "drop"):
        with pytest.raises(SystemExit):
            from_args(parse_args(["--mac-key", "00", "--settle-fault", bad]))
    with pytest.raises(ValueError):
        Faults(settle_missing=["bad rid"]).check()
