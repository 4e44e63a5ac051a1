"""make demo: a shop day on the bench.

Starts the payment host simulator, the ESC/POS printer emulator (on a 115200-baud
null-modem) and the terminal application on the virtual board, then plays a day through
refundctl on the ECR tty: refunds, a host outage with refunds queued meanwhile, a
decline, paper out in the middle of a receipt, a cancel, a power cut. It waits for the
outbox to drain and prints a summary: refund states, receipt files, and the
reconciliation of the host ledger against the terminal's records.
"""
import json
import os
import sys
import tempfile
import time

from host_tools.fwrun import KEY
from host_tools.hostsim import HostSim
from host_tools.shop import Shop

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
        summary(shop, rids, work)
    finally:
        shop.close()
    return 0


def _kind(text):
    for mark, what in (("PENDING", "pending notice"), ("DECLINE", "decline slip"),
                       ("QUEUE", "queue report"), ("REPRINT", "REPRINT"),
                       ("CARDHOLDER COPY", "cardholder copy"), ("MERCHANT COPY", "merchant copy")):
        if mark in text:
            return what
    return "receipt"


def summary(shop, rids, work):
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
        print("  %s  %-28s%s%s" % (f["png"] or f["txt"], what + (" %s %s" % (names[rid], rid) if rid else ""),
                                   "" if doc.get("cut_clean") else "  (paper ran out: not cut cleanly)",
                                   "" if f["png"] else "  (no CJK font: text only)"))
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
    print("\n%s; ledger %s; %.0f s" % ("RECONCILED" if ok else "NOT RECONCILED",
                                       shop.sim.ledger_path, time.time() - T0))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
