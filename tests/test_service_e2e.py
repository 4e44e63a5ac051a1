"""Issue 10 end to end: refundctl on the USB console of the running terminal (the Shop:
host simulator, printer emulator, `refund-bench terminal`). explain shows the host's RRN
and auth code, logs pulls everything and resumes, bundle's report renders in Chromium,
unknown rids and wrong technician keys are refused in one line, status picks the right
link by itself, and `logs --via mpremote` reads the log of a board whose firmware
crashes at boot. Every refundctl output is kept under tmp (tests/test_zz_secrets.py
scans it)."""
import json
import os
import signal
import subprocess
import time
import zipfile

from host_tools import vboard
from host_tools.shop import CTL
from test_report_browser import render

BENCH_TECH_KEY = json.load(open(os.path.join(vboard.UNIX_BOARD, "bench-config.json")))["tech_key"]


class Tech:
    """refundctl on the shop's console (the shop's own reader closed: one reader at a time)."""

    def __init__(self, shop, tmp):
        shop.board.console.close()
        self.port = shop.board.ends["console"]
        self.tmp = tmp
        self.n = 0

    def __call__(self, *args, env=None, timeout=180, port=None):
        e = dict(os.environ)
        e.pop("REFUND_TECH_KEY", None)
        e.update(env or {})
        r = subprocess.run([CTL, "--port", port or self.port] + list(args), capture_output=True,
                           text=True, timeout=timeout, env=e)
        self.n += 1
        with open(os.path.join(self.tmp, "refundctl-%02d.log" % self.n), "w") as f:
            shown = ["<key>" if i and args[i - 1] == "--tech-key" else x for i, x in enumerate(args)]
            f.write("$ refundctl %s\n%s\n--- stderr\n%s" % (" ".join(shown), r.stdout, r.stderr))
        return r


def take(shop, n, amount=1000):
    rids = [shop.refund(amount + i, orrn="ORIG%08d" % i, check=True)["rid"] for i in range(n)]
    for rid in rids:
        shop.wait_state(rid, ("printed",), timeout=60)
    return rids


def seqs(path):
    with open(path) as f:
        return [json.loads(line)["seq"] for line in f]


def test_explain_shows_the_hosts_rrn_and_auth_code(shop, tmp_path):
    rid = take(shop, 1)[0]
    line = [l for l in shop.sim.ledger if l["rid"] == rid][0]
    tech = Tech(shop, tmp_path)
    r = tech("explain", rid)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "captured" in text and "by operator 01" in text
    assert "host approved RRN %s auth %s" % (line["rrn"], line["auth"]) in text
    assert "printed" in text and "nothing is stuck" in text
    r = tech("explain", rid, "--json")
    out = json.loads(r.stdout)
    names = [e["name"] for e in out["events"]]
    for n in ("captured", "send", "answer", "approved", "print_begun", "printed"):
        assert n in names, names
    assert out["entry"]["rrn"] == line["rrn"] and out["entry"]["auth"] == line["auth"]


def test_unknown_rid_and_a_wrong_technician_key_are_refused_in_one_line(shop, tmp_path):
    tech = Tech(shop, tmp_path)
    r = tech("explain", "ZZZZ-999999")
    assert r.returncode == 1 and r.stderr == "refundctl: no such refund on this terminal\n", r.stderr
    wrong = "5A" * 32
    r = tech("--tech-key", wrong, "retry")
    assert r.returncode == 1 and r.stderr.startswith("refundctl: authentication refused"), r.stderr
    assert r.stderr.count("\n") == 1 and wrong not in r.stdout + r.stderr
    r = tech("retry", "--json", env={"REFUND_TECH_KEY": BENCH_TECH_KEY})
    assert r.returncode == 0 and "due" in json.loads(r.stdout), r.stderr
    assert BENCH_TECH_KEY not in r.stdout + r.stderr
    # the refusal is on the log, never the key or the MAC
    r = tech("logs")
    auth = [json.loads(x) for x in r.stdout.splitlines() if '"svc_auth"' in x]
    assert [a["fields"]["ok"] for a in auth][-2:] == [0, 1]
    assert BENCH_TECH_KEY.lower() not in r.stdout.lower()


