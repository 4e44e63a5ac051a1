"""The memory run of issue 11: the whole terminal on a given interpreter and heap through
1,000 refunds: 500 taken over the ECR link while the host is down (queued at once), the
host comes back and they drain while the printer runs out of paper and is reloaded, 500
more in normal service, then a full event-log pull over the service link. It passes when
every refund was accepted, approved once by the host and printed, and the console shows no
MemoryError, no refusal for lack of heap and no task restart.

    python -m host_tools.memrun --interp 32 --heap 96k          one run, JSON result
    python -m host_tools.memrun --interp 32 --smallest          bisect the smallest heap

`heap_headroom` (the board's refusal threshold) stays on: a refusal for memory fails the run."""
import argparse
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time

from host_tools import refundctl, svclink
from host_tools.bench_svc import pull
from host_tools.fwrun import KEY
from host_tools.hostsim import HostSim
from host_tools.nullmodem import NullModem
from host_tools.printer_emu import PrinterEmulator
from host_tools.vboard import Board

_BAD = re.compile(r"MemoryError|task \w+ failed|below headroom|Traceback")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _refund(link, i):
    # Every refund its own original sale: the duplicate guard must not refuse any.
    rep = link.request({"cmd": "REFUND", "seq": str(100000 + i), "amount": str(100 + i),
                        "currency": "156", "orrn": "%012d" % (700000000 + i), "op": "01", "pin": "1234"})
    return rep


def _status(link, i):
    return link.request({"cmd": "STATUS", "seq": str(900000 + i)})


def _printed(pr, cache=None):
    """rid -> original receipts printed (reprints and slips not counted)."""
    cache = {} if cache is None else cache
    out = {}
    for doc in list(pr.receipts):
        path = doc["files"]["txt"]
        if path not in cache:
            with open(path, encoding="utf-8") as f:
                t = f.read()
            cache[path] = () if "REPRINT" in t or "NOT A REFUND RECEIPT" in t else \
                tuple(set(re.findall(r"[A-Z0-9]{4}-\d{6}", t)))
        for rid in cache[path]:
            out[rid] = out.get(rid, 0) + 1
    return out


class _Console(threading.Thread):
    """Reads the board's console all along (a console nobody reads drops lines)."""

    def __init__(self, board):
        super().__init__(daemon=True)
        self.board = board
        self.paused = threading.Event()
        self.idle = threading.Event()
        self.done = False
        self.start()

    def run(self):
        while not self.done:
            if self.paused.is_set():
                self.idle.set()
                time.sleep(0.05)
                continue
            self.idle.clear()
            try:
                self.board.out += self.board.console.read(4096)
            except Exception:
                time.sleep(0.05)

    def pause(self):
        self.paused.set()
        self.idle.wait(2)

    def resume(self):
        self.paused.clear()


def _heap_kb(heap):
    return int(heap.rstrip("kK"))


