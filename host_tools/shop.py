"""A shop on the bench: host simulator, printer emulator on a null-modem, the terminal
application on the virtual board, and refundctl on its ECR tty. Used by `make demo`
and the end-to-end tests, so both drive the product the same way."""
import json
import os
import subprocess
import sys
import time

from host_tools import REPO
from host_tools.fwrun import KEY
from host_tools.hostsim import Faults, HostSim
from host_tools.nullmodem import NullModem
from host_tools.printer_emu import PrinterEmulator
from host_tools.vboard import Board

BENCH_CFG = os.path.join(REPO, "boards", "unix", "bench-config.json")
CTL = os.path.join(os.path.dirname(sys.executable), "refundctl")


class Shop:
    def __init__(self, workdir, faults=None, config=None, sales=None, seed=1, printer_kw=None, heap=None,
                 interp="64", printer_baud=115200, tell_board=True):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.sim = HostSim(bytes.fromhex(KEY), seed=seed, faults=faults or Faults(),
                           ledger_path=os.path.join(self.dir, "ledger.jsonl"), sales=sales)
        self.sim.start()
        # The printer's line: the null-modem runs at printer_baud, the emulator's tty is
        # set to it, and the bench tells the board (refund-bench --printer-baud).
        # tell_board=False: the bench is not told (the config's printer_baud must say it).
        self.printer_baud = printer_baud
        self.tell_board = tell_board
        self.nm = NullModem(baud=printer_baud).start()
        self.printer = PrinterEmulator(os.path.join(self.dir, "receipts"), **(printer_kw or {}))
        self.printer.start(tty_path=self.nm.b, baud=printer_baud)
        self.flash = os.path.join(self.dir, "terminal.img")
        self.config = config
        self.heap = heap
        self.interp = interp  # "32": the 32-bit build, firmware frozen (--interp 32)
        self.board = None
        self.seq = int(time.time()) % 100000 * 10
        self.boot()

    def boot(self):
        args = ["--host", "127.0.0.1:%d" % self.sim.port, "--printer", self.nm.a]
        if self.tell_board:
            args += ["--printer-baud", str(self.printer_baud)]
        if self.config:
            args += ["--config", self.config]
        if self.heap:
            args += ["--heap", self.heap]
        if self.interp != "64":
            args += ["--interp", self.interp]
        self.board = Board(self.flash, args=args, cmd="terminal")
        self.status = self.board.ready(timeout=30)
        return self.status

    def power_cut(self):
        """SIGKILL the interpreter: the bench's power cut."""
        self.board.kill()

    def ctl(self, *args, seq=None, check=None, timeout=3, tries=3):
        if seq is None:
            self.seq += 1
            seq = self.seq
        cmd = [CTL, "--port", self.board.ends["ecr"], "--seq", str(seq), "--timeout", str(timeout),
               "--tries", str(tries)]
        r = subprocess.run(cmd + list(args) + ["--json"], capture_output=True, text=True, timeout=120)
        self.record("ctl.log", r.stdout + r.stderr)
        lines = r.stdout.strip().splitlines()
        out = json.loads(lines[-1]) if lines else {}
        out["_rc"] = r.returncode
        if check is not None:
            assert (r.returncode == 0) == check, (args, r.stdout, r.stderr)
        return out

    def refund(self, amount, orrn="ORIG00000001", op="01", pin="1234", extra=(), **kw):
        return self.ctl("refund", "--amount", str(amount), "--orig-rrn", orrn, "--operator", op,
                        "--pin", pin, *extra, **kw)

    def query(self, rid):
        return self.ctl("query", rid)

    def wait_state(self, rid, states, timeout=30):
        end = time.time() + timeout
        r = None
        while time.time() < end:
            r = self.query(rid)
            if r.get("state") in states:
                return r
            time.sleep(0.25)
        raise AssertionError("%s never reached %s (last %r)" % (rid, states, r))

    def receipts_for(self, rid):
        out = []
        for doc in list(self.printer.receipts):
            with open(doc["files"]["txt"], encoding="utf-8") as f:
                text = f.read()
            if rid in text:
                out.append((doc, text))
        return out

    def record(self, name, text):
        """Keep what the tools printed: the test suite scans it for secrets."""
        with open(os.path.join(self.dir, name), "a", encoding="utf-8", errors="replace") as f:
            f.write(text)

    def close(self):
        if self.board:
            try:
                if self.board.console is not None and self.board.console.is_open:
                    self.board.out += self.board.console.read(1 << 20)
            except Exception:
                pass  # the board is gone already: what was read is kept
            self.record("console.log", self.board.out.decode(errors="replace"))
            self.board.kill()
        self.printer.stop()
        self.nm.close()
        self.sim.stop()
