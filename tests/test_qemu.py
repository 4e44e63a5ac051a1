"""The firmware on a Cortex-M3 (make qemu): ports/qemu MPS2_AN385 with the firmware frozen,
a 96 KiB heap, littlefs2 on a RAM block device (boards/qemu), under qemu-system-arm.

The board-independent parts run there as on a microcontroller: the outbox lifecycle and
its power-cut recovery on littlefs, ISO 8583 encoding against pyiso8583, the MAC against
RFC 4231 and CPython's hmac, the sender's answer checks, and receipts compared byte for
byte with the unix port's and, decoded by the printer emulator, with the golden receipts.
A missing toolchain (arm-none-eabi-gcc, newlib, qemu-system-arm) fails these tests: it
is never a skip.
"""
import binascii
import hashlib
import hmac
import json
import os
import shutil

import pytest

from conftest import run_mp
from host_tools import REPO
from host_tools.printer_emu import PrinterEmulator
from test_iso8583 import py_decode, py_encode
from test_outbox_powercut import _events, verify_cut

SESSION = os.path.join(REPO, "tests", "mp", "outbox_session.py")
CHECK = os.path.join(REPO, "tests", "mp", "outbox_check.py")
GOLDEN = os.path.join(REPO, "tests", "golden")
CUT_STRIDE = 16  # power cuts at every 16th program/erase of the session (and the last), clean and torn


@pytest.fixture(scope="module")
def qemu():
    from host_tools import mpbuild
    from host_tools.qemurun import Qemu, QemuError

    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if not shutil.which(t)]
    if missing:
        pytest.fail("make qemu needs %s: apt-get install -y gcc-arm-none-eabi "
                    "libnewlib-arm-none-eabi qemu-system-arm" % " and ".join(missing), pytrace=False)
    try:
        elf = mpbuild.build("qemu")
    except SystemExit as e:
        pytest.fail("the qemu build (make qemu) failed: %s" % e, pytrace=False)
    try:
        q = Qemu(elf)
    except QemuError as e:
        pytest.fail(str(e), pytrace=False)
    yield q
    q.close()


def run(q, code, **kw):
    return q.run(code, **kw)[0]


def test_a_cortex_m3_with_a_96k_heap_and_the_firmware_frozen(qemu):
    out = run(qemu, """
import gc, sys
gc.collect()
print("MACHINE", sys.implementation._machine)
print("HEAP", gc.mem_free() + gc.mem_alloc())
import refund.outbox, refund.iso8583, refund.mac, refund.receipt, refund.sender, asyncio, vfs
print("FROZEN", refund.outbox.__file__, sys.path[0] if sys.path else "")
gc.collect()
print("ALLOC", gc.mem_alloc())
print("LFS", vfs.VfsLfs2.__name__)
""")
    v = dict(l.split(" ", 1) for l in out.splitlines() if " " in l)
    assert "Cortex-M3" in v["MACHINE"], out
    heap = int(v["HEAP"])
    assert 96 * 1024 - 4096 <= heap <= 96 * 1024, out  # 98304 less the GC's own tables
    assert v["FROZEN"].startswith("refund/outbox.py"), out  # a frozen module, not a file
    assert int(v["ALLOC"]) < 32 * 1024, out  # imports cost little: the bytecode is in flash
    print("\nqemu Cortex-M3: heap %d B, after importing outbox+iso8583+mac+receipt+sender %s B"
          % (heap, v["ALLOC"]))


BASE = """
import ramdisk, board, vfs
from refund.outbox import Outbox
d = ramdisk.RAMDisk()
d.blank()
board.mount_flash(lambda *a, **k: None)
Outbox("/flash/ob", board.now, print).recover()
vfs.umount("/flash")
d.snapshot()
print("BASE")
"""


_stashed = {}


def _script(q, path, slot):
    """The script at path, sent to the board once (the emulated UART moves ~10 KB/s):
    the code that runs it from the board's static RAM after each soft reset."""
    if (id(q), slot) not in _stashed:
        with open(path) as f:
            _stashed[(id(q), slot)] = q.stash(slot, f.read())
    return _stashed[(id(q), slot)]


def _session(q, cut=0, torn=False):
    pre = ("import ramdisk, board\nramdisk.RAMDisk().restore()\nboard.CONF['cut_at'] = %d\n"
           "board.CONF['torn'] = %s\n" % (cut, torn))
    return run(q, pre + _script(q, SESSION, 0))


