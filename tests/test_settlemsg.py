"""The settlement messages of the firmware (firmware/refund/settlemsg.py, with the
codec refund/iso8583.py and the field rules refund/hostmsg.py) on the real MicroPython
interpreter: what build_0500 / build_0320 put on the wire is byte for byte what
pyiso8583 `default_ascii` and the host simulator's MAC make of the same fields (fixed
vectors pin the MAC); check_0510 / check_0330 accept the host's answers and refuse
every kind of bad answer with its reason. Each test is ONE micropython run (JSON jobs
in a file, JSON answers on stdout)."""
import json
import random

import pytest

from host_tools.hostsim import encode as host_encode
from test_iso8583 import KEY, py_decode, py_encode

TID = "TERM0001"
MID = "MERCHANT0000001"

MP_PROGRAM = r"""
import json, binascii, time
from refund import settlemsg as S, mac

K = mac.Mac(binascii.unhexlify(KEY))

def H(b):
    return binascii.hexlify(b).decode()

def job(j):
    op = j["op"]
    try:
        if op == "b500":
            m = S.build_0500(*j["args"], **j.get("kw", {}))
        elif op == "b320":
            m = S.build_0320(*j["args"], time.gmtime, **j.get("kw", {}))
        elif op == "c510" or op == "c330":
            ans = S.read(K, binascii.unhexlify(j["hex"]))
            check = S.check_0510 if op == "c510" else S.check_0330
            return {"ok": check(j["req"], ans)}
        else:
            raise ValueError("op " + op)
    except S.NoAnswer as e:
        return {"no": e.reason}
    except ValueError as e:
        return {"valueerror": str(e)}
    return {"msg": m, "raw": H(mac.sign(K, m))}

with open(PATH) as f:
    while True:
        line = f.readline()
        if not line:
            break
        try:
            r = job(json.loads(line))
        except Exception as e:  # a crash: reported, never hidden
            r = {"crash": repr(e)}
        print(json.dumps(r))
print("END")
"""


def run_jobs(mp, tmp_path, jobs):
    path = tmp_path / ("jobs-%d.jsonl" % random.randrange(1 << 30))
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    r = mp("PATH = %r\nKEY = %r\n" % (str(path), KEY.hex()) + MP_PROGRAM)
    lines = r.stdout.splitlines()
    assert lines and lines[-1] == "END", r.stdout[-2000:] + r.stderr[-2000:]
    out = [json.loads(x) for x in lines[:-1]]
    assert len(out) == len(jobs)
    assert not [o for o in out if "crash" in o], out
    return out


def req500(stan=7, batch=3, count=2, total=2500, phase="920000", repeat=False, currency=156):
    return {"op": "b500", "args": [TID, MID, currency, batch, count, total, stan, "1204183000"],
            "kw": {"phase": phase, "repeat": repeat}}


ENTRY = {"rid": "T1-000042", "orrn": "S00000000001", "amount": 1500, "currency": 156, "stan": 42,
         "created": 1764873000, "rrn": "000007000012", "auth": "123456", "op": "7"}


def req320(repeat=False, **kw):
    return {"op": "b320", "args": [TID, MID, 3, dict(ENTRY, **kw), "1204183001"], "kw": {"repeat": repeat}}


# MACs of two messages pinned once (CPython hmac, HMAC-SHA256 first 8 bytes): a change of
# field order, padding or MAC placement anywhere shows up here even if both sides move.
VECTOR_0500 = (b"0500A220000000C0800400400400000000019200001204183000000007TERM0001MERCHANT0000001"
               b"156012batch=00000300000000020000000000002500")
