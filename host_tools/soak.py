"""The whole-terminal fault campaign (issue 14, `make soak`): the virtual-board terminal
(`refund-bench terminal`, by default the 32-bit frozen build at a board's 96 KiB heap)
takes refunds from an ECR while
- the host simulator injects seeded faults (dropped requests and answers, latency and
  jitter, `91` windows, connections closed mid-frame, bad MACs, garbage, duplicates,
  declines, outages),
- the printer emulator runs out of paper mid-receipt, has its cover opened, goes offline,
- the terminal process is SIGKILLed at random moments (a power cut) and booted again on
  the same flash image; the ECR resends an unanswered request with the same `seq`, as a
  till does,
- a supervisor CANCELs some refunds.
Then the printer's faults stop (the host's go on), one clean restart, the outbox drains,
and the run is reconciled:

  the host ledger holds each approved rid exactly once; reversals net to zero (a
  cancelled refund has net 0); every refund the terminal says is printed was approved
  once and is on paper exactly once as an original (of each copy, never after a
  REPRINT) with a complete copy; no receipt exists for a refund not approved; no
  ECR-acknowledged refund is missing (unknown, not final, or final without its money).

A violation names the rid, the seed and the log lines (soak log, console, ledger) that
show it; the run fails. Settlement (`--settle-every N`, issue 13): a SETTLE every N
refunds (default 200) and "every batch closed once, totals equal the ledger" at the end;
0 disables it.

    python -m host_tools.soak --refunds 1000 --cuts 200 --seed 1 --settle-every 200 --out results.json
"""
import argparse
import json
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time

from host_tools import REPO, refundctl
from host_tools.fwrun import KEY
from host_tools.hostsim import Faults, HostSim
from host_tools.nullmodem import NullModem
from host_tools.printer_emu import PrinterEmulator
from host_tools.vboard import TERMINAL_HEAP, Board

CFG = os.path.join(REPO, "boards", "unix", "bench-config.json")
RELIABILITY = os.path.join(REPO, "docs", "reliability.json")
KEY_NAME = "soak_terminal"
RID_RE = re.compile(r"([A-Z0-9]{4}-\d{6})")
SUP = ("99", "9999")  # the bench supervisor (boards/unix/bench-config.json)
_BAD = re.compile(r"Traceback|task \w+ failed|restarting")
_FINAL = ("printed", "declined", "cancelled")
# faults injected by the host simulator: (name in the results, its HostSim.stats key)
HOST_FAULTS = (("dropped_request", "dropped_requests"), ("dropped_answer", "dropped_answers"),
               ("delayed_answer_0_10ms", "answers_out"), ("code_91", "unavailable"),
               ("closed_mid_frame", "closed_mid_frame"), ("bad_mac", "bad_mac_out"),
               ("garbage", "garbage"), ("duplicate_answer", "duplicated"),
               ("declined_05", "declined_fault"), ("outage", "outages"),
               ("settle_dropped_answer", "settle_dropped_answers"))


class Violation(dict):
    pass


