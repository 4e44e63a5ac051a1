"""ECR link framing (firmware/refund/ecr.py, docs/ecr-link.md) on the real MicroPython
interpreter: the streaming parser fuzzed with hypothesis (random and mutated frames
never crash it and never yield a frame whose CRC is bad), the firmware parser against
the CPython one in refundctl (same frames, same counters), refundctl framing <->
firmware round trips, and ecr.serve over a tty with garbage, bad CRC, truncated,
oversized and malformed frames. REFUND_FUZZ_N raises the example count (default 150)."""
import json
import os
import select
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_tools import REPO, refundctl, vboard

FUZZ_N = int(os.environ.get("REFUND_FUZZ_N", "150"))
FUZZ = settings(max_examples=FUZZ_N, deadline=None, derandomize=not os.environ.get("REFUND_FUZZ_N"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
FIRMWARE = os.path.join(REPO, "firmware")


class Worker:
    """tests/mp/ecr_fuzz.py on MicroPython: one JSON line in, one JSON line out."""

    def __init__(self):
        env = dict(os.environ, MICROPYPATH=vboard.mp_path(FIRMWARE))
        self.p = subprocess.Popen([vboard.micropython(), "-X", "heapsize=512k",
                                   os.path.join(REPO, "tests", "mp", "ecr_fuzz.py")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def ask(self, **req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, "MicroPython worker died (exit %s)" % self.p.poll()
        res = json.loads(line)
        assert "exception" not in res, res
        return res

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


# ---- strategies --------------------------------------------------------------------------

KEYS = st.sampled_from(["cmd", "seq", "amount", "currency", "orrn", "op", "pin", "sup", "spin",
                        "dup", "rid", "from", "x_1"])
VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
REQS = st.dictionaries(KEYS, VALUES, min_size=1, max_size=8)
WELL = st.builds(lambda d, seq: dict(d, seq=seq), REQS, st.integers(1, 999999999))


def payload_of(d):
    return refundctl.encode(d)


@st.composite
def segments(draw):
    """One piece of a line: a good frame, a damaged frame, noise or a bogus header."""
    kind = draw(st.sampled_from(["good", "good", "flip", "cut", "insert", "noise", "big", "stxnoise"]))
    f = bytearray(refundctl.frame(payload_of(draw(REQS))))
    if kind == "flip":
        i = draw(st.integers(0, len(f) - 1))
        f[i] ^= draw(st.integers(1, 255))
    elif kind == "cut":
        f = f[:draw(st.integers(0, len(f) - 1))]
    elif kind == "insert":
        i = draw(st.integers(1, len(f) - 1))
        f[i:i] = draw(st.binary(min_size=1, max_size=4))
    elif kind == "noise":
        f = bytearray(draw(st.binary(max_size=40)))
    elif kind == "big":
        n = draw(st.integers(1025, 0xFFFF))
        f = bytearray((2, n >> 8, n & 0xFF)) + draw(st.binary(max_size=20))
    elif kind == "stxnoise":
        f = bytearray(draw(st.lists(st.sampled_from([0, 2, 3, 0x1C, 0x41, 0xFF]), max_size=30)))
    return kind, bytes(f)


def chunked(data, cuts):
    cuts = sorted(set(c % (len(data) + 1) for c in cuts))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return [c.hex() for c in out]


def cpython_parse(data):
    d = refundctl.Decoder()
    out = d.feed(data)
    while d.pending():
        out += d.flush()
    return out, d.stats


# ---- properties --------------------------------------------------------------------------

@FUZZ
@given(segs=st.lists(segments(), max_size=8), cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_parser_never_yields_a_bad_frame_and_recovers_every_good_one(worker, segs, cuts):
    data = b"".join(s for _k, s in segs)
    res = worker.ask(op="parse", chunks=chunked(data, cuts))
    frames = [bytes.fromhex(f) for f in res["frames"]]
    # Everything it hands out is a complete frame with a valid CRC present in the input.
    for p in frames:
        assert refundctl.frame(p) in data
    # Same frames and counters as the reference parser fed in one piece: chunking
    # does not matter and the two implementations agree.
    ref, stats = cpython_parse(data)
    assert frames == ref
    assert res["stats"] == stats
    assert res["pending"] == 0
    # Every intact good frame is recovered, in order, whatever noise surrounds it.
    want = [s[3:-5] for k, s in segs if k == "good"]
    it = iter(frames)
    assert all(any(w == f for f in it) for w in want), (want, frames)


@FUZZ
@given(payload=st.binary(max_size=200) | st.builds(
    lambda d, junk: payload_of(d) + junk, REQS, st.binary(max_size=6)))
def test_answer_never_raises_and_replies_only_with_a_known_seq(worker, payload):
    res = worker.ask(op="answer", payload=payload.hex())
    req = res["req"]
    if res["reply"] is None:
        assert req is None  # dropped: no usable seq
        return
    (rep,), _ = cpython_parse(bytes.fromhex(res["reply"]))
    rep = refundctl.decode(rep)
    assert rep["seq"].isdigit() and 1 <= len(rep["seq"]) <= 9
    if req is None:
        assert rep["err"] == "bad_request"  # seq known, rest malformed: a clear refusal
    else:
        assert rep["seq"] == req["seq"] and rep["state"] == "queued"
        assert refundctl.decode(payload) == req  # well formed: the handler saw all of it


@FUZZ
@given(req=WELL)
def test_refundctl_frames_round_trip_through_the_firmware(worker, req):
    payload = payload_of(req)
    res = worker.ask(op="echo", payload=payload.hex())
    assert res["err"] is None
    (back,), _ = cpython_parse(bytes.fromhex(res["frame"]))
    assert refundctl.decode(back) == refundctl.decode(payload) == {k: str(v) for k, v in req.items()}
    assert bytes.fromhex(res["frame"]) == refundctl.frame(back)


def test_examples_from_the_spec_match_the_bytes_documented(worker):
    # docs/ecr-link.md, "Examples": the exact frames.
    req = {"cmd": "QUERY", "seq": 42, "rid": "K7Q2-000017"}
    f = refundctl.frame(refundctl.encode(req))
    doc = open(os.path.join(REPO, "docs", "ecr-link.md")).read()
    assert " ".join("%02X" % b for b in f) in " ".join(doc.split())
    res = worker.ask(op="echo", payload=refundctl.encode(req).hex())
    assert bytes.fromhex(res["frame"]) == f


# ---- ecr.serve over a tty ----------------------------------------------------------------

SERVE = r"""
import os, asyncio, board
from refund import ecr
f = board._open_tty("ecr", os.getenv("ECR_TTY"))
def log(tag, msg, level="INFO"):
    print("LOG", level, tag, msg)
async def handler(req):
    await asyncio.sleep_ms(1)
    if req.get("cmd") == "BOOM":
        raise ValueError("handler bug")
    return {"state": "queued", "rid": "TEST-%06d" % int(req["seq"])}
st = {}
async def main():
    t = asyncio.create_task(ecr.serve(f, handler, log, stats=st))
    while True:
        await asyncio.sleep_ms(100)
        if os.getenv("ECR_DONE") and st.get("parser", {}).get("frames", 0) >= int(os.getenv("ECR_DONE")):
            await asyncio.sleep_ms(300)
            print("STATS", st["parser"])
            t.cancel()
            return
asyncio.run(main())
"""


def test_serve_over_a_tty_drops_bad_frames_and_refuses_malformed_ones(tmp_path):
    import tty

    master, slave = os.openpty()
    tty.setraw(master)
    env = dict(os.environ, MICROPYPATH=vboard.mp_path(FIRMWARE), ECR_TTY=os.ttyname(slave),
               ECR_DONE="5")
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    p = subprocess.Popen([vboard.micropython(), str(script)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    dec = refundctl.Decoder()

    def send(b, settle=0.15):
        os.write(master, b)
        time.sleep(settle)

    def replies(timeout=3.0, want=1):
        got, end = [], time.time() + timeout
        while time.time() < end and len(got) < want:
            r, _, _ = select.select([master], [], [], 0.05)
            if r:
                got += [refundctl.decode(x) for x in dec.feed(os.read(master, 4096))]
        return got

    try:
        time.sleep(0.3)
        good = refundctl.frame(refundctl.encode({"cmd": "QUERY", "seq": 1, "rid": "A"}))
        send(b"\xff\x00noise" + good[:5])  # noise, then a frame cut short
        time.sleep(0.7)  # the line goes quiet: the partial frame is truncated
        bad = bytearray(refundctl.frame(refundctl.encode({"cmd": "QUERY", "seq": 2})))
        bad[6] ^= 1
        send(bytes(bad) + bytes((2, 0xFF, 0xFF)) + b"x" * 50)  # bad CRC, oversized header
        send(refundctl.frame(refundctl.encode({"cmd": "QUERY", "seq": 3})))
        assert [r["seq"] for r in replies()] == ["3"]
        # bogus length hiding a good frame: answered once the line goes quiet
        send(bytes((2, 0x01, 0x00)) + refundctl.frame(refundctl.encode({"cmd": "LIST", "seq": 4})))
        r = replies(timeout=2.0)
        assert [x["seq"] for x in r] == ["4"]
        # malformed payload with a readable seq: a clear refusal
        send(refundctl.frame(b"seq=5\x1cbroken\x1cseq=6"))
        r = replies()
        assert r[0]["seq"] == "5" and r[0]["err"] == "bad_request", r
        # no usable seq: dropped (no reply), then the handler raising: 'internal'
        send(refundctl.frame(b"cmd=LIST"))
        send(refundctl.frame(refundctl.encode({"cmd": "BOOM", "seq": 7})))
        r = replies()
        assert len(r) == 1 and r[0]["seq"] == "7" and r[0]["err"] == "internal", r
        out, _ = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)
    stats = [l for l in out.splitlines() if l.startswith("STATS")]
    assert stats, out
    s = eval(stats[0][6:])  # a MicroPython dict repr
    assert s["frames"] == 5 and s["bad_crc"] == 1 and s["oversized"] == 1 and s["truncated"] >= 2, s
    assert "Traceback" not in out and "handler bug" in out
