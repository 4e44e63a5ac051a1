"""Staff PINs (PBKDF2-HMAC-SHA256, lockout persisted on flash) and the terminal config
(validation, redaction, test credentials) on the real MicroPython interpreter."""
import hashlib
import json
import os

import pytest

from host_tools import REPO, staffhash

BENCH = os.path.join(REPO, "boards", "unix", "bench-config.json")
KEY = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"


def lines(out, tag):
    return [json.loads(l[len(tag) + 1:]) for l in out.splitlines() if l.startswith(tag + " ")]


# ---- PBKDF2 ------------------------------------------------------------------------------

VECTORS = [  # RFC 7914 section 11 / well-known PBKDF2-HMAC-SHA256 vectors
    ("password", "salt", 1, 32, "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"),
    ("password", "salt", 2, 32, "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"),
    ("password", "salt", 4096, 32, "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"),
    ("passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 40,
     "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1c635518c7dac47e9"),
]


def test_pbkdf2_matches_cpython_and_the_published_vectors(mp, tmp_path):
    cases = [list(v) for v in VECTORS]
    for pin, salt, it, dk in (("1234", "00" * 8, 2000, 32), ("000000000000", "ff" * 16, 3, 64),
                              ("9999", "62656e63682d7375", 1, 16), ("k" * 100, "73616c74", 5, 32)):
        cases.append([pin, bytes.fromhex(salt).decode("latin-1"), it, dk,
                      hashlib.pbkdf2_hmac("sha256", pin.encode(), bytes.fromhex(salt), it, dk).hex()])
    for pin, salt, it, dk, want in VECTORS:
        assert hashlib.pbkdf2_hmac("sha256", pin.encode(), salt.encode(), it, dk).hex() == want
    e = staffhash.entry("07", "supervisor", "4321", iterations=1500)
    (tmp_path / "c.json").write_text(json.dumps({"cases": cases, "entry": e}))
    out = mp(r"""
import json, time
from binascii import hexlify
from refund import staff
with open(%r) as f:
    T = json.load(f)
for pin, salt, it, dk, want in T["cases"]:
    got = hexlify(staff.pbkdf2(pin, bytes([ord(c) for c in salt]), it, dk)).decode()
    print("CASE", json.dumps([got == want, got, want]))
e = T["entry"]
print("ENTRY", json.dumps([staff.matches(e, "4321"), staff.matches(e, "4322")]))
t = time.ticks_ms()
staff.pbkdf2("1234", b"0123456789abcdef", staff.ITERATIONS)
print("COST", json.dumps(time.ticks_diff(time.ticks_ms(), t)))
""" % str(tmp_path / "c.json")).stdout
    for ok, got, want in lines(out, "CASE"):
        assert ok, (got, want)
    assert lines(out, "ENTRY") == [[True, False]]
    assert lines(out, "COST")[0] < 500  # default iterations stay cheap on the unix port


