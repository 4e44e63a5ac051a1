"""Intake guards and refusals (firmware/refund/intake.py) on the real MicroPython
interpreter with a real littlefs outbox, every request going through the ECR framing
(tests/mp/ecr_term.py), and refundctl against ecr.serve over TCP: duplicate guard and
supervisor confirmation, lockout, ECR resends answered with the same rid across a power
cut between request and reply, test credentials refused on a non-bench board."""
import json
import os
import socket
import subprocess
import time

import pytest

from host_tools import REPO, refundctl, staffhash, vboard

BENCH = os.path.join(REPO, "boards", "unix", "bench-config.json")
DRIVER = os.path.join(REPO, "tests", "mp", "ecr_term.py")
# The driver compiles the firmware from source: its bytecode is on this heap too (a
# board's is frozen; the board-sized heap is tests/test_small_heap.py's). With the
# settlement modules 256k left no 2 KB block for a littlefs file open.
HEAP = "heapsize=320k"
OK_RRN = "ABC123456789"


def env_for(img):
    env = vboard.board_env(img)
    env["MICROPYPATH"] = vboard.mp_path(vboard.FIRMWARE)
    return env


def write_cfg(tmp_path, name="cfg.json", **changes):
    with open(BENCH) as f:
        c = json.load(f)
    c.update(changes)
    p = tmp_path / name
    p.write_text(json.dumps(c))
    return str(p)


