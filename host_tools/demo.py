"""make demo: a shop day on the bench.

Starts the payment host simulator, the ESC/POS printer emulator (on a 115200-baud
null-modem) and the terminal application on the virtual board, then plays a day through
refundctl on the ECR tty: refunds, a host outage with refunds queued meanwhile, a
decline, paper out in the middle of a receipt, a cancel, a power cut. It waits for the
outbox to drain and ends the day with a settlement that agrees (`refundctl settle
--supervisor 99 ...`); then a second day whose settlement finds the refund the host lost
(batch upload, the difference by rid on the slip and in `refundctl explain`). It pulls
a service bundle from the terminal's USB console the way a
technician does (`refundctl --port CONSOLE bundle -o bundle.zip`, README "Troubleshooting
a terminal") and prints a summary: refund states, receipt files, the reconciliation of
the host ledger against the terminal's records, and where the receipts (.png always:
a system CJK font, else the emulator's own bitmap font), ledger, bundle and its
report.html are.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

from host_tools.fwrun import KEY
from host_tools.hostsim import HostSim
from host_tools.printer_render import BUILTIN
from host_tools.shop import CTL, Shop

SALES = {"SALE00000001": 5000, "SALE00000002": 200000, "SALE00000003": 3000,
         "SALE00000004": 4000, "SALE00000005": 2500, "SALE00000006": 8000,
         "SALE00000007": 1200, "SALE00000008": 900}


def say(msg):
    print("[%5.1fs] %s" % (time.time() - T0, msg), flush=True)


def show(shop, label, r):
    if r.get("_rc"):
        say("%-34s REFUSED %s: %s" % (label, r.get("reason"), r.get("error", "")))
    else:
        say("%-34s %s %s" % (label, r.get("rid"), r.get("state")))
    return r


def main():
    global T0
    T0 = time.time()
    work = tempfile.mkdtemp(prefix="refund-demo-")
    shop = Shop(work, sales=SALES)
    rids = {}
    try:
        say("terminal up: %s; ECR %s, console %s; host 127.0.0.1:%d; receipts in %s/receipts"
            % (", ".join(shop.status["tasks"]), shop.board.ends["ecr"], shop.board.ends["console"],
               shop.sim.port, work))
        op = ("--supervisor", "99", "--supervisor-pin", "9999")
        r = show(shop, "refund 50.00 (operator 01)", shop.refund(5000, "SALE00000001"))
        rids["A"] = r["rid"]
        r = show(shop, "refund 1500.00 (needs supervisor)", shop.refund(150000, "SALE00000002"))
        r = show(shop, "  again with supervisor 99", shop.refund(150000, "SALE00000002", extra=op))
        rids["B"] = r["rid"]
        show(shop, "wrong PIN", shop.refund(100, "SALE00000003", pin="0000"))
        show(shop, "amount 0", shop.refund(0, "SALE00000003"))
        for k in ("A", "B"):
            show(shop, "  %s" % k, shop.wait_state(rids[k], ("printed",)))

        say("-- host outage: the payment host goes down")
        port, ledger = shop.sim.port, shop.sim.ledger_path
        shop.sim.stop()
        for k, amt, orrn in (("C", 3000, "SALE00000003"), ("D", 4000, "SALE00000004"),
                             ("E", 2500, "SALE00000005")):
            rids[k] = show(shop, "refund during outage", shop.refund(amt, orrn))["rid"]
        time.sleep(1.0)
        show(shop, "  C while the host is down", shop.query(rids["C"]))
        show(shop, "cancel E (supervisor 99)", shop.ctl("cancel", rids["E"], *op))
        say("-- host back (same ledger)")
        shop.sim = HostSim(bytes.fromhex(KEY), port=port, seed=2, ledger_path=ledger, sales=SALES)
        shop.sim.start()
        for k in ("C", "D"):
            show(shop, "  %s" % k, shop.wait_state(rids[k], ("printed",), timeout=60))

        r = show(shop, "refund of an unknown sale", shop.refund(1000, "SALE99999999"))
        rids["F"] = r["rid"]
        show(shop, "  F", shop.wait_state(rids["F"], ("declined",)))

        say("-- paper runs out in the middle of the next receipt")
        shop.printer.set_fault(paper_out_after=12)
        rids["G"] = show(shop, "refund 80.00", shop.refund(8000, "SALE00000006"))["rid"]
        show(shop, "  G (paper out)", shop.wait_state(rids["G"], ("approved",)))
        shop.printer.wait(lambda p: p.paper_out, timeout=30)
        time.sleep(1.0)
        say("   printer: %s; loading a new roll" % json.dumps(shop.printer.state()))
        shop.printer.set_fault(paper_out=False)
        show(shop, "  G", shop.wait_state(rids["G"], ("printed",), timeout=60))

        say("-- power cut right after a refund is accepted")
        rids["H"] = show(shop, "refund 12.00", shop.refund(1200, "SALE00000007"))["rid"]
        shop.power_cut()
        say("   power back: rebooting the terminal on the same flash")
        shop.boot()
        show(shop, "  H after reboot", shop.wait_state(rids["H"], ("printed",), timeout=60))

        say("-- waiting for the outbox to drain")
        for k in sorted(rids):
            shop.wait_state(rids[k], ("printed", "declined", "cancelled"), timeout=60)
        settled = []
        say("-- end of day 1: supervisor 99 settles (refundctl --port ECR settle --supervisor 99 ...)")
        settled.append(settle(shop))
        say("-- day 2: two refunds; the host then loses one of them (--settle-fault missing:RID)")
        for k, amt, orrn in (("I", 900, "SALE00000008"), ("J", 2500, "SALE00000005")):
            rids[k] = show(shop, "refund", shop.refund(amt, orrn))["rid"]
        for k in ("I", "J"):
            show(shop, "  %s" % k, shop.wait_state(rids[k], ("printed",), timeout=60))
        shop.sim.faults.settle_missing.append(rids["I"])
        say("-- end of day 2: settlement")
        settled.append(settle(shop))
        say("-- technician: refundctl --port %s explain %s" % (shop.board.ends["console"], rids["I"]))
        for line in console(shop, ["explain", rids["I"]]).splitlines():
            say("   " + line)
        say("-- technician: refundctl --port %s bundle -o %s/bundle.zip" % (shop.board.ends["console"], work))
        bundle = pull_bundle(shop, work)
        say("   %d log records, %d outbox entries" % (bundle["records"], bundle["entries"]))
        summary(shop, rids, work, bundle, settled)
    finally:
        shop.close()
    return 0


def settle(shop):
    """refundctl settle on the ECR tty as a supervisor would, its lines shown."""
    shop.seq += 1
    r = subprocess.run([CTL, "--port", shop.board.ends["ecr"], "--link", "ecr", "--seq", str(shop.seq), "settle",
                        "--supervisor", "99", "--supervisor-pin", "9999"],
                       capture_output=True, text=True, timeout=300)
    shop.record("ctl.log", r.stdout + r.stderr)
    for line in (r.stdout + r.stderr).splitlines():
        say("   " + line)
    if r.returncode != 0:
        raise SystemExit("demo: refundctl settle failed")
    return r.stdout.strip().splitlines()[-1]


def console(shop, args):
    """refundctl on the USB console (the shop's own reader set aside meanwhile)."""
    board = shop.board
    board.out += board.console.read(1 << 20)  # keep the log lines said so far (console.log)
    board.console.close()  # one reader of the USB port at a time, as on a real terminal
    try:
        r = subprocess.run([CTL, "--port", board.ends["console"]] + args, capture_output=True,
                           text=True, timeout=120)
        shop.record("ctl.log", r.stdout + r.stderr)
        if r.returncode != 0:
            raise SystemExit("demo: refundctl %s failed: %s" % (args[0], r.stderr.strip()))
        return r.stdout
    finally:
        board.console.open()


def _kind(text):
    for mark, what in (("SETTLEMENT", "settlement slip"), ("PENDING", "pending notice"), ("DECLINE", "decline slip"),
                       ("QUEUE", "queue report"), ("REPRINT", "REPRINT"),
                       ("CARDHOLDER COPY", "cardholder copy"), ("MERCHANT COPY", "merchant copy")):
        if mark in text:
            return what
    return "receipt"


def pull_bundle(shop, work):
    """refundctl bundle on the console, as README's "Troubleshooting a terminal" does it;
    report.html is taken out of the zip next to it, to be opened in a browser."""
    out = os.path.join(work, "bundle.zip")
    res = json.loads(console(shop, ["bundle", "-o", out, "--json"]).strip().splitlines()[-1])
    with zipfile.ZipFile(out) as z:
        z.extract("report.html", work)
    res["report"] = os.path.join(work, "report.html")
    return res


def summary(shop, rids, work, bundle, settled=()):
    print("\n== refunds")
    states = {}
    for k in sorted(rids):
        q = shop.query(rids[k])
        states[rids[k]] = q
        print("  %s %-12s %-10s amount %s" % (k, rids[k], q.get("state"), q.get("amount", "?")))
    print("\n== receipts")
    names = {v: k for k, v in rids.items()}
    for doc in shop.printer.receipts:
        f = doc["files"]
        with open(f["txt"], encoding="utf-8") as fh:
            text = fh.read()
        what = _kind(text)
        rid = next((r for r in names if r in text), None)
        print("  %s  %-28s%s" % (f["png"] or f["txt"], what + (" %s %s" % (names[rid], rid) if rid else ""),
                                 "" if doc.get("cut_clean") else "  (paper ran out: not cut cleanly)"))
    print("\n== reconciliation: host ledger vs terminal")
    net = {}
    for line in shop.sim.ledger:
        net[line["rid"]] = net.get(line["rid"], 0) + line["delta"]
    ok = True
    for rid, q in states.items():
        moved = net.get(rid, 0)
        want = q.get("amount", 0) if q.get("state") in ("approved", "printed") else 0
        good = moved == want
        ok &= good
        print("  %-12s terminal %-10s host moved %8d  %s" % (rid, q.get("state"), moved, "ok" if good else "MISMATCH"))
    extra = set(net) - set(states)
    for rid in extra:
        ok &= net[rid] == 0
        print("  %-12s not on the terminal, host moved %d" % (rid, net[rid]))
    print("\n== settlement: terminal vs host, per batch")
    closes = {e["batch"]: e for e in shop.sim.settlements if e["type"] == "settlement"}
    diffs = shop.sim.differences()
    for line in settled:
        print("  terminal: " + line)
    for b in sorted(closes):
        e = closes[b]
        mine = [d for d in diffs if d["batch"] == b]
        print("  host:     batch %s closed: %d refunds, %d (currency %s)%s" % (
            b, e["count"], e["total"], e["currency"], "".join(
                "; difference %s %s" % (d["rid"], d["kind"]) for d in mine) or "; agreed"))
    ok &= len(closes) == len(settled)
    docs = shop.printer.receipts
    pngs = sum(1 for d in docs if d["files"]["png"])
    font = shop.printer.font_path
    counts = {}
    for q in states.values():
        counts[q.get("state")] = counts.get(q.get("state"), 0) + 1
    print("\n== what happened")
    print("  %d refunds (%s) through a host outage, a paper out, a power cut and two settlements; %s"
          % (len(states), ", ".join("%d %s" % (counts[k], k) for k in sorted(counts)),
             "RECONCILED: the host moved exactly what the terminal approved" if ok else "NOT RECONCILED"))
    print("\n== where it is (%.0f s)" % (time.time() - T0))
    print("  receipts  %s/  %d receipts, %d .png (%s) + .txt + .json"
          % (os.path.join(work, "receipts"), len(docs), pngs,
             "emulator's bitmap font: no system CJK font" if font == BUILTIN else
             "font %s" % font if font else "no .png: REFUND_PRINTER_FONT=none"))
    print("  ledger    %s  the host's money movements (JSON Lines)" % shop.sim.ledger_path)
    print("  bundle    %s  the technician's service bundle: logs, outbox, status, metrics, config"
          % bundle["output"])
    print("  report    %s  the bundle's report.html: open it in a browser" % bundle["report"])
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