def run(heap, interp="32", outage=500, after=500, workdir=None, timeout=900, log=None):
    """One run -> dict: ok, why (first failure), figures."""
    log = log or (lambda m: None)
    d = workdir or tempfile.mkdtemp(prefix="memrun-")
    os.makedirs(d, exist_ok=True)
    port = _free_port()
    nm = NullModem(baud=115200).start()
    pr = PrinterEmulator(os.path.join(d, "receipts"))
    pr.start(tty_path=nm.b, baud=115200)
    sim = None
    board = None
    res = {"heap": heap, "interp": interp, "refunds": outage + after, "ok": False, "why": ""}
    t0 = time.time()
    status_n = [0]
    total = _heap_kb(heap) * 1024
    low = [total]

    def watch(link):
        status_n[0] += 1
        st = _status(link, status_n[0])
        if "heap" in st:
            low[0] = min(low[0], int(st["heap"]))
        return st

    try:
        board = Board(os.path.join(d, "t.img"), cmd="terminal",
                      args=["--interp", interp, "--heap", heap, "--host", "127.0.0.1:%d" % port,
                            "--printer", nm.a])
        ready = board.ready(timeout=60)
        res["ready_free"] = ready.get("heap_free")
        if not ready.get("terminal"):
            res["why"] = "terminal did not start"
            return res
        con = _Console(board)
        link = refundctl.Link(board.ends["ecr"], timeout=5.0, tries=3)
        rids = []
        cache = {}
        pr.set_fault(paper_out_after=400)  # runs out a few receipts into the drain
        def host_back():
            nonlocal sim
            # The host comes back: the whole queue drains, printing meets the paper-out.
            res["queued_free"] = int(watch(link).get("heap", 0))
            sim = HostSim(bytes.fromhex(KEY), port=port, seed=1,
                          ledger_path=os.path.join(d, "ledger.jsonl"))
            sim.start()
            t_drain = time.time()
            while True:
                st = watch(link)
                if int(st.get("pending", "1")) == 0:
                    break
                if time.time() - t_drain > timeout / 3:
                    res["why"] = "outage queue did not drain: %r" % st
                    return False
                time.sleep(0.5)
            res["drain_s"] = round(time.time() - t_drain, 1)
            pr.set_fault(paper_out=False)  # the clerk reloads paper
            while int(watch(link).get("live", "1")):  # the receipts print
                if time.time() - t_drain > timeout / 2:
                    res["why"] = "outage receipts did not print"
                    return False
                time.sleep(1)
            res["print_s"] = round(time.time() - t_drain, 1)
            return True

        for i in range(outage + after):
            if i == outage and not host_back():
                return res
            rep = _refund(link, i)
            if "err" in rep:
                res["why"] = "refund %d refused: %s (%s)" % (i, rep.get("err"), rep.get("text", ""))
                return res
            rids.append(rep["rid"])
            if i % 100 == 99:
                watch(link)
                log("%s %s: %d refunds" % (interp, heap, i + 1))
        if not after and not host_back():
            return res
        end = time.time() + timeout / 3
        while time.time() < end:
            st = watch(link)
            if int(st.get("pending", "1")) == 0 and all(_printed(pr, cache).get(r) for r in rids):
                break
            time.sleep(1)
        con.pause()
        board.console.close()  # one owner of the port: the technician's tool now
        c = svclink.Client(board.ends["console"], timeout=3.0)
        c.wire = 0
        p = pull(c, tries=10)
        c.close()
        board.console.open()
        con.resume()
        res["log_pull"] = {"bytes": len(p["body"]), "frames": p["frames"], "s": round(p["seconds"], 1)}
        watch(link)
        res["lowest_free"] = low[0]
        res["peak_alloc"] = total - low[0]
        time.sleep(0.5)
        con.done = True
        text = board.out.decode(errors="replace")
        bad = [ln for ln in text.splitlines() if _BAD.search(ln)]
        ledger = {}
        for e in sim.ledger:  # money movements: refunds +, reversals -
            ledger[e["rid"]] = ledger.get(e["rid"], 0) + (1 if e["type"] == "refund" else -1)
        printed = _printed(pr)
        missing = [r for r in rids if ledger.get(r) != 1]
        unprinted = [r for r in rids if not printed.get(r)]
        res.update(approved=len(ledger), printed=len(printed), seconds=round(time.time() - t0, 1),
                   log_lines_bad=bad[:5])
        if bad:
            res["why"] = "console: " + bad[0]
        elif missing:
            res["why"] = "%d refunds not approved exactly once (first %s)" % (len(missing), missing[0])
        elif unprinted:
            res["why"] = "%d refunds without a receipt (first %s)" % (len(unprinted), unprinted[0])
        else:
            res["ok"] = True
        return res
    except Exception as e:  # a run that cannot go on is a failure with its reason
        res["why"] = "%s: %s" % (type(e).__name__, str(e)[-300:])
        if board is not None:
            try:
                time.sleep(0.5)
                if board.proc.poll() is not None:
                    res["why"] += "; the board died (exit %s)" % board.proc.poll()
                bad = [ln for ln in board.out.decode(errors="replace").splitlines() if _BAD.search(ln)]
                if bad:
                    res["why"] += "; console: " + bad[0]
            except Exception:
                pass
        return res
    finally:
        res.setdefault("seconds", round(time.time() - t0, 1))
        if board is not None:
            time.sleep(1.0)  # the reader thread takes the last lines (the failure's own)
            with open(os.path.join(d, "console.log"), "wb") as f:
                f.write(board.out)
            board.kill()
        pr.stop()
        nm.close()
        if sim is not None:
            sim.stop()


def smallest(interp, lo_kb, hi_kb, step_kb=8, log=None, **kw):
    """Smallest heap (a multiple of step_kb) in [lo, hi] that passes; (kb, result, runs)."""
    runs = []
    best = None
    while lo_kb <= hi_kb:
        mid = (lo_kb + hi_kb) // 2 // step_kb * step_kb
        mid = max(mid, lo_kb)
        r = run("%dk" % mid, interp, log=log, **kw)
        runs.append(r)
        if log:
            log("%s %dk: %s %s" % (interp, mid, "pass" if r["ok"] else "FAIL", r["why"]))
        if r["ok"]:
            best = (mid, r)
            hi_kb = mid - step_kb
        else:
            lo_kb = mid + step_kb
    return (best[0], best[1], runs) if best else (None, None, runs)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m host_tools.memrun", description=__doc__.split("\n")[0])
    p.add_argument("--interp", default="32")
    p.add_argument("--heap", default="96k")
    p.add_argument("--smallest", action="store_true", help="bisect the smallest passing heap")
    p.add_argument("--outage", type=int, default=500)
    p.add_argument("--after", type=int, default=500)
    a = p.parse_args(argv)

    def say(m):
        print(m, file=sys.stderr, flush=True)

    if a.smallest:
        kb, r, runs = smallest(a.interp, 64, 256, log=say, outage=a.outage, after=a.after)
        print(json.dumps({"smallest_kb": kb, "result": r, "runs": len(runs)}))
        return 0 if kb else 1
    r = run(a.heap, a.interp, a.outage, a.after, log=say)
    print(json.dumps(r))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