VECTOR_0320 = (b"0320323800000CC08005200000000000001500120418300100004218300012040000070000121234"
               b"56TERM0001MERCHANT0000001156044rid=T1-000042;orrn=S00000000001;batch=000003")


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_built_messages_are_pyiso8583_bytes_with_the_right_mac(mp, tmp_path, interp):
    jobs = [req500(), req500(repeat=True), req500(phase="960000", batch=999999, count=0, total=0),
            req500(count=9999999999, total=9999999999999999, stan=999999, currency=978),
            req320(), req320(repeat=True), req320(amount=0, currency=978, stan=999999)]
    bad = [req500(batch=0), req500(batch=1000000), req500(count=-1), req500(total=10 ** 16),
           req500(phase="200000"), req500(stan=0), req500(currency=1000),
           req320(rrn=""), req320(auth=None), req320(rid="bad rid"), req320(orrn="SHORT"),
           req320(amount=10 ** 12)]
    out = run_jobs(mp, tmp_path, jobs + bad)
    for j, o in zip(jobs, out):
        m, raw = o["msg"], bytes.fromhex(o["raw"])
        assert raw == host_encode(m, KEY), (j, m)  # pyiso8583 encoding + host-side MAC
        doc = py_decode(raw)
        mac_at = "128" if m["t"].startswith("05") else "64"
        assert mac_at in doc and ({"64", "128"} - {mac_at}).isdisjoint(doc)
        assert {k: v for k, v in doc.items() if k not in ("64", "128")} == m
        assert raw[:-16] == py_encode(dict(m, **{mac_at: "0" * 16}))[:-16]
    assert [o["msg"]["t"] for o in out[:len(jobs)]] == ["0500", "0501", "0500", "0500", "0320", "0321", "0320"]
    first = out[0]["msg"]
    assert first == {"t": "0500", "3": "920000", "7": "1204183000", "11": "000007", "41": TID, "42": MID,
                     "49": "156", "62": "batch=000003", "74": "0000000002", "86": "0000000000002500"}
    assert out[1]["msg"] == dict(first, t="0501")  # a repeat differs in the MTI only (and 7)
    up = out[4]["msg"]
    assert (up["4"], up["11"], up["12"], up["13"], up["37"], up["38"]) == (
        "000000001500", "000042", "183000", "1204", "000007000012", "123456")
    assert up["62"] == "rid=T1-000042;orrn=S00000000001;batch=000003"  # no op: not in a 0320
    assert bytes.fromhex(out[0]["raw"]) == VECTOR_0500 + b"C033F87E44CC4519"
    assert bytes.fromhex(out[4]["raw"]) == VECTOR_0320 + b"DB96450672509111"
    assert all("valueerror" in o for o in out[len(jobs):]), list(zip(bad, out[len(jobs):]))


def _req(mp, tmp_path):
    """The 0500 920000 / 960000 and the 0320 the checks below answer, built on MicroPython."""
    out = run_jobs(mp, tmp_path, [req500(), req500(phase="960000"), req320()])
    return out[0]["msg"], out[1]["msg"], out[2]["msg"]


def ans510(req, rc="00", **kw):
    a = {"t": "0510", "3": req["3"], "7": "1204183005", "11": req["11"], "39": rc, "41": req["41"],
         "42": req["42"], "49": req["49"], "62": "batch=000003", "74": req["74"], "86": req["86"]}
    if rc == "00":
        a["15"] = "1204"
    a.update(kw)
    return {k: v for k, v in a.items() if v is not None}


def ans330(req, host="ok", rc="00", **kw):
    a = {"t": "0330", "3": "200000", "4": req["4"], "7": "1204183006", "11": req["11"], "39": rc,
         "41": req["41"], "42": req["42"], "49": req["49"],
         "62": "rid=T1-000042;batch=000003;host=%s" % host}
    a.update(kw)
    return {k: v for k, v in a.items() if v is not None}