# ---------------------------------------------------------------- reading the paper
def segments(receipts, merchant):
    """The paper (emulator receipts, cut to cut) split into slips, each starting at the
    double-size merchant header the composer prints on every copy and slip (as
    tests/test_printer_driver.py reads it): kind, rid, reprint, complete."""
    out = []
    for rec in receipts:
        mine = []
        cur = None
        for i, ln in enumerate(rec["lines"]):
            head = ln["kind"] == "text" and ln["text"].strip() == merchant and ln["size"] == [2, 2]
            if head or cur is None:
                cur = {"receipt": rec["seq"], "start": i, "end": i, "lines": [], "head": head}
                mine.append(cur)
            cur["lines"].append(ln)
            cur["end"] = i + 1
        cuts = [it["after_line"] for it in rec["interruptions"]]
        for n, s in enumerate(mine):
            last = n == len(mine) - 1
            s["cut"] = rec["cut"] if last else None  # a slip without its own cut is not whole
            s["interrupted"] = any(s["start"] < a < s["end"] or (a == s["end"] and s["cut"] is None)
                                   for a in cuts) or bool(rec["overrun"])
        out += mine
    for s in out:
        text = "\n".join(ln.get("text", "") for ln in s["lines"] if ln["kind"] == "text")
        qrs = [ln for ln in s["lines"] if ln["kind"] == "qr"]
        s["kind"] = ("merchant" if "MERCHANT COPY" in text else "cardholder" if "CARDHOLDER COPY" in text
                     else "decline" if "REFUND DECLINED" in text else "notice" if "NOT A REFUND RECEIPT" in text
                     else "report" if "QUEUE REPORT" in text else None)
        s["reprint"] = "重打印 REPRINT" in text
        m = None
        for q in qrs:
            m = re.search(r"rid=%s" % RID_RE.pattern, q["data"]) or m
        if m is None and "RID" in text:
            m = RID_RE.search(text[text.index("RID"):])
        s["rid"] = m.group(1) if m else None
        partial = any(ln.get("partial") for ln in s["lines"])
        s["complete"] = s["head"] and s["cut"] == "full" and not partial and not s["interrupted"]
        if s["kind"] in ("merchant", "cardholder"):
            s["complete"] = s["complete"] and bool(qrs) and not qrs[-1].get("partial") and \
                "批准 APPROVED" in text and (not s["reprint"] or text.rstrip().endswith("重打印 REPRINT"))
        del s["lines"]
    return out


# ---------------------------------------------------------------- the terminal
class Terminal:
    """The terminal process and its console, booted again after each power cut. The ECR
    and printer cables (null-modems) belong to the soak and outlive the process."""

    def __init__(self, d, args, log):
        self.d = d
        self.args = args
        self.log = log
        self.board = None
        self.boots = 0
        self.lock = threading.Lock()
        self._con = open(os.path.join(d, "console.log"), "ab")
        self._reader = None

    def boot(self, timeout=60):
        """Power on; True once READY came (a cut may land in the boot itself)."""
        with self.lock:
            self.boots += 1
            self._con.write(b"\n==== soak: boot %d ====\n" % self.boots)
            self.board = Board(os.path.join(self.d, "terminal.img"), cmd="terminal", args=self.args)
            b = self.board
        self._reader = threading.Thread(target=self._read, args=(b,), daemon=True)
        self._reader.start()
        end = time.time() + timeout
        while time.time() < end:
            if b"READY " in b.out and b"\n" in b.out[b.out.rindex(b"READY "):]:
                return True
            if b.proc.poll() is not None:
                return False
            time.sleep(0.02)
        raise RuntimeError("terminal not READY within %ss (boot %d)" % (timeout, self.boots))

    def _read(self, b):
        # A console nobody reads drops lines: read it all along, into console.log.
        while True:
            try:
                data = b.console.read(4096)
            except Exception:
                data = b""
                if b.proc.poll() is not None:
                    return
            if data:
                b.out += data
                with self.lock:
                    self._con.write(data)
            elif b.proc.poll() is not None:
                return

    def alive(self):
        return self.board is not None and self.board.proc.poll() is None

    def cut(self):
        """SIGKILL the interpreter if it runs: True if this cut hit a live process."""
        with self.lock:
            b = self.board
            if b is None or b.proc.poll() is not None:
                return False
            os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait(10)
        for f in (b.proc.stdout, b.proc.stderr, b.console):
            try:  # 200 boots: no file descriptor left behind
                f.close()
            except Exception:
                pass
        return True

    def close(self):
        self.cut()
        if self._reader:
            self._reader.join(2)
        with self.lock:
            self._con.close()


# ---------------------------------------------------------------- faults
def host_faults(rng, hours=4.0, settle=False):
    """The host simulator's fault plan for this seed: probabilities per message, a `91`
    window of 2-5 s every 20-50 s and an outage of 3-8 s every 1-2.5 minutes."""
    unavail, outage = [], []
    t = rng.uniform(5, 20)
    while t < hours * 3600:
        unavail.append(("91", round(t, 1), round(rng.uniform(2, 5), 1)))
        t += rng.uniform(20, 50)
    t = rng.uniform(20, 60)
    while t < hours * 3600:
        outage.append((round(t, 1), round(rng.uniform(3, 8), 1)))
        t += rng.uniform(60, 150)
    f = Faults(latency_ms=5.0, jitter_ms=5.0, drop_request=0.03, drop_answer=0.03,
               close_mid_frame=0.02, garbage=0.01, bad_mac=0.02, duplicate_answer=0.01,
               decline=[("05", 0.03)], unavailable=unavail, outage=outage)
    if settle:  # SETTLEMENT (issue 13): the first answer of each 0500 and 0320 dropped
        f.settle_drop_answer = True
    return f


