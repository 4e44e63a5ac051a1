"""Event log records (docs/service-link.md "Event log") decoded by host_tools/evdecode.py:
records from a reference CPython encoder (here, for tests only) and records the firmware
(refund/evlog.py) writes on MicroPython; bad CRC, torn tails and garbage are skipped to
the next 0xE7 and counted once per damaged stretch; hypothesis fuzz."""
import binascii
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_mp
from host_tools import evdecode

FUZZ_N = int(os.environ.get("REFUND_FUZZ_N", "300"))
FUZZ = settings(max_examples=FUZZ_N, deadline=None, derandomize=not os.environ.get("REFUND_FUZZ_N"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def encode(seq, name, rid="", level="I", wall=0, up=0, **fields):
    """The record format, written independently of the firmware (tests only)."""
    text = "\x1f".join([name, rid] + ["%s=%s" % kv for kv in fields.items()]).encode("ascii")
    body = seq.to_bytes(4, "big") + wall.to_bytes(4, "big") + up.to_bytes(4, "big") + level.encode() + text
    ln = bytes((len(body),))
    return bytes((0xE7,)) + ln + body + (binascii.crc32(ln + body) & 0xFFFFFFFF).to_bytes(4, "big")


def test_records_decode_with_fields():
    data = (encode(1, "boot", wall=0, up=12, reset="power_on", fw="1.0", board="unix")
            + encode(2, "captured", "K7Q2-000017", wall=1767434531, up=900, op="01", amount=1234, orrn="ORIG00000001")
            + encode(3, "send_fail", "K7Q2-000017", "W", 1767434540, 1000, cause="timeout", attempt=1))
    st_ = evdecode.new_stats()
    recs = evdecode.decode(data, st_)
    assert st_ == {"records": 3, "bad_crc": 0, "torn": 0, "skipped_bytes": 0}
    assert recs[0] == {"seq": 1, "wall": 0, "up_ms": 12, "level": "I", "name": "boot", "rid": "",
                       "fields": {"reset": "power_on", "fw": "1.0", "board": "unix"}}
    assert recs[1]["fields"] == {"op": "01", "amount": 1234, "orrn": "ORIG00000001"}
    assert recs[2]["level"] == "W" and recs[2]["fields"]["attempt"] == 1 and recs[2]["rid"] == "K7Q2-000017"
    assert "2026-01-03" in evdecode.human(recs[1]) and "+0.012s" in evdecode.human(recs[0])


def test_bad_crc_and_torn_tail_skip_to_the_next_record_and_count():
    a, b, c = encode(1, "a", x=1), encode(2, "b", "R1", y="z"), encode(3, "c")
    bad = bytearray(b)
    bad[8] ^= 0xFF
    st_ = evdecode.new_stats()
    recs = evdecode.decode(a + bytes(bad) + c + c[:7], st_)
    assert [r["seq"] for r in recs] == [1, 3]
    assert st_["bad_crc"] == 1 and st_["torn"] == 1 and st_["records"] == 2
    assert st_["skipped_bytes"] == len(b) + 7
    st_ = evdecode.new_stats()
    assert [r["seq"] for r in evdecode.decode(b"\x00garbage\xe7\x05" + a, st_)] == [1]
    assert st_["bad_crc"] == 1 and st_["skipped_bytes"] == 10


def test_a_directory_of_segments_is_ordered_by_seq_and_a_torn_file_does_not_hide_the_next(tmp_path):
    (tmp_path / "00000001").write_bytes(encode(1, "a") + encode(2, "b") + encode(3, "c")[:9])
    (tmp_path / "00000003").write_bytes(encode(3, "c") + encode(4, "d"))
    (tmp_path / "notes.txt").write_text("ignored")
    st_ = evdecode.new_stats()
    recs = evdecode.decode_dir(str(tmp_path), st_)
    assert [r["seq"] for r in recs] == [1, 2, 3, 4] and st_["torn"] == 1


@st.composite
def logs(draw):
    recs, data, intact = [], bytearray(), []
    for seq in range(1, draw(st.integers(0, 12)) + 1):
        fields = draw(st.dictionaries(st.sampled_from(["a", "cause", "rrn", "attempt"]),
                                      st.text("ABCxyz0123 =-", max_size=12), max_size=3))
        r = encode(seq, draw(st.sampled_from(["send", "answer", "printed"])), draw(st.sampled_from(["", "K7Q2-000001"])),
                   **fields)
        kind = draw(st.sampled_from(["ok", "ok", "ok", "flip", "cut", "junk"]))
        if kind == "flip":
            r = bytearray(r)
            r[draw(st.integers(1, len(r) - 1))] ^= draw(st.integers(1, 255))
            r = bytes(r)
        elif kind == "cut":
            r = r[:draw(st.integers(0, len(r) - 1))]
        elif kind == "junk":
            data += draw(st.binary(max_size=20))
        if kind in ("ok", "junk"):
            intact.append(seq)
        data += r
    return bytes(data), intact


@FUZZ
@given(log=logs())
def test_fuzz_decoder_never_raises_and_finds_every_intact_record(log):
    data, intact = log
    st_ = evdecode.new_stats()
    recs = evdecode.decode(data, st_)
    got = [r["seq"] for r in recs]
    # every intact record is found (damage before it is skipped), nothing is invented
    assert all(s in got for s in intact), (intact, got)
    assert st_["records"] == len(recs)
    for r in recs:  # what it hands out is a record that was written whole
        assert encode(r["seq"], r["name"], r["rid"], r["level"], r["wall"], r["up_ms"], **r["fields"]) in data
    assert len(set(got)) == len(got) and set(got) <= set(range(1, 13))


EVLOG = r"""
import os, evl_cfg
from refund import evlog
d = evl_cfg.DIR
evlog.attach(d, lambda: 1767434531, cap=4096, segments=4)
evlog.event("boot", reset="power_on", fw="1.0", board="unix")
for i in range(200):
    evlog.event("send", "K7Q2-%06d" % i, mti="0200", stan="%06d" % i, attempt=1 + i % 3)
    if i % 17 == 0:
        evlog.event("send_fail", "K7Q2-%06d" % i, level="W", cause="timeout", attempt=1)
    if i % 50 == 0:
        evlog.flush()
evlog.event("warn", tag="t", msg="x" * 100)
evlog.flush()
print("HEAD", evlog.head, "FIRST", evlog.first())
"""


def test_records_the_firmware_writes_decode_here(tmp_path):
    d = tmp_path / "ev"
    (tmp_path / "evl_cfg.py").write_text("DIR = %r\n" % str(d))
    r = run_mp(EVLOG, path=(str(tmp_path),))
    head, first = [int(x) for x in r.stdout.split()[1::2]]
    st_ = evdecode.new_stats()
    recs = evdecode.decode_dir(str(d), st_)
    assert st_["bad_crc"] == 0 and st_["torn"] == 0
    seqs = [x["seq"] for x in recs]
    assert seqs == list(range(first, head)) and first > 1  # rotated under the 4 KiB cap
    assert len(os.listdir(d)) <= 4
    last = recs[-1]
    assert last["name"] == "warn" and last["wall"] == 1767434531 and len(last["fields"]["msg"]) <= 100
    sends = [x for x in recs if x["name"] == "send"]
    assert sends and all(x["rid"].startswith("K7Q2-") and x["fields"]["mti"] == "0200" for x in sends)
    fails = [x for x in recs if x["name"] == "send_fail"]
    assert fails and all(x["level"] == "W" and x["fields"] == {"cause": "timeout", "attempt": 1} for x in fails)
    json.dumps(recs)  # JSON Lines ready
