"""The host simulator (host_tools/hostsim.py) against a CPython test client built on
pyiso8583, over real TCP on 127.0.0.1 (ephemeral ports).

Every fault option has a test showing it takes effect; the faulted messages are
predicted with HostSim.roll (a pure function of the seed and the message identity),
so each test also shows the fault is deterministic under --seed.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import iso8583
import pytest
from iso8583.specs import default_ascii as SPEC

from host_tools import REPO
from host_tools.hostsim import Faults, HostSim, encode, frame, mac_of, verify

KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
TID = "TERM0001"
MID = "MERCHANT0000001"
ORRN = "S00000000001"


def refund(stan, rid, amount=1234, orrn=ORRN, mti="0200", currency="156", tid=TID):
    return {"t": mti, "3": "200000", "4": "%012d" % amount, "7": "1105120000",
            "11": "%06d" % stan, "12": "120000", "13": "1105", "41": tid, "42": MID,
            "49": currency, "62": "rid=%s;orrn=%s" % (rid, orrn)}


def reversal(stan, rid, orig_stan, amount=1234, mti="0420"):
    return {"t": mti, "3": "200000", "4": "%012d" % amount, "7": "1105120500",
            "11": "%06d" % stan, "41": TID, "42": MID, "49": "156", "62": "rid=%s" % rid,
            "90": "0200%06d1105120000" % orig_stan + "0" * 22}


def echo(stan, tid=TID):
    return {"t": "0800", "7": "1105120000", "11": "%06d" % stan, "41": tid, "70": "301"}


class Client:
    def __init__(self, port, key=KEY):
        self.key = key
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, *docs):
        self.sock.sendall(b"".join(frame(encode(d, self.key)) for d in docs))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk

    def recv_raw(self, timeout=2.0):
        """One frame's message bytes; TimeoutError, or EOFError(partial bytes)."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        n = int.from_bytes(self.buf[:2], "big")
        self._fill(2 + n, deadline)
        body, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
        return body

    def recv(self, timeout=2.0):
        """One answer decoded; asserts the MAC verifies."""
        raw = self.recv_raw(timeout)
        doc, _ = iso8583.decode(bytearray(raw), SPEC)
        assert verify(self.key, raw, doc), doc
        return doc

    def frames(self, n, timeout=2.0, grace=0.15):
        """Up to n frames (raw), then wait `grace` more to show no further one comes."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.recv_raw(max(0.01, deadline - time.monotonic())))
            except (TimeoutError, EOFError):
                return out
        try:
            out.append(self.recv_raw(grace))
        except (TimeoutError, EOFError):
            pass
        return out


def decoded(raw, key=KEY):
    doc, _ = iso8583.decode(bytearray(raw), SPEC)
    return doc, verify(key, raw, doc)


@pytest.fixture
def sim_factory(tmp_path):
    sims = []

    def make(**kw):
        kw.setdefault("seed", 7)
        s = HostSim(KEY, **kw).start()
        sims.append(s)
        return s

    yield make
    for s in sims:
        s.stop()


@pytest.fixture
def client_factory():
    clients = []

    def make(sim, key=KEY):
        c = Client(sim.port, key)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def predicted(sim, kind, p, idents):
    return {i for i, ident in idents.items() if sim.roll(kind, ident) < p}


# ---- host duties ----

def test_approval_carries_37_38_and_echoes_request(sim_factory, client_factory, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    sim = sim_factory(ledger_path=str(ledger))
    c = client_factory(sim)
    c.send(refund(1, "R-1", 2500))
    a = c.recv()
    assert a["t"] == "0210" and a["39"] == "00"
    assert len(a["37"]) == 12 and len(a["38"]) == 6
    assert (a["4"], a["11"], a["41"], a["49"], a["62"]) == ("000000002500", "000001", TID, "156", "rid=R-1")
    assert "64" in a and "1" not in a
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert len(lines) == 1
    e = lines[0]
    assert (e["type"], e["rid"], e["amount"], e["rrn"], e["auth"], e["tid"]) == ("refund", "R-1", 2500, a["37"], a["38"], TID)
    assert e["time"].endswith("Z")


def test_idempotent_repeat_same_answer_one_ledger_line(sim_factory, client_factory, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    sim = sim_factory(ledger_path=str(ledger))
    c = client_factory(sim)
    c.send(refund(5, "R-5"))
    first = c.recv()
    c.send(refund(5, "R-5", mti="0201"), refund(5, "R-5", mti="0201"))
    again = [c.recv(), c.recv()]
    # a 0200 with the same rid on another connection is also a repeat
    c2 = client_factory(sim)
    c2.send(refund(5, "R-5"))
    again.append(c2.recv())
    for a in again:
        assert (a["37"], a["38"], a["39"]) == (first["37"], first["38"], first["39"])
    assert len(ledger.read_text().splitlines()) == 1
    assert sim.stats["repeats"] == 3 and sim.stats["approved"] == 1


def test_same_rid_other_content_gets_94(sim_factory, client_factory):
    sim = sim_factory()
    c = client_factory(sim)
    c.send(refund(1, "R-1", 1000))
    assert c.recv()["39"] == "00"
    c.send(refund(1, "R-1", 1001, mti="0201"), refund(1, "R-1", 1000, orrn="S00000000002", mti="0201"),
           refund(1, "R-1", 1000, currency="978", mti="0201"))
    assert [c.recv()["39"] for _ in range(3)] == ["94", "94", "94"]
    c.send(refund(1, "R-1", 1000, mti="0201"))
    assert c.recv()["39"] == "00"  # the kept answer is untouched
    assert len(sim.ledger) == 1
    # another terminal may use the same rid: idempotency is per (terminal, rid)
    c.send(refund(1, "R-1", 700, tid="TERM0002"))
    assert c.recv()["39"] == "00"
    assert len(sim.ledger) == 2


def test_reversal_nets_to_zero_and_repeats_are_harmless(sim_factory, client_factory):
    sim = sim_factory()
    c = client_factory(sim)
    c.send(refund(3, "R-3", 900))
    assert c.recv()["39"] == "00"
    c.send(reversal(4, "R-3", 3, 900))
    a = c.recv()
    assert (a["t"], a["39"], a["11"], a["62"]) == ("0430", "00", "000004", "rid=R-3")
    c.send(reversal(4, "R-3", 3, 900, mti="0421"), reversal(9, "R-UNKNOWN", 8))
    assert [(x["t"], x["39"]) for x in (c.recv(), c.recv())] == [("0430", "00")] * 2
    assert [e["type"] for e in sim.ledger] == ["refund", "reversal"]
    assert sim.net() == {"R-3": 0}
    # a repeat of the reversed refund moves no money again
    c.send(refund(3, "R-3", 900, mti="0201"))
    assert c.recv()["39"] == "00"
    assert len(sim.ledger) == 2


def test_echo_answered_with_field_128(sim_factory, client_factory):
    sim = sim_factory()
    c = client_factory(sim)
    c.send(echo(77))
    raw = c.recv_raw()
    a, ok = decoded(raw)
    assert ok and a["t"] == "0810" and a["39"] == "00" and a["70"] == "301" and a["11"] == "000077"
    assert "128" in a and "64" not in a
    assert raw[-16:] == mac_of(KEY, raw[:-16])


def test_sales_file_declines_25_and_13(tmp_path, client_factory):
    sales = tmp_path / "sales.json"
    sales.write_text(json.dumps({ORRN: 1000, "S00000000002": {"amount": 50}}))
    from host_tools.hostsim import from_args, parse_args

    sim = from_args(parse_args(["--listen", "127.0.0.1:0", "--mac-key", KEY.hex(),
                                "--sales", str(sales), "--seed", "1"])).start()
    try:
        c = client_factory(sim)
        c.send(refund(1, "R-1", 100, orrn="S00000000999"))
        assert c.recv()["39"] == "25"
        c.send(refund(2, "R-2", 600), refund(3, "R-3", 500), refund(4, "R-4", 400))
        assert [c.recv()["39"] for _ in range(3)] == ["00", "13", "00"]
        c.send(refund(5, "R-5", 1))
        assert c.recv()["39"] == "13"
        c.send(reversal(6, "R-2", 2, 600))
        assert c.recv()["39"] == "00"
        c.send(refund(7, "R-7", 600))
        assert c.recv()["39"] == "00"
        c.send(refund(3, "R-3", 500, mti="0201"))  # a declined refund stays declined
        assert c.recv()["39"] == "13"
        assert sum(e["delta"] for e in sim.ledger) == 1000
    finally:
        sim.stop()


def test_bad_mac_is_logged_and_dropped(sim_factory, client_factory, caplog):
    sim = sim_factory()
    c = client_factory(sim)
    wrong = bytes(32)
    c.sock.sendall(frame(encode(refund(1, "R-1"), wrong)))
    raw = bytearray(encode(echo(2), KEY))
    raw[37] ^= 1  # a changed digit in field 7 under a MAC computed before
    c.send_raw(frame(bytes(raw)))
    assert c.frames(1, timeout=0.3, grace=0) == []
    assert sim.stats["bad_mac_in"] == 2 and sim.ledger == []
    c.send(refund(1, "R-1"))  # the connection is kept
    assert c.recv()["39"] == "00"
    assert KEY.hex() not in caplog.text and KEY.hex().upper() not in caplog.text


def test_undecodable_and_invalid_requests_dropped(sim_factory, client_factory):
    sim = sim_factory()
    c = client_factory(sim)
    bad_field = refund(1, "R-1")
    bad_field["3"] = "000000"
    no_orrn = refund(2, "R-2")
    no_orrn["62"] = "rid=R-2"
    c.send_raw(frame(b"junk") + frame(b"0210" + b"0" * 16) + frame(encode(bad_field, KEY))
               + frame(encode(no_orrn, KEY)))
    c.send(echo(3))
    assert c.recv()["11"] == "000003"
    st = sim.stats
    assert st["decode_errors"] + st["invalid"] == 4 and st["requests"] == 1


@pytest.mark.parametrize("length", [0, 4097, 65535])
def test_bad_frame_length_closes_connection(sim_factory, client_factory, length):
    sim = sim_factory()
    c = client_factory(sim)
    c.send_raw(length.to_bytes(2, "big") + b"0800")
    with pytest.raises(EOFError):
        c.recv_raw(2.0)
    assert sim.stats["frame_errors"] == 1
    c2 = client_factory(sim)  # the host keeps running
    c2.send(echo(1))
    assert c2.recv()["39"] == "00"


def test_outstanding_requests_matched_by_stan(sim_factory, client_factory):
    sim = sim_factory(faults=Faults(latency_ms=60, jitter_ms=50))
    c = client_factory(sim)
    c.send(*[refund(i, "R-%d" % i, 100 + i) for i in range(1, 11)])
    got = {}
    for _ in range(10):
        a = c.recv()
        got[a["11"]] = a
    assert sorted(got) == ["%06d" % i for i in range(1, 11)]
    for stan, a in got.items():
        assert int(a["4"]) == 100 + int(stan) and a["62"] == "rid=R-%d" % int(stan)
    assert list(got) != sorted(got)  # jitter reordered them (fixed by the seed)


def test_ledger_survives_restart(tmp_path, client_factory):
    ledger = str(tmp_path / "l.jsonl")
    with HostSim(KEY, ledger_path=ledger, seed=1) as sim:
        c = client_factory(sim)
        c.send(refund(1, "R-1"), refund(2, "R-2"), reversal(3, "R-2", 2))
        first = c.recv()
        c.recv(), c.recv()
    with HostSim(KEY, ledger_path=ledger, seed=1) as sim:
        c = client_factory(sim)
        c.send(refund(1, "R-1", mti="0201"), reversal(3, "R-2", 2, mti="0421"))
        a = c.recv()
        assert (a["37"], a["38"]) == (first["37"], first["38"])
        c.recv()
        assert len(sim.ledger) == 3
    assert len(open(ledger).read().splitlines()) == 3


# ---- faults, each predicted from the seed ----

def _echo_idents(sim, n):
    return {i: sim.ident(TID, "%06d" % i, "0800") for i in range(1, n + 1)}


def _stans(raws):
    return [decoded(r)[0]["11"] for r in raws]


def test_fault_drop_request(sim_factory, client_factory):
    sim = sim_factory(seed=11, faults=Faults(drop_request=0.5))
    idents = _echo_idents(sim, 20)
    dropped = predicted(sim, "drop_request", 0.5, idents)
    assert 0 < len(dropped) < 20
    c = client_factory(sim)
    c.send(*[echo(i) for i in idents])
    raws = c.frames(20 - len(dropped), timeout=2)
    assert sorted(int(s) for s in _stans(raws)) == sorted(set(idents) - dropped)
    assert sim.stats["dropped_requests"] == len(dropped)


def test_fault_drop_answer_after_processing(sim_factory, client_factory):
    sim = sim_factory(seed=12, faults=Faults(drop_answer=0.4))
    idents = {i: sim.ident(TID, "%06d" % i, "0200") for i in range(1, 13)}
    dropped = predicted(sim, "drop_answer", 0.4, idents)
    assert 0 < len(dropped) < 12
    c = client_factory(sim)
    c.send(*[refund(i, "R-%d" % i) for i in idents])
    raws = c.frames(12 - len(dropped))
    assert sorted(int(s) for s in _stans(raws)) == sorted(set(idents) - dropped)
    assert len(sim.ledger) == 12  # the money moved for every one: the unknown outcome
    # the terminal's 0201 repeats of the unanswered ones get the kept answers
    rep = {i: sim.ident(TID, "%06d" % i, "0201") for i in dropped}
    lost_again = predicted(sim, "drop_answer", 0.4, rep)
    c.send(*[refund(i, "R-%d" % i, mti="0201") for i in dropped])
    raws = c.frames(len(dropped) - len(lost_again))
    assert sorted(int(s) for s in _stans(raws)) == sorted(dropped - lost_again)
    assert all(decoded(r)[0]["39"] == "00" for r in raws)
    assert len(sim.ledger) == 12


def test_fault_close_mid_frame(sim_factory, client_factory):
    sim = sim_factory(seed=13, faults=Faults(close_mid_frame=0.5))
    idents = _echo_idents(sim, 10)
    cut = predicted(sim, "close_mid_frame", 0.5, idents)
    assert 0 < len(cut) < 10
    for i in idents:
        c = client_factory(sim)
        c.send(echo(i))
        if i in cut:
            with pytest.raises(EOFError) as e:
                c.recv_raw()
            partial = e.value.args[0]
            n = int.from_bytes(partial[:2], "big")
            assert 0 < len(partial) - 2 < n, partial
        else:
            assert c.recv()["11"] == "%06d" % i
    assert sim.stats["closed_mid_frame"] == len(cut)


def test_fault_garbage(sim_factory, client_factory):
    sim = sim_factory(seed=14, faults=Faults(garbage=0.5))
    idents = _echo_idents(sim, 10)
    junk = predicted(sim, "garbage", 0.5, idents)
    assert 0 < len(junk) < 10
    c = client_factory(sim)
    c.send(*[echo(i) for i in idents])
    raws = c.frames(10 + len(junk))
    good, bad = [], 0
    for r in raws:
        try:
            doc, ok = decoded(r)
        except (iso8583.DecodeError, KeyError):
            bad += 1
            continue
        assert ok
        good.append(int(doc["11"]))
    assert bad == len(junk) and sorted(good) == list(idents)


def test_fault_bad_mac(sim_factory, client_factory):
    sim = sim_factory(seed=15, faults=Faults(bad_mac=0.5))
    idents = _echo_idents(sim, 10)
    wrong = predicted(sim, "bad_mac", 0.5, idents)
    assert 0 < len(wrong) < 10
    c = client_factory(sim)
    c.send(*[echo(i) for i in idents])
    raws = c.frames(10)
    assert len(raws) == 10
    assert {int(decoded(r)[0]["11"]) for r in raws if not decoded(r)[1]} == wrong


def test_fault_duplicate_answer(sim_factory, client_factory):
    sim = sim_factory(seed=16, faults=Faults(duplicate_answer=0.5))
    idents = _echo_idents(sim, 10)
    dup = predicted(sim, "duplicate_answer", 0.5, idents)
    assert 0 < len(dup) < 10
    c = client_factory(sim)
    c.send(*[echo(i) for i in idents])
    stans = [int(s) for s in _stans(c.frames(10 + len(dup)))]
    assert sorted(stans) == sorted(list(idents) + list(dup))


def test_fault_decline(sim_factory, client_factory):
    sim = sim_factory(seed=17, faults=Faults(decline=[("05", 0.5)]))
    rids = {i: "%s|R-%d" % (TID, i) for i in range(1, 13)}
    declined = predicted(sim, "decline05", 0.5, rids)
    assert 0 < len(declined) < 12
    c = client_factory(sim)
    c.send(*[refund(i, "R-%d" % i) for i in rids])
    got = {}
    for _ in rids:
        a = c.recv()
        got[int(a["11"])] = a
    assert {i for i, a in got.items() if a["39"] == "05"} == declined
    assert all(got[i]["39"] == "00" for i in set(rids) - declined)
    assert all("38" not in got[i] for i in declined)
    assert sorted(e["rid"] for e in sim.ledger) == sorted("R-%d" % i for i in set(rids) - declined)
    d = min(declined)
    c.send(refund(d, "R-%d" % d, mti="0201"))  # the decline is the kept answer
    a = c.recv()
    assert (a["39"], a["37"]) == ("05", got[d]["37"])


def test_fault_unavailable_period(sim_factory, client_factory):
    sim = sim_factory(faults=Faults(unavailable=[("91", 0.0, 0.4)]))
    c = client_factory(sim)
    c.send(refund(1, "R-1"), echo(2))
    a, e = c.recv(), c.recv()
    assert (a["39"], "37" in a) == ("91", False) and e["39"] == "00"
    assert sim.ledger == []
    time.sleep(max(0.0, 0.45 - (time.monotonic() - sim._t0)))
    c.send(refund(1, "R-1", mti="0201"))
    a = c.recv()
    assert a["39"] == "00" and len(sim.ledger) == 1


def test_fault_latency_distribution(sim_factory, client_factory):
    sim = sim_factory(seed=18, faults=Faults(latency_ms=150, jitter_ms=100))
    idents = _echo_idents(sim, 6)
    delay = {i: 150 + (2 * sim.roll("latency", ident) - 1) * 100 for i, ident in idents.items()}
    c = client_factory(sim)
    t0 = time.monotonic()
    c.send(*[echo(i) for i in idents])
    order = []
    for _ in idents:
        a = c.recv()
        i = int(a["11"])
        assert (time.monotonic() - t0) * 1000 >= delay[i] - 5, (i, delay[i])
        order.append(i)
    expect = sorted(idents, key=lambda i: delay[i])
    for a, b in zip(expect, expect[1:]):  # clearly separated delays keep their order
        if delay[b] - delay[a] > 40:
            assert order.index(a) < order.index(b), (order, delay)


def test_fault_out_of_order(sim_factory, client_factory):
    sim = sim_factory(faults=Faults(out_of_order=4))
    c = client_factory(sim)
    c.send(*[echo(i) for i in range(1, 9)])
    assert [int(s) for s in _stans(c.frames(8))] == [4, 3, 2, 1, 8, 7, 6, 5]
    c.send(echo(9), echo(10))  # an incomplete window is flushed after the hold time
    assert [int(s) for s in _stans(c.frames(2))] == [10, 9]


def test_fault_slow_accept(sim_factory, client_factory):
    sim = sim_factory(faults=Faults(slow_accept_ms=300))
    t0 = time.monotonic()
    c = client_factory(sim)
    c.send(echo(1))
    assert c.recv()["39"] == "00"
    assert time.monotonic() - t0 >= 0.29


def test_fault_outage(sim_factory, client_factory):
    sim = sim_factory(faults=Faults(outage=[(0.5, 0.5)]))
    c = client_factory(sim)
    c.send(echo(1))
    assert c.recv()["39"] == "00"
    time.sleep(max(0.0, 0.6 - (time.monotonic() - sim._t0)))
    with pytest.raises(EOFError):  # the open connection was closed
        c.recv_raw(1.0)
    with pytest.raises(OSError):  # and nobody listens
        Client(sim.port)
    time.sleep(max(0.0, 1.1 - (time.monotonic() - sim._t0)))
    c2 = client_factory(sim)
    c2.send(echo(2))
    assert c2.recv()["39"] == "00"
    assert sim.stats["outages"] == 1


def test_same_seed_same_faults_other_seed_other_faults(client_factory):
    faults = dict(drop_request=0.2, drop_answer=0.2, bad_mac=0.2, duplicate_answer=0.2)

    def run(seed):
        with HostSim(KEY, seed=seed, faults=Faults(**faults)) as sim:
            c = client_factory(sim)
            c.send(*[refund(i, "R-%d" % i) for i in range(1, 21)])
            raws = c.frames(40, timeout=0.6, grace=0)
            out = sorted((decoded(r)[0]["11"], decoded(r)[1]) for r in raws)
            return out, sorted(e["rid"] for e in sim.ledger)

    a, b, other = run(5), run(5), run(6)
    assert a == b
    assert a != other


# ---- command line ----

def test_command_line_runs_and_stops_cleanly(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "host_tools.hostsim", "--listen", "127.0.0.1:0",
                          "--mac-key", KEY.hex(), "--ledger", str(ledger), "--seed", "3",
                          "--latency-ms", "5,2", "--decline", "51:0", "--unavailable", "96:100:1",
                          "--outage", "100:1", "--out-of-order", "--slow-accept", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True)
    try:
        first = json.loads(p.stdout.readline())
        assert first["seed"] == 3
        port = int(first["listen"].rsplit(":", 1)[1])
        c = Client(port)
        c.send(refund(1, "R-1"))
        assert c.recv()["39"] == "00"
        c.close()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["ledger_lines"] == 1
    assert len(ledger.read_text().splitlines()) == 1
    assert KEY.hex() not in out + err


def test_command_line_rejects_bad_options():
    from host_tools.hostsim import from_args, parse_args

    with pytest.raises(SystemExit):
        parse_args(["--mac-key", "00", "--drop-answer", "1.5"])
    with pytest.raises(SystemExit):
        from_args(parse_args(["--mac-key", "00", "--unavailable", "05:0:1"]))
    with pytest.raises(SystemExit):
        from_args(parse_args(["--mac-key", "zz"]))