class PrinterFaults(threading.Thread):
    """Every 2-8 s one printer fault for this seed: paper out after 0-40 more lines (in
    the middle of a receipt when one prints), cover open, offline; cleared after 0.3-4 s.
    Many are shorter than the driver's status poll (1 s): before the automatic status
    back, a paper-out reloaded within it went unseen (the receipt torn across the reload,
    one line lost, yet confirmed: seed 1, rid 2ZGE-000292, when faults were 0.3-2 s)."""

    def __init__(self, pr, seed, log):
        super().__init__(daemon=True)
        self.pr = pr
        self.rng = random.Random("%s|printer" % seed)
        self.log = log
        self.stop = threading.Event()
        self.counts = {"paper_out_mid_receipt": 0, "cover_open": 0, "offline": 0}
        self.ran_out = 0

    def run(self):
        while not self.stop.wait(self.rng.uniform(2, 8)):
            kind = self.rng.choice(sorted(self.counts))
            self.counts[kind] += 1
            if kind == "paper_out_mid_receipt":
                self.pr.set_fault(paper_out_after=self.rng.randint(0, 40))
            else:
                self.pr.set_fault(**{kind: True})
            self.log("printer fault %s" % kind)
            if self.stop.wait(self.rng.uniform(0.3, 4)):
                break
            if kind == "paper_out_mid_receipt":
                self.ran_out += int(self.pr.faults.paper_out)
            self.pr.set_fault(paper_out=False, cover_open=False, offline=False)
        self.pr.set_fault(paper_out=False, cover_open=False, offline=False)


class Cutter(threading.Thread):
    """Power cuts: arm(delay) SIGKILLs the terminal `delay` s later, whatever it is doing
    then (taking a refund, sending, printing, recovering at boot)."""

    def __init__(self, term, seed, log):
        super().__init__(daemon=True)
        self.term = term
        self.rng = random.Random("%s|cuts" % seed)
        self.log = log
        self.due = []
        self.cond = threading.Condition()
        self.hits = 0
        self.done = False

    def arm(self, delay):
        with self.cond:
            self.due.append(time.monotonic() + delay)
            self.due.sort()
            self.cond.notify()

    def run(self):
        with self.cond:
            while not self.done:
                if not self.due:
                    self.cond.wait(0.5)
                    continue
                wait = self.due[0] - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                self.due.pop(0)
                if self.term.cut():
                    self.hits += 1
                    self.log("POWER CUT %d" % self.hits)
                else:  # down already: this cut lands at a random moment of the next boot
                    self.due.append(time.monotonic() + self.rng.uniform(0.05, 1.0))
                    self.due.sort()