def test_staffhash_cli_prints_a_config_entry(capsys):
    assert staffhash.main(["--id", "01", "--role", "operator", "--pin", "1234"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert set(e) == {"id", "role", "salt", "iterations", "hash"} and "1234" not in json.dumps(e)
    assert hashlib.pbkdf2_hmac("sha256", b"1234", bytes.fromhex(e["salt"]), e["iterations"]).hex() == e["hash"]
    with pytest.raises(SystemExit):
        staffhash.main(["--id", "01", "--role", "operator", "--pin", "12a4"])


# ---- lockout -----------------------------------------------------------------------------

STAFF = r"""
import json, board
from refund import config
from refund.staff import Staff
board.mount_flash(print)
cfg = config.load(%(bench)r, board.DEFAULTS)
clock = [%(offset)d]
def now():
    return 1700000000 + clock[0]
logs = []
def log(tag, msg, level="INFO"):
    logs.append(msg)
s = Staff(cfg, "/flash/staff.lock", log, now)
for step in %(steps)r:
    if isinstance(step, int):
        clock[0] += step
        continue
    sid, pin, role = step
    print("V", json.dumps([sid, pin, s.verify(sid, pin, role)]))
print("LOGS", json.dumps(logs))
"""


def staff_run(mp, img, steps, offset=0):
    code = STAFF % {"bench": BENCH, "offset": offset, "steps": steps}
    out = mp(code, env={"REFUND_FLASH": img}).stdout
    logs = lines(out, "LOGS")[0]
    for l in logs:  # PINs never reach the log
        for pin in ("1234", "9999", "1111", "0000", "2468"):
            assert pin not in l, l
    return [v[2] for v in lines(out, "V")], logs


def test_five_wrong_pins_lock_the_id_until_the_period_ends(mp, tmp_path):
    img = str(tmp_path / "f.img")
    op = "operator"
    codes, logs = staff_run(mp, img, [
        ("01", "1111", op), ("01", "1234", op),  # a right PIN resets the count
        ("01", "1111", op), ("01", "1111", op), ("01", "1111", op), ("01", "1111", op),
        ("02", "2468", op),  # other ids are not affected
        ("01", "1111", op),  # 5th wrong in a row: bad_pin, and now locked
        ("01", "1234", op),  # even the right PIN is refused while locked
        ("nobody", "1234", op), ("01", "12", op),
        60, ("01", "1234", op),
        61, ("01", "1234", op),  # bench lockout_s = 120: over
        ("01", "1234", "supervisor"), ("99", "9999", "supervisor"), ("99", "9999", op),
        ("99", "1234", "supervisor"),
    ])
    assert codes == ["bad_pin", "ok", "bad_pin", "bad_pin", "bad_pin", "bad_pin", "ok", "bad_pin",
                     "locked", "unknown_staff", "locked", "locked", "ok", "not_supervisor", "ok",
                     "ok", "bad_pin"]
    assert any("locked" in l for l in logs)


def test_lockout_survives_a_reboot(mp, tmp_path):
    img = str(tmp_path / "f.img")
    op = "operator"
    assert staff_run(mp, img, [("99", "0000", op)] * 3)[0] == ["bad_pin"] * 3
    # fresh interpreter: the three wrong PINs are remembered
    assert staff_run(mp, img, [("99", "0000", op)] * 3)[0] == ["bad_pin", "bad_pin", "locked"]
    assert staff_run(mp, img, [("99", "9999", "supervisor")])[0] == ["locked"]
    # the clock jumped back (RTC lost): never locked longer than lockout_s
    assert staff_run(mp, img, [("99", "9999", "supervisor")], offset=-86400)[0] == ["locked"]
    assert staff_run(mp, img, [("99", "9999", "supervisor")], offset=-86400 + 121)[0] == ["ok"]
    assert staff_run(mp, img, [("99", "0000", op)] * 4)[0] == ["bad_pin"] * 4


# ---- config ------------------------------------------------------------------------------

CONFIG = r"""
import json, board
from refund import config
path = %(path)r
try:
    c = config.load(path, board.DEFAULTS)
    print("OK", json.dumps(config.redacted(c)))
    print("TESTCRED", json.dumps(config.test_credentials(c)))
except config.ConfigError as e:
    print("ERR", json.dumps(e.errors))
    print("MSG", json.dumps(str(e)))
"""


def config_run(mp, tmp_path, cfg, name="config.json"):
    p = tmp_path / name
    if cfg is not None:
        p.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return mp(CONFIG % {"path": str(p)}).stdout


def bench():
    with open(BENCH) as f:
        return json.load(f)


def test_bench_config_loads_with_test_staff_and_is_redacted(mp, tmp_path):
    out = config_run(mp, tmp_path, bench())
    (c,) = lines(out, "OK")
    assert c["bench"] is True and c["terminal_id"] == "TERM0001" and c["printer_width"] == 58
    assert c["limits"]["max_amount"] == 5000000 and c["heap_headroom"] == 16384
    assert "_comment" not in c
    assert lines(out, "TESTCRED") == [True]
    text = json.dumps(c)
    assert KEY not in text and KEY.lower() not in text and c["mac_key"] == "***"
    for s in bench()["staff"]:
        assert s["hash"] not in text and s["salt"] not in text
    # documented as test-only in the file itself
    assert "TEST-ONLY" in bench()["_comment"]


def test_printer_baud_and_settings_are_config_keys(mp, tmp_path):
    """Issue 12: the printer's line rate and the driver's settings come from the config
    (printer_baud null: the board's UART rate), every bad value reported."""
    (c,) = lines(config_run(mp, tmp_path, bench()), "OK")
    assert c["printer_baud"] is None and c["printer"] == {}
    cfg = dict(bench(), printer_baud=9600, printer={"status_ms": 800, "chunk": 8})
    (c,) = lines(config_run(mp, tmp_path, cfg), "OK")
    assert c["printer_baud"] == 9600 and c["printer"] == {"status_ms": 800, "chunk": 8}
    for baud in (9601, "9600", True, 0):
        (errs,) = lines(config_run(mp, tmp_path, dict(bench(), printer_baud=baud)), "ERR")
        assert [e.split(":")[0] for e in errs] == ["printer_baud"], (baud, errs)
        assert "9600" in errs[0] and "115200" in errs[0]
    cfg = dict(bench(), printer={"status": 800, "chunk": 0, "poll_ms": "1s"})
    (errs,) = lines(config_run(mp, tmp_path, cfg), "ERR")
    assert sorted(e.split(":")[0] for e in errs) == ["printer.chunk", "printer.poll_ms", "printer.status"]
    (errs,) = lines(config_run(mp, tmp_path, dict(bench(), printer=[])), "ERR")
    assert [e.split(":")[0] for e in errs] == ["printer"]


def test_real_staff_are_not_test_credentials(mp, tmp_path):
    cfg = bench()
    cfg["bench"] = False
    cfg["staff"] = [staffhash.entry("01", "operator", "8642", 50), staffhash.entry("99", "supervisor", "7531", 50)]
    out = config_run(mp, tmp_path, cfg)
    assert lines(out, "TESTCRED") == [False]


def test_every_bad_key_is_reported_at_once(mp, tmp_path):
    cfg = bench()
    secret = "DEADBEEFCAFE0123"  # too short: the message must not echo it
    cfg.update({"terminal_id": "T1", "merchant_id": 15, "mac_key": secret, "host": "nohostport",
                "currency": 840, "currencies": [978, 1000], "printer_width": 60, "tz_min": "8",
                "pending_notice": 1, "supervisor_above": -1, "lockout_tries": 0,
                "duplicate_window_s": "1d", "bench": "yes", "host_link": [], "colour": "red"})
    cfg["limits"] = {"max_live": 0, "max_amount": 10, "max_pending": 5, "low_water": 1, "extra": 1}
    cfg["staff"] = [{"id": "01", "role": "boss", "salt": "zz", "iterations": 0, "hash": "00"},
                    {"id": "01", "role": "operator", "pin": "1234", "salt": "0011223344556677",
                     "iterations": 10, "hash": "00" * 32}]
    del cfg["merchant_name"]
    out = config_run(mp, tmp_path, cfg)
    (errs,) = lines(out, "ERR")
    keys = {e.split(":")[0] for e in errs}
    for k in ("terminal_id", "merchant_id", "mac_key", "host", "currencies",
              "printer_width", "tz_min", "pending_notice", "supervisor_above", "lockout_tries",
              "duplicate_window_s", "bench", "host_link", "colour", "limits.max_live",
              "limits.max_pending", "limits.extra", "staff[0] (01).role", "staff[0] (01).salt",
              "staff[0] (01).iterations", "staff[0] (01).hash", "staff[1] (01).id", "staff[1] (01)"):
        assert k in keys, (k, errs)
    assert "merchant_name" not in keys  # absent: the default applies
    assert secret not in out and secret.lower() not in out
    assert any("plain PINs" in e for e in errs)


def test_missing_required_keys_bad_json_and_missing_file(mp, tmp_path):
    (errs,) = lines(config_run(mp, tmp_path, {"bench": True}), "ERR")
    assert {e.split(":")[0] for e in errs} == {"terminal_id", "merchant_id", "mac_key", "host"}
    (errs,) = lines(config_run(mp, tmp_path, "{not json", "b.json"), "ERR")
    assert "not valid JSON" in errs[0]
    (errs,) = lines(config_run(mp, tmp_path, None, "absent.json"), "ERR")
    assert "cannot read" in errs[0]