def _check(q):
    return run(q, _script(q, CHECK, 1))


def test_outbox_lifecycle_on_littlefs(qemu):
    assert "BASE" in run(qemu, BASE)
    out = _session(qemu)
    assert "COMPACTED" in out and "DONE" in out, out[-2000:]
    acked, last, _, _ = _events(out)
    assert len(acked) >= 20
    assert {s for s, _ in last.values()} >= {1, 2, 3, 4, 5, 6}  # every lifecycle state
    c = _check(qemu)  # a fresh interpreter (soft reset) on the same flash
    assert "FORMATTED False" in c.splitlines(), c
    found = {l.split()[1]: int(l.split()[2]) for l in c.splitlines() if l.startswith("E ")}
    for rid, (state, _flags) in last.items():
        if state in (1, 2, 4, 5):  # live states are all recovered, in the state last written
            assert found.get(rid) == state, (rid, state, found.get(rid))


def test_outbox_power_cuts_on_littlefs(qemu):
    assert "BASE" in run(qemu, BASE)
    total = int(_session(qemu).split("DONE")[1])
    assert total > 100
    points = list(range(1, total + 1, CUT_STRIDE)) + [total]
    done = 0
    for k in points:
        for torn in (False, True):
            w = _session(qemu, k, torn)
            done += verify_cut(w, _check(qemu), k, torn)
    print("\nqemu outbox power cuts: %d (every %dth of %d programs+erases and the last, clean and torn)"
          % (done, CUT_STRIDE, total))
    assert done == 2 * len(points)


# ---------------------------------------------------------------- ISO 8583 + MAC
KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF")
MSGS = [
    {"t": "0200", "3": "200000", "4": 1234, "7": "0603120000", "11": "000042", "12": "120000",
     "13": "0603", "41": "TERM0001", "42": "MERCHANT0000001", "49": 156,
     "62": "rid=AB12-000042;orrn=412345678901;op=01"},
    {"t": "0210", "3": "200000", "4": 1234, "11": "000042", "37": "512345678902", "38": "A1B2C3",
     "39": "00", "41": "TERM0001", "42": "MERCHANT0000001", "49": 156, "62": "rid=AB12-000042"},
    {"t": "0420", "3": "200000", "4": 99, "11": "000043", "41": "TERM0001", "42": "MERCHANT0000001",
     "49": 840, "62": "rid=AB12-000007;orrn=ORIG00000001",
     "90": "020000004200603120000000000000000000000000"},
    {"t": "0800", "7": "0603120000", "11": "000044", "41": "TERM0001", "70": 301},
]


def _mac_field(raw):
    """(MAC'd message) with CPython's hmac: HMAC-SHA256, first 8 bytes, upper hex, in the
    last 16 characters (docs/host-link.md)."""
    return raw[:-16] + hmac.new(KEY, raw[:-16], hashlib.sha256).hexdigest()[:16].upper().encode()


def _with_mac(msg):
    m = dict(msg)
    m["128" if any(k.isdigit() and int(k) > 64 for k in m) else "64"] = "0" * 16
    return _mac_field(py_encode(m))


def test_iso8583_encoding_and_mac_against_fixed_vectors(qemu):
    code = ["import binascii, json", "from refund import iso8583, mac",
            "key = mac.Mac(binascii.unhexlify(%r))" % KEY.hex(),
            # RFC 4231 test case 2 and a key longer than the block (test case 6).
            "print('RFC2', binascii.hexlify(mac.Mac(b'Jefe').hmac(b'what do ya want for nothing?')).decode())",
            "print('RFC6', binascii.hexlify(mac.Mac(b'\\xaa' * 131).hmac("
            "b'Test Using Larger Than Block-Size Key - Hash Key First')).decode())"]
    for i, m in enumerate(MSGS):
        code.append("m = json.loads(%r)" % json.dumps(m))
        code.append("print('ENC%d', binascii.hexlify(iso8583.encode(m)).decode())" % i)
        code.append("print('MAC%d', binascii.hexlify(mac.sign(key, m)).decode())" % i)
    out = run(qemu, "\n".join(code) + "\n")
    v = dict(l.split(" ", 1) for l in out.splitlines() if " " in l)
    assert v["RFC2"] == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", out
    assert v["RFC6"] == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", out
    for i, m in enumerate(MSGS):
        assert binascii.unhexlify(v["ENC%d" % i]) == py_encode(m), (i, out)
        assert binascii.unhexlify(v["MAC%d" % i]) == _with_mac(m), (i, out)