# ---------------------------------------------------------------- the campaign
class Soak:
    def __init__(self, refunds=1000, cuts=200, seed=1, interp="32", heap="96k", settle_every=0,
                 workdir=None, cancel_p=0.05, pace=0.25, say=None):
        self.n, self.n_cuts, self.seed = refunds, cuts, seed
        self.interp, self.heap, self.settle_every = str(interp), heap, settle_every
        self.cancel_p = cancel_p
        self.pace = pace  # mean seconds between two refunds at the till
        self.rng = random.Random(seed)
        self.d = workdir or tempfile.mkdtemp(prefix="soak-")
        os.makedirs(self.d, exist_ok=True)
        self.say = say or (lambda m: None)
        self._log = open(os.path.join(self.d, "soak.log"), "a", encoding="utf-8")
        self.t0 = time.time()
        self.acked = {}  # rid -> {"amount", "seq", "cancel": reply state/err or None}
        self.seq = 100000
        self.refused = {}
        self.settles = []  # SETTLEMENT: the SETTLE replies (batch, settle)
        with open(CFG) as f:
            self.merchant = json.load(f)["merchant_name"]

    def log(self, msg):
        self._log.write("%8.2f %s\n" % (time.time() - self.t0, msg))
        self._log.flush()

    # ---- ECR side
    def _request(self, req, tries=40, timeout=3.0):
        """One ECR request, resent with the same seq (a till's resend) through power
        cuts until a reply comes; boots the terminal when it is down. A reply is waited
        for only while the terminal runs: a cut costs no timeout."""
        raw = refundctl.frame(refundctl.encode(req))
        seq = str(req["seq"])
        ln = self.link
        for _ in range(tries):
            if not self.term.alive():
                self._reboot()
            ln.ser.write(raw)
            ln.ser.flush()
            end = time.monotonic() + timeout
            while time.monotonic() < end and self.term.alive():
                for payload in ln.dec.feed(ln.ser.read(4096)):
                    try:
                        rep = refundctl.decode(payload)
                    except ValueError:
                        continue
                    if rep.get("seq") == seq:
                        return rep
            self.log("seq %s: no reply (%s)" % (seq, "up" if self.term.alive() else "down"))
        raise RuntimeError("no reply to %r after %d tries" % (req.get("cmd"), tries))

    def _reboot(self):
        while not self.term.boot():
            self.log("boot %d cut short" % self.term.boots)
        self.log("boot %d READY" % self.term.boots)

    def _next_seq(self):
        self.seq += 1
        return str(self.seq)

    def refund(self, i):
        amount = 100 + self.rng.randrange(20000)
        req = {"cmd": "REFUND", "seq": self._next_seq(), "amount": str(amount), "currency": "156",
               "orrn": "%012d" % (800000000 + i), "op": "01", "pin": "1234"}
        for _ in range(200):
            rep = self._request(req)
            if "rid" in rep and "err" not in rep:
                rid = rep["rid"]
                if rid in self.acked:
                    self.violation("rid_twice", rid, "two ECR requests acknowledged with one rid")
                self.acked[rid] = {"amount": amount, "seq": req["seq"], "cancel": None, "i": i}
                self.log("REFUND seq %s #%d -> %s %s%s" % (req["seq"], i, rid, rep.get("state"),
                                                            " resend" if rep.get("resend") else ""))
                return rid
            err = rep.get("err", "?")
            self.refused[err] = self.refused.get(err, 0) + 1
            self.log("REFUND seq %s refused %s" % (req["seq"], err))
            if err not in ("memory", "busy", "pending_limit", "outbox_full", "flash_low"):
                raise RuntimeError("refund %d refused %s: %s" % (i, err, rep.get("text")))
            time.sleep(0.5)  # the outbox drains meanwhile; a refused request queued nothing
            req["seq"] = self._next_seq()
        raise RuntimeError("refund %d refused 200 times" % i)

    def cancel(self, rid):
        rep = self._request({"cmd": "CANCEL", "seq": self._next_seq(), "rid": rid,
                             "sup": SUP[0], "spin": SUP[1]})
        self.acked[rid]["cancel"] = rep.get("state") or rep.get("err")
        self.log("CANCEL %s -> %s" % (rid, self.acked[rid]["cancel"]))

    def status(self):
        return self._request({"cmd": "STATUS", "seq": self._next_seq()})

    # ---- SETTLEMENT (issue 13; --settle-every 0 disables) -----------------------
    def settle(self):
        # Refunds go on being taken while a batch settles (the firmware refuses none for
        # it); a SETTLE refused for memory is not remembered by the terminal: send it again.
        req = {"cmd": "SETTLE", "seq": self._next_seq(), "sup": SUP[0], "spin": SUP[1]}
        for _ in range(20):
            rep = self._request(req)
            if rep.get("err") != "memory":
                break
            time.sleep(0.5)
        self.settles.append({"batch": rep.get("batch"), "settle": rep.get("settle"), "err": rep.get("err")})
        self.log("SETTLE -> %s" % rep)
        if rep.get("err") == "unknown_command":
            raise RuntimeError("the firmware does not take SETTLE: run with --settle-every 0")

    def settle_checks(self):
        """Every batch closed once and its totals equal the ledger's view of it."""
        closes = {}
        for e in self.sim.settlements:
            if e["type"] == "settlement":
                k = (e["tid"], e["batch"], e["currency"])
                closes.setdefault(k, []).append(e)
        for k, es in sorted(closes.items()):
            view = self.sim.batch(*k)
            if len(es) != 1:
                self.violation("batch_closed_twice", None, "batch %s closed %d times" % (k[1], len(es)))
            if (es[0]["count"], es[0]["total"]) != (len(view), sum(view.values())):
                self.violation("batch_totals", None, "batch %s: terminal %s/%s, ledger %s/%s"
                               % (k[1], es[0]["count"], es[0]["total"], len(view), sum(view.values())))
        for s in self.settles:
            if s["err"] or not any(k[1] == s["batch"] for k in closes):
                self.violation("batch_not_closed", None, "SETTLE %r never closed its batch" % (s,))
        return {"requested": len(self.settles), "closed": len(closes)}
    # ---- end SETTLEMENT ----------------------------------------------------------

    # ---- run
    def run(self):
        d = self.d
        self.violations = []
        self.sim = HostSim(bytes.fromhex(KEY), seed=self.seed,
                           faults=host_faults(random.Random("%s|host" % self.seed), settle=self.settle_every > 0),
                           ledger_path=os.path.join(d, "ledger.jsonl"))
        self.sim.start()
        self.nm_pr = NullModem(baud=115200).start()
        self.nm_ecr = NullModem().start()
        self.pr = PrinterEmulator(os.path.join(d, "receipts"), font="none")
        self.pr.start(tty_path=self.nm_pr.b, baud=115200)
        args = ["--interp", self.interp, "--heap", self.heap, "--host", "127.0.0.1:%d" % self.sim.port,
                "--printer", self.nm_pr.a, "--printer-baud", "115200", "--ecr", self.nm_ecr.a]
        self.term = Terminal(d, args, self.log)
        self.link = refundctl.Link(self.nm_ecr.b, timeout=0.02, tries=1)  # its tty and decoder
        self.pfaults = PrinterFaults(self.pr, self.seed, self.log)
        self.cutter = Cutter(self.term, self.seed, self.log)
        res = {"seed": self.seed, "interp": self.interp, "heap": self.heap, "refunds_asked": self.n,
               "cuts_asked": self.n_cuts, "settle_every": self.settle_every, "workdir": d}
        try:
            self._reboot()
            self.cutter.start()
            self.pfaults.start()
            # The power cuts: at cuts refunds drawn for this seed, 0-1.5 s after the
            # REFUND goes out (mid-request, in the sender or the printer, at boot).
            at = {}
            for i in self.rng.choices(range(self.n), k=self.n_cuts):
                at[i] = at.get(i, 0) + 1
            for i in range(self.n):
                for _ in range(at.get(i, 0)):
                    self.cutter.arm(self.rng.uniform(0.0, 1.5))
                self.refund(i)
                if self.rng.random() < self.cancel_p:
                    # one of the last ten: queued, in flight (a reversal), or approved
                    last = [r for r, a in self.acked.items() if a["i"] > i - 10 and not a["cancel"]]
                    if last:
                        self.cancel(self.rng.choice(sorted(last)))
                time.sleep(self.rng.uniform(0, 2 * self.pace))  # the till's pace
                if self.settle_every and (i + 1) % self.settle_every == 0:
                    self.settle()  # SETTLEMENT
                if i % 100 == 99:
                    self.say("soak: %d refunds, %d power cuts, %.0f s" % (i + 1, self.cutter.hits,
                                                                            time.time() - self.t0))
            # The cuts still armed land now; then the printer's faults stop (the host's
            # go on), one clean restart, the drain.
            while self.cutter.due:
                if not self.term.alive():
                    self._reboot()
                time.sleep(0.05)
            self.cutter.done = True
            self.pfaults.stop.set()
            self.pfaults.join(5)
            self.term.cut()
            self._reboot()
            res["drain_s"] = self._drain()
            self.reconcile(res)
        except Exception as e:  # the campaign could not go on: a failure with its reason
            self.violation("aborted", None, "%s: %s" % (type(e).__name__, e))
        finally:
            self.cutter.done = True
            self.pfaults.stop.set()
            time.sleep(0.5)  # the console reader takes the last lines
            self.term.close()
            self.link.close()
            self.pr.stop()
            self.nm_pr.close()
            self.nm_ecr.close()
            self.sim.stop()
        res.update(self.figures())
        res["violations"] = self.violations
        res["ok"] = not self.violations
        res["duration_s"] = round(time.time() - self.t0, 1)
        self._log.close()
        return res

    def _drain(self, timeout=600):
        t = time.time()
        while time.time() - t < timeout:
            st = self.status()
            if st.get("live") == "0" and (not self.settle_every or st.get("settle") in (None, "idle")):
                return round(time.time() - t, 1)
            time.sleep(1)
        raise RuntimeError("outbox did not drain in %d s: %r" % (timeout, st))

    # ---- reconciling
    def violation(self, kind, rid, what):
        pats = [rid] if rid else []
        v = Violation(kind=kind, rid=rid, seed=self.seed, what=what, log=self.excerpt(pats))
        self.violations.append(v)
        self.say("soak VIOLATION %s %s: %s" % (kind, rid or "", what))

    def excerpt(self, pats, n=12):
        out = []
        for name in ("soak.log", "console.log", "ledger.jsonl"):
            p = os.path.join(self.d, name)
            if not pats or not os.path.exists(p):
                continue
            with open(p, encoding="utf-8", errors="replace") as f:
                hits = [name + ": " + ln.rstrip() for ln in f if any(x in ln for x in pats)]
            out += hits[-n:]
        return out

    def reconcile(self, res):
        """After the drain: each acknowledged rid's final state (QUERY), the ledger and
        the paper, judged; the figures go into res."""
        states = {}
        for rid in sorted(self.acked):
            rep = self._request({"cmd": "QUERY", "seq": self._next_seq(), "rid": rid})
            states[rid] = rep.get("state") or rep.get("err")
        time.sleep(0.5)  # the emulator writes its last receipt files
        with self.pr.lock:
            segs = segments(list(self.pr.receipts), self.merchant)
        self.final = (states, list(self.sim.ledger), segs)  # what was judged (tests judge it doctored)
        res.update(self.judge(*self.final))
        if self.settle_every:
            res["settlement"] = self.settle_checks()  # SETTLEMENT

    def judge(self, states, ledger, segs):
        """The invariants (module docstring) over the terminal's final states {rid:
        state}, the host's ledger lines and the paper's slips (`segments`); each broken
        one is a violation. Returns the figures."""
        refunds, reversals, net = {}, {}, {}
        for e in ledger:
            (refunds if e["type"] == "refund" else reversals).setdefault(e["rid"], []).append(e)
            net[e["rid"]] = net.get(e["rid"], 0) + e["delta"]
        by_rid = {}
        for s in segs:
            by_rid.setdefault(s["rid"], []).append(s)
        for rid, es in sorted(refunds.items()):
            if len(es) != 1:
                self.violation("ledger_twice", rid, "%d refund lines in the host ledger" % len(es))
            if rid not in self.acked:
                self.violation("not_acknowledged", rid, "approved by the host, never acknowledged to the ECR")
        for rid, es in sorted(reversals.items()):
            if len(es) != 1 or rid not in refunds or net.get(rid) != 0:
                self.violation("reversal", rid, "%d reversals, net %s" % (len(es), net.get(rid)))
        for rid, a in sorted(self.acked.items()):
            st = states[rid]
            booked = net.get(rid, 0)
            if st not in _FINAL:
                self.violation("missing", rid, "acknowledged refund is %s after the drain" % st)
            elif st == "printed" and (booked != a["amount"] or rid not in refunds):
                self.violation("printed_not_booked", rid, "printed, ledger net %s of %s" % (booked, a["amount"]))
            elif st != "printed" and booked:
                self.violation("booked_not_printed", rid, "%s, ledger net %s" % (st, booked))
            mine = by_rid.get(rid, [])
            copies = [s for s in mine if s["kind"] in ("merchant", "cardholder")]
            if st != "printed":
                if copies:
                    self.violation("receipt_not_approved", rid, "%s but %d receipt copies on paper"
                                   % (st, len(copies)))
                continue
            for kind in ("merchant", "cardholder"):
                k = [s for s in copies if s["kind"] == kind]
                orig = [j for j, s in enumerate(k) if not s["reprint"]]
                if len(orig) > 1:
                    self.violation("printed_twice", rid, "%d originals of the %s copy" % (len(orig), kind))
                elif orig and orig[0] != 0:
                    self.violation("original_after_reprint", rid, "%s copy" % kind)
                if not any(s["complete"] for s in k):
                    self.violation("not_printed", rid, "no complete %s copy (%d on paper)" % (kind, len(k)))
        for rid in sorted(set(by_rid) - set(self.acked) - {None}):
            self.violation("receipt_unknown", rid, "paper for a refund the ECR never got")
        for s in segs:
            if s["rid"] is None and s["kind"] in ("merchant", "cardholder") and s["complete"] and not s["reprint"]:
                self.violation("receipt_without_rid", None, "a complete original without a rid: %r" % (s,))
        with open(os.path.join(self.d, "console.log"), encoding="utf-8", errors="replace") as f:
            text = f.read()
        for ln in [ln for ln in text.splitlines() if _BAD.search(ln)][:5]:
            self.violation("console", None, ln.strip()[:200])
        final = {}
        for st in states.values():
            final[st] = final.get(st, 0) + 1
        return {"terminal_states": final, "ledger": {"refunds": len(refunds), "reversals": len(reversals)},
                "paper": {"slips": len(segs),
                          "originals": sum(1 for s in segs if s["kind"] in ("merchant", "cardholder")
                                           and not s["reprint"]),
                          "reprints": sum(1 for s in segs if s["reprint"]),
                          "incomplete": sum(1 for s in segs if not s["complete"]),
                          "decline_slips": sum(1 for s in segs if s["kind"] == "decline"),
                          "notices": sum(1 for s in segs if s["kind"] == "notice")}}

    def figures(self):
        cancels = {}
        for a in self.acked.values():
            if a["cancel"]:
                cancels[a["cancel"]] = cancels.get(a["cancel"], 0) + 1
        st = self.sim.stats
        host = {name: st.get(key, 0) for name, key in HOST_FAULTS}
        return {"refunds": len(self.acked), "power_cuts": self.cutter.hits, "boots": self.term.boots,
                "cancels": cancels, "refusals": self.refused, "host_stats": st,
                "faults": {"power_cuts": self.cutter.hits, "host": host,
                           "printer": dict(self.pfaults.counts, paper_ran_out=self.pfaults.ran_out)}}


