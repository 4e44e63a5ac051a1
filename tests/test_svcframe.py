"""Service-link frames (docs/service-link.md "Frames"): the firmware codec
(firmware/refund/svcframe.py) on the real MicroPython interpreter against the CPython
one (host_tools/svclink.py): round trips both ways, every escaped byte value, no 0x03
ever on the wire, bad CRC / truncated / oversized / garbage / Ctrl-C inside a frame,
the 1 s limit, and a hypothesis fuzz on which both decoders must agree byte for byte.
REFUND_FUZZ_N sets the example count (default 300; `make soak` 10,000)."""
import json
import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_tools import REPO, svclink, vboard

FUZZ_N = int(os.environ.get("REFUND_FUZZ_N", "300"))
FUZZ = settings(max_examples=FUZZ_N, deadline=None, derandomize=not os.environ.get("REFUND_FUZZ_N"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
E = sorted(svclink.ESCAPED)


class Worker:
    def __init__(self, interp="64"):
        from conftest import mp_env_path, mp_exe

        env = dict(os.environ, MICROPYPATH=mp_env_path(interp))
        self.p = subprocess.Popen([mp_exe(interp), "-X", "heapsize=512k",
                                   os.path.join(REPO, "tests", "mp", "svc_worker.py")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def ask(self, **req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, "MicroPython worker died (exit %s)" % self.p.poll()
        res = json.loads(line)
        assert "exception" not in res, res
        return res

    def decode(self, data, max_len=512, how="push", cuts=()):
        return self.ask(op="decode", chunks=chunked(data, cuts), max=max_len, how=how)

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def chunked(data, cuts=()):
    cuts = sorted(set(c % (len(data) + 1) for c in cuts))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c].hex())
        prev = c
    return out


def host_decode(data, max_len=512):
    d = svclink.Decoder(max_len=max_len)
    return d.feed(data), d.stats, d


def raw_frame(payload, length=None, crc=None):
    """A frame with a chosen LEN or CRC (to build damaged ones)."""
    body = (len(payload) if length is None else length).to_bytes(2, "big") + payload
    c = svclink.binascii.crc32(body) & 0xFFFFFFFF if crc is None else crc
    return bytes((0x1E,)) + svclink.escape(body + c.to_bytes(4, "big"))


# ---- round trips -------------------------------------------------------------------------

def test_every_byte_value_is_escaped_or_passed_and_no_control_byte_reaches_the_wire(worker):
    payload = bytes(range(256)) * 2
    f = svclink.frame(payload)
    assert f[0] == 0x1E and 0x1E not in f[1:] and 0x03 not in f
    i = 1
    while i < len(f):  # every byte of E appears only as the second byte of a DLE pair
        if f[i] == 0x10:
            assert f[i + 1] ^ 0x20 in svclink.ESCAPED
            i += 2
        else:
            assert f[i] not in svclink.ESCAPED, hex(f[i])
            i += 1
    enc = worker.ask(op="encode", parts=[payload.hex()], scratch=512)
    assert bytes.fromhex(enc["frame"]) == f  # the firmware writes the very same bytes
    for how in ("push", "feed", "want"):
        res = worker.decode(f, max_len=512, how=how)
        assert [bytes.fromhex(x) for x in res["frames"]] == [payload], how
        assert res["stats"]["frames"] == 1 and not res["in_frame"]
    assert host_decode(f)[0] == [payload]


@pytest.mark.parametrize("b", E)
def test_each_escaped_byte_alone_and_in_runs(worker, b):
    payload = bytes((b,)) + b"x" + bytes((b, b, b))
    f = svclink.frame(payload)
    assert bytes((b,)) not in f[1:] or b == 0x10
    assert [bytes.fromhex(x) for x in worker.decode(f)["frames"]] == [payload]


@FUZZ
@given(parts=st.lists(st.binary(max_size=700), max_size=5), scratch=st.integers(16, 600))
def test_firmware_chunks_decode_on_the_host(worker, parts, scratch):
    payload = b"".join(parts)
    if len(payload) > 2048:
        payload = payload[:2048]
        parts = [payload]
    res = worker.ask(op="encode", parts=[p.hex() for p in parts], scratch=scratch)
    wire = bytes.fromhex(res["frame"])
    assert all(0 < n <= scratch for n in res["sizes"])
    assert wire == svclink.frame(payload)
    frames, stats, _ = host_decode(wire, max_len=2048)
    assert frames == [payload] and stats["frames"] == 1


@FUZZ
@given(payload=st.binary(max_size=512), cuts=st.lists(st.integers(0, 2000), max_size=5),
       how=st.sampled_from(["push", "feed", "want"]))
def test_host_frames_decode_on_the_firmware(worker, payload, cuts, how):
    f = svclink.frame(payload)
    res = worker.decode(b"log line\n" + f + b"more text\n" + f, how=how, cuts=cuts)
    assert [bytes.fromhex(x) for x in res["frames"]] == [payload, payload]
    assert not res["in_frame"] and res["breaks"] == 0


def test_encode_into_fits_or_refuses(worker):
    p = bytes(range(256))
    res = worker.ask(op="encode_into", payload=p.hex(), out=2 * len(p) + 13)
    assert bytes.fromhex(res["frame"]) == svclink.frame(p)
    assert "error" in worker.ask(op="encode_into", payload=p.hex(), out=100)


def test_want_never_reads_past_the_end_of_a_frame(worker):
    p = b'{"id":7,"cmd":"info"}'
    f = svclink.frame(p) * 3
    res = worker.decode(f, how="want")
    assert [bytes.fromhex(x) for x in res["frames"]] == [p] * 3
    # 1 until LEN is known, then the unescaped bytes still missing
    # (marker, DLE + escaped 0x00, 0x15: LEN is known after 4 raw bytes)
    assert res["wants"][:5] == [1, 1, 1, 1, len(p) + 4]


def test_decoding_allocates_per_frame_not_per_byte(worker):
    small = worker.ask(op="alloc", frame=svclink.frame(b"a" * 16).hex())
    big = worker.ask(op="alloc", frame=svclink.frame(bytes(range(256)) * 8).hex())
    assert big["frames"] == 2 and big["alloc"] <= small["alloc"] + 32, (small, big)


# ---- damage -----------------------------------------------------------------------------

GOOD = b'{"id":1,"cmd":"status"}'


@pytest.mark.parametrize("bad,key", [
    (raw_frame(GOOD, crc=0x12345678), "bad_crc"),
    (svclink.frame(GOOD)[:9], "truncated"),               # the next 0x1E cuts it short
    (raw_frame(b"x" * 513), "oversized"),
    (raw_frame(b"x" * 600, length=600)[:40], "oversized"),  # dropped as soon as LEN is read
    (svclink.frame(GOOD)[:6] + b"\x03" + svclink.frame(GOOD)[6:], "bad_byte"),  # Ctrl-C inside
    (svclink.frame(GOOD)[:6] + b"\x01\x02\x04\x05\x11\x13" + svclink.frame(GOOD)[6:], "bad_byte"),
])
def test_a_damaged_frame_is_dropped_counted_and_the_next_one_recovered(worker, bad, key):
    data = b"12 INFO app: text\n" + bad + svclink.frame(GOOD)
    res = worker.decode(data)
    assert [bytes.fromhex(x) for x in res["frames"]] == [GOOD]
    assert res["stats"][key] == 1 and res["stats"]["frames"] == 1
    assert sum(res["stats"].values()) == 2, res["stats"]
    assert res["breaks"] == 0  # a 0x03 inside a frame is a frame error, not a Ctrl-C
    frames, stats, _ = host_decode(data)
    assert frames == [GOOD] and stats == res["stats"]


def test_ctrl_c_bytes_in_a_damaged_frame_are_not_a_break_until_it_ends(worker):
    f = svclink.frame(b"y" * 40)
    data = f[:10] + b"\x03" + f[10:20] + b"\x03\x03" + f[20:]
    res = worker.decode(data)
    assert res["breaks"] == 0 and res["stats"]["bad_byte"] == 1 and not res["in_frame"]
    # after the damaged frame's announced end, a Ctrl-C is a technician's again
    res = worker.decode(data + b"\r\x03")
    assert res["breaks"] == 1


@pytest.mark.parametrize("how", ["push", "feed", "want"])
def test_ctrl_c_between_frames_is_a_break(worker, how):
    res = worker.decode(svclink.frame(GOOD) + b"\r\x03\r\x01" + svclink.frame(GOOD), how=how)
    assert res["breaks"] == 1 and len(res["frames"]) == 2


def test_a_frame_open_for_more_than_a_second_is_dropped(worker):
    f = svclink.frame(GOOD)
    res = worker.ask(op="stale", head=f[:8].hex(), ms=1150, tail=f.hex())
    assert res["before"] is True and res["break"] is True
    assert res["stats"]["truncated"] == 1 and [bytes.fromhex(x) for x in res["frames"]] == [GOOD]
    res = worker.ask(op="stale", head=f[:8].hex(), ms=200, tail=b"".hex())
    assert res["break"] is False and res["stats"]["truncated"] == 0


def test_host_decoder_keeps_text_and_expires_stale_frames():
    t = [0.0]
    d = svclink.Decoder(clock=lambda: t[0])
    f = svclink.frame(GOOD)
    assert d.feed(b"boot ok\n" + f[:5]) == [] and d.in_frame
    t[0] = 1.5
    assert d.feed(b"") == [] and not d.in_frame and d.stats["truncated"] == 1
    assert d.feed(b"more\n" + f) == [GOOD]
    assert bytes(d.text) == b"boot ok\nmore\n"


# ---- fuzz: the two decoders agree on anything ---------------------------------------------

@st.composite
def segments(draw):
    kind = draw(st.sampled_from(["good", "good", "flip", "cut", "insert", "noise", "big", "ctrl"]))
    payload = draw(st.binary(max_size=80) | st.text(max_size=60).map(str.encode))
    f = bytearray(svclink.frame(payload))
    if kind == "flip":
        i = draw(st.integers(1, len(f) - 1))
        f[i] ^= draw(st.integers(1, 255))
    elif kind == "cut":
        f = f[:draw(st.integers(0, len(f) - 1))]
    elif kind == "insert":
        i = draw(st.integers(1, len(f) - 1))
        f[i:i] = draw(st.binary(min_size=1, max_size=4))
    elif kind == "noise":
        f = bytearray(draw(st.binary(max_size=40)))
    elif kind == "big":
        f = bytearray(raw_frame(draw(st.binary(max_size=30)), length=draw(st.integers(513, 0xFFFF))))
    elif kind == "ctrl":
        f = bytearray(draw(st.lists(st.sampled_from(E + [0x41, 0x0A, 0xFF]), max_size=30)))
    return kind, payload, bytes(f)


@FUZZ
@given(segs=st.lists(segments(), max_size=8), cuts=st.lists(st.integers(0, 3000), max_size=5),
       how=st.sampled_from(["push", "feed", "want"]))
def test_fuzz_decoders_agree_and_recover_every_intact_frame(worker, segs, cuts, how):
    data = b"".join(f for _k, _p, f in segs)
    res = worker.decode(data, how=how, cuts=cuts)
    frames = [bytes.fromhex(x) for x in res["frames"]]
    ref, stats, _ = host_decode(data)
    assert frames == ref and res["stats"] == stats
    for p in frames:  # everything handed out was sent whole with a good CRC
        assert svclink.frame(p) in data
    want = [p for k, p, _f in segs if k == "good"]
    it = iter(frames)
    assert all(any(w == f for f in it) for w in want), (want, frames)


def test_round_trips_and_damage_on_the_32_bit_build(vboard32):
    """The frozen codec on the 32-bit build: CRCs above 2**30 are big ints there."""
    import random

    w = Worker("32")
    try:
        rnd = random.Random(10)
        high = 0
        for n in list(range(0, 40)) + [rnd.randint(40, 512) for _ in range(60)]:
            p = bytes(rnd.getrandbits(8) for _ in range(n))
            high += (svclink.binascii.crc32(len(p).to_bytes(2, "big") + p) >> 30) > 0
            f = svclink.frame(p)
            res = w.decode(b"text\n" + raw_frame(p, crc=1) + f + f[:5] + f)
            assert [bytes.fromhex(x) for x in res["frames"]] == [p, p], n
            assert res["stats"]["bad_crc"] == 1 and res["stats"]["truncated"] == 1
            enc = w.ask(op="encode", parts=[p[:n // 2].hex(), p[n // 2:].hex()], scratch=40)
            assert bytes.fromhex(enc["frame"]) == f
        assert high > 50  # most CRCs were big ints on this port
    finally:
        w.close()