def test_logs_pull_everything_and_resume_after_an_interruption(shop, tmp_path):
    take(shop, 4)
    tech = Tech(shop, tmp_path)
    full = tmp_path / "full.jsonl"
    r = tech("logs", "-o", str(full), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    got = seqs(full)
    assert got == list(range(got[0], info["head"])) and info["next"] == info["head"]
    # an interrupted pull: some records and a torn last line; the same command resumes
    part = tmp_path / "part.jsonl"
    lines = full.read_text().splitlines(True)
    part.write_text("".join(lines[:len(lines) // 2]) + lines[len(lines) // 2][:17])
    r = tech("logs", "-o", str(part))
    assert r.returncode == 0, r.stderr
    assert seqs(part)[:len(got)] == got  # nothing twice, nothing missing
    # a --follow pull killed while it waits, new refunds meanwhile: resumed, no duplicates
    fol = tmp_path / "follow.jsonl"
    p = subprocess.Popen([CTL, "--port", tech.port, "logs", "-o", str(fol), "--follow"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 30
    while time.time() < end and (not fol.exists() or len(seqs(fol)) < len(got)):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    p.wait(10)
    rid = shop.refund(4321, orrn="ORIGLATE0001", check=True)["rid"]
    shop.wait_state(rid, ("printed",), timeout=60)
    r = tech("logs", "-o", str(fol))
    assert r.returncode == 0, r.stderr
    s = seqs(fol)
    assert s == list(range(s[0], s[-1] + 1)) and s[-1] > got[-1]
    recs = [json.loads(x) for x in fol.read_text().splitlines()]
    assert any(x["rid"] == rid and x["name"] == "printed" for x in recs)


def test_bundle_from_the_running_terminal_renders(shop, tmp_path):
    rids = take(shop, 2)
    tech = Tech(shop, tmp_path)
    z = tmp_path / "case.zip"
    r = tech("bundle", "-o", str(z), "--json")
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(z) as f:
        assert {"logs.jsonl", "outbox.json", "info.json", "status.json", "metrics.json", "config.json",
                "report.html"} <= set(f.namelist())
        recs = [json.loads(x) for x in f.read("logs.jsonl").decode().splitlines()]
        cfg = json.loads(f.read("config.json"))
        info = json.loads(f.read("info.json"))
        f.extract("report.html", tmp_path)
    assert {x["rid"] for x in recs} >= set(rids)
    assert cfg["tech_key"] == "***" and cfg["mac_key"] == "***" and info["board"]
    seen = render(tmp_path / "report.html", tmp_path, shot=str(tmp_path / "terminal-report.png"))
    assert seen["img"][0] > 0 and seen["rows"]["status"] >= 4 and seen["rows"]["stuck"] >= 1


def test_status_picks_the_link_and_the_application_keeps_running(shop, tmp_path):
    tech = Tech(shop, tmp_path)
    r = tech("status", "--json")
    assert r.returncode == 0, r.stderr
    assert "states" in json.loads(r.stdout)  # the console's service reply
    r = tech("status", "--json", port=shop.board.ends["ecr"])
    assert r.returncode == 0, r.stderr
    assert "live" in json.loads(r.stdout) and "states" not in json.loads(r.stdout)  # the ECR's STATUS
    before = json.loads(tech("status", "--json").stdout)["batch"]
    # the console probe never stopped the application: refunds still flow
    take(shop, 1)
    # Both links show the open batch; the approved refund is in its totals (one currency).
    b = json.loads(tech("status", "--json").stdout)["batch"]
    assert b["open"] == before["open"] == 1 and "cut" not in b
    grew = [(c, b["totals"][c]) for c in b["totals"] if b["totals"][c] != before["totals"].get(c)]
    assert len(grew) == 1, (before, b)
    cur, t = grew[0]
    old = before["totals"].get(cur, {"count": 0, "total": 0})
    assert (t["count"], t["total"]) == (old["count"] + 1, old["total"] + 1000)
    ecr = json.loads(tech("status", "--json", port=shop.board.ends["ecr"]).stdout)
    assert str(ecr["batch"]) in ("000001", "1") and int(ecr["bcount_" + cur]) == t["count"] \
        and int(ecr["btotal_" + cur]) == t["total"], ecr
    r = tech("metrics", "--json")
    assert json.loads(r.stdout)["counters"]["approved"] >= 1


CRASH_MAIN = """import os, board
try:
    os.stat("/flash/ev")  # the ROM mounted the flash already (deployed firmware)
except OSError:
    board.mount_flash(print)
raise RuntimeError("simulated boot crash")
"""

DEPLOY = r"""
import board
board.mount_flash(print)
with open("/flash/main.py", "w") as f:
    f.write(%r)
print("DEPLOYED")
"""


def test_logs_via_mpremote_when_the_firmware_crashes_at_boot(shop, tmp_path):
    rid = take(shop, 1)[0]
    tech = Tech(shop, tmp_path)
    ref = tmp_path / "service.jsonl"
    assert tech("logs", "-o", str(ref)).returncode == 0  # (also flushes the log to flash)
    r = tech("logs", "--via", "mpremote")  # the application still runs: not stopped by mistake
    assert r.returncode == 2 and "answers" in r.stderr and r.stderr.count("\n") == 1
    assert tech("info").returncode == 0
    shop.power_cut()
    # the deployed firmware now crashes at boot: only the REPL is left on the console
    env = dict(vboard.board_env(shop.flash), MICROPYPATH=vboard.mp_path(vboard.FIRMWARE))
    r = subprocess.run([vboard.micropython(), "-c", DEPLOY % CRASH_MAIN], env=env, capture_output=True,
                       text=True, timeout=60)
    assert "DEPLOYED" in r.stdout, r.stdout + r.stderr
    b = vboard.Board(shop.flash, args=["--firmware", "flash"], cmd="board")
    try:
        b.read_until(b"simulated boot crash", timeout=30)
        b.console.close()
        port = b.ends["console"]
        r = tech("--timeout", "1", "--tries", "1", "info", port=port)
        assert r.returncode == 3 and r.stderr.count("\n") == 1  # no service task answers
        out = tmp_path / "mpremote.jsonl"
        r = tech("logs", "--via", "mpremote", "-o", str(out), "--json", port=port)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["segments"] >= 1
    finally:
        b.kill()
    want = {json.loads(x)["seq"]: json.loads(x) for x in ref.read_text().splitlines()}
    got = {json.loads(x)["seq"]: json.loads(x) for x in out.read_text().splitlines()}
    assert set(want) <= set(got) and all(got[k] == want[k] for k in want)
    assert any(x["rid"] == rid and x["name"] == "approved" for x in got.values())


def test_explain_counts_every_send_and_its_outcome_when_answers_are_lost(tmp_path):
    from host_tools.hostsim import Faults
    from host_tools.shop import BENCH_CFG, Shop

    cfg = json.load(open(BENCH_CFG))
    cfg["host_link"] = {"response_ms": 700, "backoff_base_ms": 50, "backoff_cap_ms": 300}
    path = tmp_path / "fast.config.json"
    path.write_text(json.dumps(cfg))
    shop = Shop(tmp_path / "shop", faults=Faults(drop_answer=0.5), config=str(path), seed=3)
    try:
        rids = take(shop, 4)
        tech = Tech(shop, tmp_path)
        resent = 0
        for rid in rids:
            line = [l for l in shop.sim.ledger if l["rid"] == rid]
            assert len(line) == 1  # however often it was sent, the money moved once
            out = json.loads(tech("explain", rid, "--json").stdout)
            sends = [e for e in out["events"] if e["name"] == "send"]
            chain = out["timeline"][1]
            assert "sent %d time" % len(sends) in chain, chain
            assert "host approved RRN %s auth %s" % (line[0]["rrn"], line[0]["auth"]) in chain
            if len(sends) > 1:
                resent += 1
                assert "timeout" in chain and "answered" in chain, chain
        assert resent, "no answer was dropped: the test proved nothing (change the seed)"
    finally:
        shop.close()


def test_privileged_reprint_report_and_clock_on_the_console(shop, tmp_path):
    rid = take(shop, 1)[0]
    tech = Tech(shop, tmp_path)
    key = ["--tech-key", BENCH_TECH_KEY]
    r = tech(*key, "reprint", rid, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["print"] == "started", r.stderr
    end = time.time() + 30
    while time.time() < end and not any("REPRINT" in t for _d, t in shop.receipts_for(rid)):
        time.sleep(0.3)
    assert any("REPRINT" in t for _d, t in shop.receipts_for(rid))
    r = tech(*key, "reprint", "ZZZZ-999999")
    assert r.returncode == 1 and r.stderr == "refundctl: no such refund on this terminal\n"
    time.sleep(1)  # the reprint job is done before the report (else: busy)
    r = tech(*key, "report", "--json")
    assert r.returncode == 0, r.stderr
    t = int(time.time()) + 3600
    r = tech(*key, "clock", "--set", str(t), "--json")
    assert r.returncode == 0 and abs(json.loads(r.stdout)["new"] - t) <= 2, r.stderr
    r = tech("logs")
    names = [json.loads(x)["name"] for x in r.stdout.splitlines()]
    assert names.count("svc_cmd") >= 3 and "clock" in names
    assert BENCH_TECH_KEY not in "".join(open(os.path.join(tmp_path, f)).read()
                                         for f in os.listdir(tmp_path) if f.startswith("refundctl-"))


def test_a_refund_stuck_behind_a_host_outage_is_explained_and_in_the_report(tmp_path):
    from host_tools.hostsim import Faults
    from host_tools.shop import Shop

    shop = Shop(tmp_path / "shop", faults=Faults(outage=[(0, 600)]))
    try:
        rid = shop.refund(2500, orrn="ORIGDOWN0001", check=True)["rid"]
        more = [shop.refund(100 + i, orrn="ORIGDOWN%04d" % (i + 2), check=True)["rid"] for i in range(9)]
        tech = Tech(shop, tmp_path)
        time.sleep(3)
        r = tech("outbox", "--json")  # more entries than one reply frame holds
        assert r.returncode == 0 and [e["rid"] for e in json.loads(r.stdout)["entries"]] == [rid] + more
        r = tech("explain", rid)
        assert r.returncode == 0, r.stderr
        assert "queued" in r.stdout.splitlines()[0] and "waiting for the host" in r.stdout, r.stdout
        assert "connection refused" in r.stdout, r.stdout
        st = json.loads(tech("status", "--json").stdout)
        assert st["live"] == 10 and st["states"] == {"queued": 10}
        z = tmp_path / "down.zip"
        assert tech("bundle", "-o", str(z)).returncode == 0
        with zipfile.ZipFile(z) as f:
            f.extract("report.html", tmp_path)
        seen = render(tmp_path / "report.html", tmp_path, shot=str(tmp_path / "down.png"))
        assert seen["rows"]["stuck"] == 10 and rid in seen["text"] and seen["img"][0] > 0
    finally:
        shop.close()