# ---------------------------------------------------------------- output
def render_soak(res):
    """docs/reliability.md section for docs/reliability.json `soak_terminal` (the lead
    wires it into host_tools/reliability.py)."""
    f = res.get("faults", {})
    host = f.get("host", {})
    pr = f.get("printer", {})
    lines = ["## Whole-terminal soak (`make soak`, `python -m host_tools.soak`)", "",
             "%s: seed %s, %s-bit build, heap %s, %s refunds acknowledged, %s power cuts (SIGKILL), "
             "%s boots, %.0f s." % ("PASS" if res.get("ok") else "FAIL", res.get("seed"), res.get("interp"),
                                    res.get("heap"), res.get("refunds"), res.get("power_cuts"),
                                    res.get("boots"), res.get("duration_s", 0)), "",
             "Seeds: %s (host faults drawn from `%s|host`, printer faults from `%s|printer`, the "
             "moments of the power cuts from `%s|cuts`); settlement %s. Command: `%s`." % (
                 res.get("seed"), res.get("seed"), res.get("seed"), res.get("seed"),
                 "every %s refunds" % res["settle_every"] if res.get("settle_every") else "off",
                 res.get("command", "python -m host_tools.soak")), "",
             "Reconciled after a clean restart and the drain (%s s): each approved rid once in the host "
             "ledger, reversals net to zero, each printed refund on paper exactly once as an original "
             "of each copy with a complete copy, no receipt for a refund not approved, no "
             "ECR-acknowledged refund missing. `paper_ran_out`: the paper-outs that ran out before "
             "the clerk reloaded." % res.get("drain_s", "?"), "",
             "| faults injected | count |", "|---|---|",
             "| power cuts | %s |" % res.get("power_cuts")]
    for k in sorted(host):
        lines.append("| host: %s | %s |" % (k, host[k]))
    for k in sorted(pr):
        lines.append("| printer: %s | %s |" % (k, pr[k]))
    lines += ["", "Final states: %s; cancels: %s; ledger: %s; paper: %s." % (
        json.dumps(res.get("terminal_states", {}), sort_keys=True), json.dumps(res.get("cancels", {}), sort_keys=True),
        json.dumps(res.get("ledger", {}), sort_keys=True), json.dumps(res.get("paper", {}), sort_keys=True))]
    if res.get("settlement"):
        st = res["settlement"]
        lines += ["", "Settlement: %d SETTLE requests (a SETTLE while one runs answers `running` with "
                  "its batch), %d batches closed, each exactly once with the ledger's count and total "
                  "(a violation otherwise)." % (st["requested"], st["closed"])]
    lines += ["", "Violations: %d." % len(res.get("violations", []))]
    for v in res.get("violations", [])[:20]:
        lines.append("- %s %s (seed %s): %s" % (v["kind"], v.get("rid") or "", v["seed"], v["what"]))
    return "\n".join(lines) + "\n"