def term(tmp_path, steps, cfg=None, img=None, **opts):
    """Run steps through a fresh interpreter on flash image img -> (replies, stats)."""
    img = img or str(tmp_path / "flash.img")
    t = dict(opts, config=cfg or BENCH, batch=steps)
    p = tmp_path / "steps.json"
    p.write_text(json.dumps(t))
    r = subprocess.run([vboard.micropython(), "-X", HEAP, DRIVER, str(p)],
                       env=env_for(img), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for secret in ("1234", "9999", "2468", "1111"):
        assert "pin=" + secret not in r.stdout and " " + secret + " " not in r.stdout
    reps = [json.loads(l[6:]) for l in r.stdout.splitlines() if l.startswith("REPLY ")]
    stats = [json.loads(l[6:]) for l in r.stdout.splitlines() if l.startswith("STATS ")][0]
    return reps, stats, r.stdout


def refund(seq, amount=1250, orrn=OK_RRN, op="01", pin="1234", **kw):
    d = {"cmd": "REFUND", "seq": seq, "amount": amount, "orrn": orrn, "op": op, "pin": pin}
    d.update(kw)
    return d


SUP = {"sup": "99", "spin": "9999"}


def codes(reps):
    return [r and (r.get("err") or r.get("state")) for r in reps]


def test_every_guard_refuses_with_its_reason_and_queues_nothing(tmp_path):
    bad_amounts = ["abc", "-5", "0", "", "1e3", "12.50", "9999999999999", " 12", "+12",
                   "99999999999999999999999"]
    steps = [refund(10 + i, a) for i, a in enumerate(bad_amounts)]
    steps += [
        refund(30, 5000001, **SUP),  # above the per-refund cap
        refund(31, currency=978), refund(32, currency="abcd"), refund(33, currency="1560"),
        refund(34, orrn="SHORT"), refund(35, orrn="ABC12345678!"), refund(36, orrn="ABC1234567890"),
        refund(37, pin=""), refund(38, op=""),
        refund(39, op="77"), refund(40, pin="4321"),
        refund(41, 100001), refund(42, 100001, sup="02", spin="2468"),
        refund(43, 100001, sup="99", spin="0000"), refund(44, dup="2"),
        refund(45, pin="12x4"),
        {"cmd": "FOO", "seq": 46}, {"cmd": "QUERY", "seq": 47, "rid": "NOPE-000001"},
        {"cmd": "QUERY", "seq": 48}, {"cmd": "CANCEL", "seq": 49, "rid": "NOPE-000001", **SUP},
        {"_raw": refundctl.frame(b"cmd=REFUND\x1cseq=50\x1camount").hex()},  # malformed, seq known
        {"_raw": refundctl.frame(b"cmd=REFUND\x1camount=5").hex()},  # no seq: dropped
        {"_raw": refundctl.frame(b"cmd=REFUND\x1cseq=1234567890").hex()},  # seq too long: dropped
        {"_raw": bytes.fromhex(refundctl.frame(refundctl.encode(refund(51))).hex()[:-4] + "0003").hex()},
        {"cmd": "LIST", "seq": 52},
    ]
    reps, stats, _ = term(tmp_path, steps)
    assert codes(reps[:len(bad_amounts)]) == ["bad_amount"] * len(bad_amounts)
    rest = reps[len(bad_amounts):]
    assert codes(rest) == [
        "amount_limit", "bad_currency", "bad_currency", "bad_currency", "bad_orrn", "bad_orrn",
        "bad_orrn", "bad_request", "bad_request", "unknown_staff", "bad_pin", "supervisor_required",
        "not_supervisor", "bad_pin", "bad_request", "bad_pin", "unknown_command", "unknown_rid",
        "unknown_rid", "unknown_rid", "bad_request", None, None, None, None]
    listing = rest[-1]
    assert listing["total"] == "0" and listing["items"] == ""
    for r in rest[:-5]:
        assert r["text"] and r["seq"]  # a reason text and the ECR seq echoed
    assert stats["intake"]["refunds"] == 0
    assert stats["parser"]["bad_crc"] + stats["parser"]["bad_frame"] == 1


def test_accepted_refunds_record_who_asked_and_who_approved(tmp_path):
    reps, _, _ = term(tmp_path, [
        refund(1, 1250),
        refund(2, 250000, orrn="ABC000000002", **SUP),  # above supervisor_above: approved by 99
        refund(3, 250000, orrn="ABC000000003", op="99", pin="9999"),  # a supervisor at the till
        refund(4, 5000000, orrn="ABC000000004", currency=156, **SUP),  # exactly the cap
        {"cmd": "QUERY", "seq": 5, "rid": "?"},
    ])
    r1, r2, r3, r4 = reps[:4]
    assert (r1["state"], r1["op"], r1.get("sup")) == ("queued", "01", None)
    assert (r2["state"], r2["op"], r2["sup"]) == ("queued", "01", "99")
    assert (r3["state"], r3["op"], r3["sup"]) == ("queued", "99", "99")
    assert r4["state"] == "queued" and r4["amount"] == "5000000"
    img = str(tmp_path / "flash.img")
    q, _, _ = term(tmp_path, [{"cmd": "QUERY", "seq": 9, "rid": r2["rid"]},
                              {"cmd": "CANCEL", "seq": 10, "rid": r1["rid"], "sup": "02", "spin": "2468"},
                              {"cmd": "CANCEL", "seq": 11, "rid": r1["rid"]},
                              {"cmd": "CANCEL", "seq": 12, "rid": r1["rid"], **SUP},
                              {"cmd": "CANCEL", "seq": 13, "rid": r1["rid"], **SUP},
                              {"_approve": int(r2["rid"][-6:])},
                              {"cmd": "CANCEL", "seq": 14, "rid": r2["rid"], **SUP},
                              {"cmd": "LIST", "seq": 15}], img=img)
    assert (q[0]["state"], q[0]["op"], q[0]["sup"], q[0]["amount"]) == ("queued", "01", "99", "250000")
    assert codes(q[1:]) == ["not_supervisor", "supervisor_required", "cancelled", "cancelled",
                            "cannot_cancel", None]
    assert q[-1]["total"] == "3"
    assert set(q[-1]["items"].split(",")) == {r2["rid"] + ":approved", r3["rid"] + ":queued",
                                              r4["rid"] + ":queued"}


def test_outbox_limits_map_to_their_refusals(tmp_path):
    reps, _, _ = term(tmp_path, [refund(1, 1000, orrn="ABC000000001"), refund(2, 1000, orrn="ABC000000002"),
                                 refund(3, 1000, orrn="ABC000000003")], outbox={"max_live": 2})
    assert codes(reps) == ["queued", "queued", "outbox_full"]
    assert "limit 2" in reps[2]["text"]
    reps, _, _ = term(tmp_path, [refund(4, 1500, orrn="ABC000000004")], outbox={"max_pending": 3000},
                      img=str(tmp_path / "g.img"))
    assert codes(reps) == ["queued"]
    reps, _, _ = term(tmp_path, [refund(5, 1501, orrn="ABC000000005")], outbox={"max_pending": 3000},
                      img=str(tmp_path / "g.img"))
    assert codes(reps) == ["pending_limit"]


def test_duplicate_guard_and_supervisor_confirmation(tmp_path):
    img = str(tmp_path / "flash.img")
    reps, stats, _ = term(tmp_path, [
        refund(1),
        refund(2),  # same original RRN and amount: possible duplicate
        refund(3, 1251),  # another amount: not a duplicate
        refund(4, dup=1),  # confirm without a supervisor
        refund(5, dup=1, sup="02", spin="2468"),  # an operator cannot confirm
        refund(6, dup=1, **SUP),  # confirmed
        refund(7, orrn="ZZZ123456789"), {"_cancel_all": 1},
        refund(8, orrn="ZZZ123456789"),  # the earlier one was cancelled: no duplicate
    ], img=img)
    assert codes(reps) == ["queued", "possible_duplicate", "queued", "supervisor_required",
                           "not_supervisor", "queued", "queued", "queued"]
    first = reps[0]["rid"]
    assert first in reps[1]["text"] and reps[5]["sup"] == "99"
    assert stats["intake"]["duplicates"] == 1
    # A fresh interpreter (reboot) still knows, also once the refund is completed and
    # compacted into the history file; a day later it is no longer a duplicate.
    reps, _, _ = term(tmp_path, [{"_complete": int(reps[7]["rid"][-6:])},
                                 refund(20, orrn="ZZZ123456789"), {"_compact": 1}], img=img)
    assert codes(reps) == ["possible_duplicate"] and "printed" in reps[0]["text"]
    reps, _, _ = term(tmp_path, [refund(21, orrn="ZZZ123456789"), {"_advance": 86401},
                                 refund(22, orrn="ZZZ123456789")], img=img)
    assert codes(reps) == ["possible_duplicate", "queued"]


def test_lockout_through_the_ecr_and_a_resent_refusal_is_not_counted_twice(tmp_path):
    img = str(tmp_path / "flash.img")
    reps, _, out = term(tmp_path, [
        refund(1, pin="1111"), refund(1, pin="1111"),  # resend: same answer, counted once
        refund(2, pin="1111"), refund(3, pin="1111"), refund(4, pin="1111"),
        refund(5, pin="1111"),  # the fifth wrong PIN locks 01
        refund(6),  # right PIN, now locked
        refund(7, op="02", pin="2468"),
    ], img=img)
    assert codes(reps) == ["bad_pin", "bad_pin", "bad_pin", "bad_pin", "bad_pin", "bad_pin", "locked",
                           "queued"]
    assert "now locked" in reps[5]["text"]
    assert reps[1]["resend"] == "1" and reps[1]["text"] == reps[0]["text"]
    assert "4 tries left" in reps[0]["text"] and "1 tries left" in reps[4]["text"]
    reps, _, _ = term(tmp_path, [refund(8, orrn="ABC000000008"), {"_advance": 121},
                                 refund(9, orrn="ABC000000009")], img=img)
    assert codes(reps) == ["locked", "queued"]


def test_resend_gets_the_same_rid_never_a_second_refund(tmp_path):
    img = str(tmp_path / "flash.img")
    reps, _, _ = term(tmp_path, [refund(7), refund(7), refund(7, amount=1300, orrn="ABC000000777"),
                                 {"cmd": "LIST", "seq": 8}], img=img)
    assert codes(reps) == ["queued", "queued", "queued", None]
    assert reps[1]["rid"] == reps[0]["rid"] and reps[1]["resend"] == "1"
    assert reps[2]["rid"] != reps[0]["rid"]  # same seq, other content: a new request
    assert reps[3]["total"] == "2"
    # after a reboot, and after the refund is printed and compacted into the history
    reps2, _, _ = term(tmp_path, [refund(7), {"_complete": int(reps[0]["rid"][-6:])}, {"_compact": 1}],
                       img=img)
    reps3, _, _ = term(tmp_path, [refund(7), {"cmd": "LIST", "seq": 9}], img=img)
    assert (reps2[0]["rid"], reps2[0]["state"]) == (reps[0]["rid"], "queued")
    assert (reps3[0]["rid"], reps3[0]["state"], reps3[0]["resend"]) == (reps[0]["rid"], "printed", "1")
    assert reps3[1]["total"] == "1"


def test_heap_running_out_is_a_memory_refusal_and_the_resend_finds_the_refund(tmp_path):
    # Out of heap before the durable write: refused `memory`, nothing queued, and the
    # resend is handled afresh (a refusal is cached; this one must not be). After it:
    # the refund is on flash, so the resend gets it, never a second refund.
    reps, stats, out = term(tmp_path, [{"_heap_out": "before"}, refund(21), refund(21),
                                       {"_heap_out": "after"}, refund(22, amount=1300, orrn="ABC000000022"),
                                       refund(22, amount=1300, orrn="ABC000000022"),
                                       {"cmd": "LIST", "seq": 23}])
    assert codes(reps) == ["memory", "queued", "memory", "queued", None], reps
    assert "send it again" in reps[0]["text"] and "send it again" in reps[2]["text"]
    assert reps[3]["resend"] == "1" and reps[3]["rid"] != reps[1]["rid"]
    assert reps[4]["total"] == "2"
    assert "MemoryError" in out  # logged as an error, with its cause


def test_test_credentials_refused_on_a_board_that_is_not_a_bench(tmp_path):
    cfg = write_cfg(tmp_path, bench=False)
    reps, _, out = term(tmp_path, [refund(1), refund(2, 250000, **SUP), {"cmd": "LIST", "seq": 3}], cfg=cfg)
    assert codes(reps) == ["test_credentials", "test_credentials", None]
    assert "TEST CREDENTIALS" in out
    real = write_cfg(tmp_path, "real.json", bench=False, staff=[
        staffhash.entry("01", "operator", "8642", 200), staffhash.entry("99", "supervisor", "7531", 200)])
    reps, _, _ = term(tmp_path, [refund(1, pin="8642"), refund(2, pin="1234", orrn="ABC000000002")],
                      cfg=real, img=str(tmp_path / "real.img"))
    assert codes(reps) == ["queued", "bad_pin"]


# ---- refundctl against ecr.serve over TCP --------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Terminal:
    def __init__(self, tmp_path, img, die_after=0):
        self.port = free_port()
        p = tmp_path / ("serve%d.json" % self.port)
        p.write_text(json.dumps({"config": BENCH, "serve": self.port, "die_after": die_after,
                                 "log_all": True}))
        self.proc = subprocess.Popen([vboard.micropython(), "-X", HEAP, DRIVER, str(p)],
                                     env=env_for(img), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.head = ""
        while True:
            line = self.proc.stdout.readline()
            self.head += line
            if not line or line.startswith("LISTENING"):
                break
        assert line.startswith("LISTENING"), self.head
        self.url = "socket://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        return self.head + self.proc.communicate(timeout=10)[0]


def ctl(capsys, *argv):
    code = refundctl.main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_refundctl_power_cut_between_request_and_reply_then_resend(tmp_path, capsys):
    img = str(tmp_path / "flash.img")
    t = Terminal(tmp_path, img, die_after=1)
    args = ["refund", "--amount", "4200", "--orig-rrn", "PWR000000001", "--operator", "01", "--pin",
            "1234", "--json"]
    try:
        code, res = ctl(capsys, "--port", t.url, "--seq", "5150", "--timeout", "1", "--tries", "2", *args)
        assert code == refundctl.EXIT_NO_REPLY and res["reason"] == "no_reply"
    finally:
        out = t.stop()
    assert "POWER CUT after" in out
    cut_rid = out.split("POWER CUT after ")[1].split()[0]
    t = Terminal(tmp_path, img)  # the terminal boots again on the same flash
    try:
        code, res = ctl(capsys, "--port", t.url, "--seq", "5150", *args)  # the ECR resends
        assert code == 0 and res["rid"] == cut_rid and res["state"] == "queued" and res["resend"] == 1
        code, res = ctl(capsys, "--port", t.url, *args)  # a new request: duplicate guard
        assert code == 1 and res["reason"] == "possible_duplicate" and cut_rid in res["error"]
        code, res = ctl(capsys, "--port", t.url, "list", "--json")
        assert code == 0 and res["refunds"] == [{"rid": cut_rid, "state": "queued"}]
        code, res = ctl(capsys, "--port", t.url, "query", cut_rid, "--json")
        assert (res["state"], res["amount"], res["op"]) == ("queued", 4200, "01")
        code, res = ctl(capsys, "--port", t.url, "cancel", cut_rid, "--supervisor", "99",
                        "--supervisor-pin", "9999", "--json")
        assert code == 0 and res["state"] == "cancelled"
        code, res = ctl(capsys, "--port", t.url, "cancel", cut_rid, "--supervisor", "01",
                        "--supervisor-pin", "1234", "--json")
        assert code == 1 and res["reason"] == "not_supervisor"
    finally:
        out = t.stop()
    assert "1234" not in out and "9999" not in out  # PINs never logged


def test_refundctl_list_pages_and_human_output(tmp_path, capsys):
    img = str(tmp_path / "flash.img")
    t = Terminal(tmp_path, img)
    try:
        rids = []
        link = refundctl.Link(t.url)  # one connection: pyserial's socket close sleeps 0.3 s
        for i in range(35):
            rep = link.request({"cmd": "REFUND", "seq": 100 + i, "amount": 100 + i,
                                "orrn": "LST%09d" % i, "op": "02", "pin": "2468", "currency": 156})
            assert rep["state"] == "queued", rep
            rids.append(rep["rid"])
        link.close()
        code, res = ctl(capsys, "--port", t.url, "list", "--json")
        assert code == 0, res
        assert res["total"] == 35 and [it["rid"] for it in res["refunds"]] == rids
        assert refundctl.main(["--port", t.url, "query", rids[0]]) == 0
        assert rids[0] + " queued" in capsys.readouterr().out
        assert refundctl.main(["--port", t.url, "refund", "--amount", "0", "--orig-rrn", "X" * 12,
                               "--operator", "01", "--pin", "1234"]) == 1
        assert "bad_amount" in capsys.readouterr().err
    finally:
        t.stop()


def test_guards_still_hold_when_the_ram_list_overflows(tmp_path):
    # Only 2 refunds fit the RAM list here: older ones inside the window are found on flash.
    reps, stats, _ = term(tmp_path, [
        refund(1, orrn="OVF000000001"), refund(2, orrn="OVF000000002"), refund(3, orrn="OVF000000003"),
        refund(4, orrn="OVF000000001"),  # duplicate of the first, no longer in RAM
        refund(1, orrn="OVF000000001"),  # resend of the first
    ], recent_max=2)
    assert codes(reps) == ["queued", "queued", "queued", "possible_duplicate", "queued"]
    assert reps[4]["rid"] == reps[0]["rid"] and reps[4]["resend"] == "1"
    assert stats["intake"]["refunds"] == 3
