"""refundctl on the service link against a small fake board on a pty (the real terminal
is in tests/test_service_e2e.py): request ids, resends of the same request, late replies
and log text ignored, bad CRC after retries, multi-frame logs resumed by cursor after a
lost frame, resuming into a JSON Lines file, HMAC challenge-response, link detection that
never sends an ECR frame (its ETX is a Ctrl-C) to a console, one-line failures."""
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from host_tools import svclink
from test_evdecode import encode

CTL = os.path.join(os.path.dirname(sys.executable), "refundctl")
KEY = "11" * 32


class FakeBoard(threading.Thread):
    """Answers service frames on a pty like refund/service.py (a subset)."""

    def __init__(self, n_records=40, drop=(), corrupt=False, silent_first=0, console_text=True,
                 log_when_silent=False, short_of_ram=0):
        super().__init__(daemon=True)
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        self._slave = slave
        self.records = [encode(i, "send", "K7Q2-%06d" % i, wall=1767434531 + i, up=i, mti="0200",
                               stan="%06d" % i, attempt=1) for i in range(1, n_records + 1)]
        self.drop = set(drop)  # (since, part) frames never sent
        self.corrupt = corrupt
        self.silent_first = silent_first
        self.console_text = console_text
        self.log_when_silent = log_when_silent  # a busy console: log lines, no answer yet
        self.short_of_ram = short_of_ram  # the first N requests answered "memory" (ask again)
        self.seen, self.raw = [], bytearray()
        self.nonce = None
        self.stop = False
        self.start()

    def send(self, hdr, body=b"", damage=False):
        p = json.dumps(hdr).encode() + (b"\n" + body if body else b"")
        f = bytearray(svclink.frame(p))
        if damage:
            f[-1] = 0x41 if f[-1] != 0x41 else 0x42
        if self.console_text:
            os.write(self.master, b"1234 INFO svc: a log line between frames\n")
        os.write(self.master, bytes(f))

    def run(self):
        dec = svclink.Decoder(max_len=512)
        while not self.stop:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            self.raw += data
            for p in dec.feed(data):
                req = json.loads(p)
                self.seen.append(req)
                if len(self.seen) <= self.silent_first:
                    if self.log_when_silent:
                        os.write(self.master, b"5120 INFO sender: host up\n")
                    continue
                if len(self.seen) <= self.silent_first + self.short_of_ram:
                    self.send({"id": req["id"], "ok": False, "err": "memory",
                               "text": "no RAM for this reply now: ask again"})
                    continue
                self.answer(req)

    def answer(self, req):
        rid, cmd = req["id"], req["cmd"]
        bad = self.corrupt
        if cmd == "info":
            self.send({"id": rid + 1, "ok": True, "fw": "stale reply"})  # not ours: ignored
            self.send({"id": rid, "ok": True, "fw": "9.9", "board": "fake", "log": {"first": 1, "head": 41}},
                      damage=bad)
        elif cmd == "logs":
            since = max(req.get("since", 0), 1)
            part = 0
            while True:
                chunk = [r for r in self.records if since <= int.from_bytes(r[2:6], "big") < since + 7]
                nxt = since + len(chunk)
                hdr = {"id": rid, "ok": True, "part": part, "from": since, "next": nxt,
                       "head": len(self.records) + 1, "first": 1}
                end = nxt > len(self.records)
                if end:
                    hdr["end"] = True
                if (since, part) not in self.drop:
                    self.send(hdr, b"".join(chunk))
                else:
                    self.drop.discard((since, part))
                if end:
                    return
                since, part = nxt, part + 1
        elif cmd == "challenge":
            self.nonce = os.urandom(16).hex()
            self.send({"id": rid, "ok": True, "nonce": self.nonce})
        elif cmd in ("retry", "reprint", "clock", "report"):
            arg = req.get("rid", "") if cmd == "reprint" else str(req.get("t", "")) if cmd == "clock" else ""
            want = hmac.new(bytes.fromhex(KEY), ("%s|%s|%s" % (self.nonce, cmd, arg)).encode(),
                            hashlib.sha256).hexdigest()
            ok = self.nonce is not None and hmac.compare_digest(want, req.get("mac", ""))
            self.nonce = None
            if ok:
                self.send({"id": rid, "ok": True, "due": 2})
            else:
                self.send({"id": rid, "ok": False, "err": "auth", "text": "technician authentication refused"})
        elif cmd == "explain":
            self.send({"id": rid, "ok": False, "err": "unknown_rid", "text": "no such refund on this terminal"})
        else:
            self.send({"id": rid, "ok": False, "err": "unknown_cmd", "text": "unknown command"})

    def close(self):
        self.stop = True
        os.close(self._slave)
        os.close(self.master)