def soak_section(doc):
    """The section for host_tools/reliability.py's SECTIONS (each is given the whole
    docs/reliability.json and returns its lines)."""
    return render_soak(doc[KEY_NAME]).split("\n") if KEY_NAME in doc else []


def write_reliability(res, path=RELIABILITY):
    """Put res under `soak_terminal` in docs/reliability.json, other keys kept."""
    doc = {}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
    doc[KEY_NAME] = {k: v for k, v in res.items() if k != "workdir"}  # a temp dir of this machine
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m host_tools.soak", description=__doc__.split("\n")[0])
    p.add_argument("--refunds", type=int, default=1000)
    p.add_argument("--cuts", type=int, default=200, help="power cuts (SIGKILL of the terminal)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--interp", choices=("32", "64"), default="32")
    p.add_argument("--heap", help="MicroPython heap (default: 96k on 32, the bench's %s on 64, "
                                  "where the bytecode is in the heap)" % TERMINAL_HEAP)
    p.add_argument("--settle-every", type=int, default=200, metavar="N",
                   help="SETTLE every N refunds (0: no settlement)")
    p.add_argument("--cancel", type=float, default=0.05, help="share of refunds a supervisor cancels")
    p.add_argument("--pace", type=float, default=0.25, help="mean seconds between refunds at the till")
    p.add_argument("--workdir", help="keep the run's files here (default: a new temp dir)")
    p.add_argument("--out", help="results JSON file")
    p.add_argument("--reliability", action="store_true",
                   help="also write the results under soak_terminal in docs/reliability.json")
    a = p.parse_args(argv)
    if a.refunds < 1 or a.cuts < 0 or a.settle_every < 0:
        p.error("--refunds >= 1, --cuts >= 0, --settle-every >= 0")

    def say(m):
        print(m, file=sys.stderr, flush=True)

    # SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C: the terminal process
    # is killed on the way out instead of left running on its flash image.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    heap = a.heap or ("96k" if a.interp == "32" else TERMINAL_HEAP)
    res = Soak(a.refunds, a.cuts, a.seed, a.interp, heap, a.settle_every, a.workdir, a.cancel, a.pace, say).run()
    res["command"] = "python -m host_tools.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(res, indent=1, sort_keys=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    if a.reliability:
        write_reliability(res)
    print(render_soak(res), file=sys.stderr)
    for v in res["violations"]:
        say("VIOLATION %s rid=%s seed=%s: %s\n  %s" % (v["kind"], v["rid"], v["seed"], v["what"],
                                                     "\n  ".join(v["log"])))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