def test_answer_checks_mac_verify_and_match_on_fixed_answers(qemu):
    entry = {"rid": "AB12-000042", "stan": 42, "rstan": 43, "amount": 1234, "currency": 156}
    good = MSGS[1]
    cases = {
        "good": (good, True),
        "stan": (dict(good, **{"11": "000041"}), False),
        "tid": (dict(good, **{"41": "TERM0002"}), False),
        "amount": (dict(good, **{"4": 1235}), False),
        "currency": (dict(good, **{"49": 840}), False),
        "rid": (dict(good, **{"62": "rid=AB12-000043"}), False),
        "no49": ({k: v for k, v in good.items() if k != "49"}, False),
    }
    code = ["import binascii, json", "from refund import iso8583, mac", "from refund.sender import Sender",
            "key = mac.Mac(binascii.unhexlify(%r))" % KEY.hex(),
            "class S:\n    tid = 'TERM0001'",
            "e = json.loads(%r)" % json.dumps(entry)]
    for name, (m, _want) in cases.items():
        raw = _with_mac(m)
        bad = bytearray(raw)
        bad[20] ^= 1  # one bit flipped inside the MACed data
        code.append("raw = binascii.unhexlify(%r)" % raw.hex())
        code.append("d = iso8583.decode(raw)")
        code.append("print(%r, mac.verify(key, raw, d), mac.verify(key, binascii.unhexlify(%r)), "
                    "Sender._matches(S(), d, '0210', e), d == json.loads(%r))"
                    % (name, bytes(bad).hex(), json.dumps(py_decode(raw))))
    out = run(qemu, "\n".join(code) + "\n")
    got = {l.split()[0]: l.split()[1:] for l in out.splitlines() if l.split()}
    for name, (_m, want) in cases.items():
        assert got[name] == ["True", "False", str(want), "True"], (name, out)


# ---------------------------------------------------------------- receipts
MERCHANT = "深圳市示例便利店"
CFG = {"merchant_name": MERCHANT, "merchant_id": "123456789012345", "terminal_id": "87654321",
       "printer_width": 58, "tz_min": 480}
# The golden refund (tests/golden, printed by the driver on the unix port).
GOLD = {"rid": "GOLD-000001", "stan": 1, "amount": 1234, "currency": 156, "orrn": "ORIG00000000",
        "rrn": "500000000001", "auth": "A00001", "operator": "00", "ts": 1780000000,
        "state": "approved", "code": "00"}
RENDER = """
import json, binascii
from refund import receipt
a = json.loads(%r)
for name, fn, args in a:
    print(name, binascii.hexlify(receipt.render(getattr(receipt, fn)(*args))).decode())
"""
SLIPS = [("refund", "refund", [GOLD, CFG]),
         ("reprint", "refund", [GOLD, CFG, True]),
         ("decline", "decline", [dict(GOLD, state="declined", code="05", rrn="", auth=""), CFG]),
         ("pending", "pending_notice", [dict(GOLD, state="queued", rrn="", auth="", code=""), CFG])]


def test_receipts_byte_for_byte_with_the_unix_port_and_the_golden(qemu, tmp_path):
    code = RENDER % json.dumps(SLIPS, ensure_ascii=False)
    arm = dict(l.split() for l in run(qemu, code).splitlines() if l.strip())
    unix = dict(l.split() for l in run_mp(code).stdout.splitlines() if l.strip())
    assert set(arm) == {s[0] for s in SLIPS}
    for name in arm:
        assert arm[name] == unix[name], name  # the same bytes on Cortex-M3 and the 64-bit unix port
    e = PrinterEmulator(str(tmp_path / "rx"), font="none")
    e.feed(binascii.unhexlify(arm["refund"]))
    assert len(e.receipts) == 2
    for doc, name in zip(e.receipts, ("printer_refund_58_merchant", "printer_refund_58_cardholder")):
        with open(doc["files"]["txt"], encoding="utf-8") as f, \
                open(os.path.join(GOLDEN, name + ".txt"), encoding="utf-8") as g:
            assert f.read() == g.read(), name