@pytest.fixture
def board():
    made = []

    def make(**kw):
        b = FakeBoard(**kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def ctl(port, *args, timeout=60, env=None):
    e = dict(os.environ)
    e.pop("REFUND_TECH_KEY", None)
    e.update(env or {})
    return subprocess.run([CTL, "--port", port, "--timeout", "2"] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=e)


def test_call_ignores_text_and_other_ids(board):
    b = board()
    c = svclink.Client(b.path, timeout=2, tries=1)
    try:
        rep = c.call("info")
    finally:
        c.close()
    assert rep["fw"] == "9.9" and rep["ok"] is True


def test_a_lost_reply_is_asked_again_with_the_same_request(board):
    b = board(silent_first=1)
    r = ctl(b.path, "info", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fw"] == "9.9"
    assert len(b.seen) >= 2 and all(q == b.seen[0] for q in b.seen)  # same id, same request


def test_a_board_short_of_ram_is_asked_again(board):
    # refund/service.py answers "memory" when the reply's buffer does not fit the heap now
    b = board(short_of_ram=2)
    r = ctl(b.path, "logs", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(b.seen) >= 3 and b.seen[0] == b.seen[1] == b.seen[2]
    b2 = board(short_of_ram=99)
    r = ctl(b2.path, "info")
    assert r.returncode == 1 and "no RAM for this reply now" in r.stderr, r.stderr


def test_bad_crc_after_retries_is_a_one_line_failure(board):
    b = board(corrupt=True)
    r = ctl(b.path, "info")
    assert r.returncode == 3 and len(b.seen) == 3
    assert r.stderr.count("\n") == 1 and "bad CRC after 3 tries" in r.stderr, r.stderr


def test_no_board_and_no_port(board):
    r = ctl("/dev/nonexistent-tty", "info")
    assert r.returncode == 3 and r.stderr.startswith("refundctl: cannot open") and r.stderr.count("\n") == 1
    b = board(silent_first=99)
    r = ctl(b.path, "info", "--json")
    assert r.returncode == 3 and "no reply" in r.stderr and json.loads(r.stdout)["reason"] == "timeout"


def test_logs_resume_by_cursor_after_a_lost_frame(board, tmp_path):
    b = board(drop={(15, 2)})  # the third frame of the first reply never arrives
    out = tmp_path / "l.jsonl"
    r = ctl(b.path, "logs", "-o", str(out))
    assert r.returncode == 0, r.stderr
    seqs = [json.loads(x)["seq"] for x in out.read_text().splitlines()]
    assert seqs == list(range(1, 41))
    assert [q.get("since") for q in b.seen if q["cmd"] == "logs"] == [0, 15]  # one frame asked again


def test_logs_append_after_the_last_record_in_the_file_and_cut_a_torn_line(board, tmp_path):
    b = board()
    out = tmp_path / "l.jsonl"
    out.write_text("".join(json.dumps({"seq": i}) + "\n" for i in range(1, 11)) + '{"seq": 11, "na')
    r = ctl(b.path, "logs", "-o", str(out), "--progress")
    assert r.returncode == 0, r.stderr
    assert "ETA" in r.stderr and "100%" in r.stderr  # the progress bar, forced on
    seqs = [json.loads(x)["seq"] for x in out.read_text().splitlines()]
    assert seqs == list(range(1, 41)) and b.seen[-1]["since"] == 11


def test_logs_to_stdout_are_json_lines(board):
    b = board(n_records=5)
    r = ctl(b.path, "logs", "--since", "3")
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0 and [x["seq"] for x in recs] == [3, 4, 5]
    assert recs[0]["name"] == "send" and recs[0]["fields"]["stan"] == "000003" and "ETA" not in r.stderr


def test_privileged_commands_authenticate_and_never_print_the_key(board):
    b = board()
    r = ctl(b.path, "--tech-key", KEY, "retry", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["due"] == 2, r.stderr
    r = ctl(b.path, "retry", env={"REFUND_TECH_KEY": "22" * 32})
    assert r.returncode == 1 and "authentication refused" in r.stderr and r.stderr.count("\n") == 1
    assert KEY not in r.stdout + r.stderr and "22" * 32 not in r.stdout + r.stderr
    assert [q["cmd"] for q in b.seen] == ["challenge", "retry", "challenge", "retry"]
    r = ctl(b.path, "retry")
    assert r.returncode == 2 and "--tech-key" in r.stderr


def test_unknown_rid(board):
    r = ctl(board().path, "explain", "ZZZZ-000000")
    assert r.returncode == 1 and r.stderr == "refundctl: no such refund on this terminal\n"


def test_auto_link_uses_the_console_and_never_sends_it_an_ecr_frame(board):
    b = board()
    r = ctl(b.path, "reprint", "K7Q2-000001", "--operator", "01", "--pin", "1234")
    # the console answered the probe: reprint goes there and needs the technician key
    assert r.returncode == 2 and "--tech-key" in r.stderr
    r = ctl(b.path, "--tech-key", KEY, "reprint", "K7Q2-000001", "--json")
    assert r.returncode == 0, r.stderr
    r = ctl(b.path, "query", "K7Q2-000001", "--link", "auto")
    assert r.returncode == 2 and "ECR command" in r.stderr
    assert 0x03 not in b.raw and 0x02 not in b.raw  # no ETX (Ctrl-C), no STX ever reached it


def test_auto_link_falls_back_to_the_ecr_on_a_silent_port(board):
    b = board(silent_first=99)  # like an ECR port: service frames are garbage to it
    t = time.time()
    r = ctl(b.path, "--tries", "1", "status")
    assert r.returncode == 3  # the ECR status was sent (and got no reply here)
    assert 0x02 in b.raw and b.raw.rstrip(b"\x00")[-1] == 0x03  # an ECR frame after the probe
    assert time.time() - t < 10


def test_a_slow_console_is_still_taken_for_a_console(board):
    b = board(silent_first=99, log_when_silent=True)  # no answer in time, but log lines
    c = svclink.Client(b.path, timeout=0.3, tries=1)
    try:
        assert c.probe(timeout=0.3) is True
    finally:
        c.close()
    r = ctl(b.path, "--tries", "1", "status")
    assert r.returncode == 3 and 0x03 not in b.raw and 0x02 not in b.raw  # never an ECR frame


def test_progress_bar_only_when_stderr_is_a_terminal(board, tmp_path):
    b = board()
    m, s = os.openpty()
    try:
        p = subprocess.run([CTL, "--port", b.path, "logs", "-o", str(tmp_path / "a.jsonl")],
                           stdout=subprocess.PIPE, stderr=s, timeout=60)
        os.set_blocking(m, False)
        shown = os.read(m, 65536).decode(errors="replace")
    finally:
        os.close(s)
        os.close(m)
    assert p.returncode == 0 and "ETA" in shown and "40/40 records" in shown, shown
    r = ctl(b.path, "logs", "-o", str(tmp_path / "b.jsonl"))  # stderr a pipe: no bar
    assert r.returncode == 0 and r.stderr == ""