def test_0510_accepted_and_each_bad_answer_is_no_answer(mp, tmp_path):
    first, after, _ = _req(mp, tmp_path)
    good = [
        (first, ans510(first), {"code": "00", "date": "1204", "diff": None, "extra": [], "extra_n": 0}),
        (first, ans510(first, "95", **{"62": "batch=000003;diff=2"}),
         {"code": "95", "date": None, "diff": 2, "extra": [], "extra_n": 0}),
        (after, ans510(after, **{"62": "batch=000003;extra=H-1,H-2;extra_n=5"}),
         {"code": "00", "date": "1204", "diff": None, "extra": ["H-1", "H-2"], "extra_n": 5}),
        (after, ans510(after, **{"62": "batch=000003;extra_n=0", "3": None, "7": None, "42": None}),
         {"code": "00", "date": "1204", "diff": None, "extra": [], "extra_n": 0}),
    ]
    bad = [  # (request, answer, reason, sign with another key)
        (first, ans510(first), "mac", True),
        (first, ans510(first, **{"11": "000008"}), "stan", False),
        (first, ans510(first, **{"41": "TERM0002"}), "tid", False),
        (first, ans510(first, **{"49": "978"}), "currency", False),
        (first, ans510(first, **{"74": "0000000003"}), "totals", False),
        (first, ans510(first, **{"86": "0000000000002501"}), "totals", False),
        (first, ans510(first, **{"62": "batch=000004"}), "batch", False),
        (first, ans510(first, **{"3": "960000"}), "phase", False),
        (first, ans510(first, "05"), "code", False),
        (first, ans510(first, "94"), "code", False),
        (after, ans510(after, "95"), "code", False),  # after an upload the host closes
        (first, ans510(first, "91"), "busy", False),
        (first, ans510(first, "96"), "busy", False),
        (first, ans510(first, **{"15": None}), "fields", False),
        (first, ans510(first, **{"15": "1304"}), "date", False),
        (first, ans510(first, **{"15": "1200"}), "date", False),
        (first, ans510(first, **{"62": "rid=R-1"}), "fields", False),
        (first, ans510(first, **{"62": "batch=000003;extra=H-1,bad rid"}), "f62", False),
        (first, ans510(first, **{"62": "batch=000003;extra=H-1,H-2;extra_n=1"}), "f62", False),
        (first, ans510(first, **{"62": "batch=000003;diff=x"}), "f62", False),
        (first, ans510(first, **{"86": None}), "fields", False),
        (first, ans510(first, **{"4": "000000000001"}), "fields", False),
        (first, dict(ans510(first), t="0330"), "fields", False),
        (first, ans330(dict(first, **{"4": "0" * 12})), "mti", False),  # a valid 0330 on its STAN
    ]
    other = bytes(32)
    jobs = [{"op": "c510", "req": r, "hex": host_encode(a, KEY).hex()} for r, a, _ in good]
    jobs += [{"op": "c510", "req": r, "hex": host_encode(a, other if k else KEY).hex()} for r, a, _, k in bad]
    jobs.append({"op": "c510", "req": first, "hex": "30353130"})  # not a message
    out = run_jobs(mp, tmp_path, jobs)
    for (r, a, want), o in zip(good, out):
        assert o == {"ok": want}, (a, o)
    got = [o.get("no") for o in out[len(good):-1]]
    assert got == [b[2] for b in bad], [(b[1], b[2], g) for b, g in zip(bad, got) if b[2] != g]
    assert out[-1] == {"no": "decode"}


def test_0330_host_view_and_answers_to_other_uploads_ignored(mp, tmp_path):
    _, _, up = _req(mp, tmp_path)
    good = [(ans330(up), {"rid": "T1-000042", "host": "ok", "amount": None}),
            (ans330(up, "missing"), {"rid": "T1-000042", "host": "missing", "amount": None}),
            (ans330(up, "amount:1499"), {"rid": "T1-000042", "host": "amount", "amount": 1499}),
            (ans330(up, **{"3": None, "4": None, "7": None, "42": None, "49": None,
                           "62": "rid=T1-000042;host=ok"}), {"rid": "T1-000042", "host": "ok", "amount": None})]
    bad = [
        (ans330(up), "mac"),
        (ans330(up, **{"11": "000043"}), "match"),
        (ans330(up, **{"41": "TERM0002"}), "match"),
        (ans330(up, **{"62": "rid=T1-000043;batch=000003;host=ok"}), "match"),
        (ans330(up, **{"62": "rid=T1-000042;batch=000002;host=ok"}), "match"),
        (ans330(up, **{"4": "000000001501"}), "match"),
        (ans330(up, **{"49": "978"}), "match"),
        (dict(ans510({"3": "920000", "11": up["11"], "41": TID, "42": MID, "49": "156", "74": "0" * 10,
                      "86": "0" * 16})), "match"),
        (ans330(up, rc="91"), "busy"),
        (ans330(up, rc="05"), "code"),
        (ans330(up, "amount:"), "f62"),
        (ans330(up, "amount:12x"), "f62"),
        (ans330(up, "gone"), "f62"),
        (ans330(up, **{"62": "rid=T1-000042;batch=000003"}), "f62"),
        (ans330(up, **{"62": "batch=000003;host=ok"}), "fields"),
        (ans330(up, **{"37": "000007000012"}), "fields"),
    ]
    jobs = [{"op": "c330", "req": up, "hex": host_encode(a, KEY).hex()} for a, _ in good]
    jobs += [{"op": "c330", "req": up, "hex": host_encode(a, bytes(32) if i == 0 else KEY).hex()}
             for i, (a, _) in enumerate(bad)]
    out = run_jobs(mp, tmp_path, jobs)
    for (a, want), o in zip(good, out):
        assert o == {"ok": want}, (a, o)
    got = [o.get("no") for o in out[len(good):]]
    assert got == [b[1] for b in bad], [(b[0], b[1], g) for b, g in zip(bad, got) if b[1] != g]
