"""Printer status bytes fuzzed against the printer driver (issue 14, fuzz campaigns): the
firmware's outbox + `refund.printer.Printer` on MicroPython (tests/mp/printer_fuzz.py)
over a real pty (NullModem at BAUD, 460800: receipts into the void go fast), approved refunds waiting and more arriving,
and on the other end a "printer" that prints nothing and answers every status request
(DLE EOT 1/2/4, GS r 1, GS I 67) with fuzz: right and wrong status bytes, random bytes,
several bytes, XON/XOFF, silence, late replies, identification frames that are not the
model (other names, cut, slow, one byte off), plus noise between requests. It answers the
driver's first two GS I 67 with the real model frame (the driver learns the model, so the
completion proof is the exact frame) and never again.

Checked: no entry becomes `printed` while the line is noise (no real completion came),
the printer task never dies and logs no error; then the printer emulator takes the line
and every approved refund ends printed, with at most one original of each copy on paper
(none for a refund whose print had begun: its copies are REPRINTs), a complete copy of
each, in approval order (test_printer_driver.check_paper).
REFUND_FUZZ_N status replies (default 300; make soak 10,000), REFUND_FUZZ_SEED (default 1004)."""
import json
import os
import random
import select
import subprocess
import threading
import time
import tty

from host_tools import REPO, reliability, vboard
from host_tools.nullmodem import NullModem
from host_tools.printer_emu import PrinterEmulator
from host_tools.printer_faults import IDENTITY

from test_printer_driver import CFG, check_paper

N = int(os.environ.get("REFUND_FUZZ_N", "300"))
SEED = int(os.environ.get("REFUND_FUZZ_SEED", "1004"))
RUNNER = os.path.join(REPO, "tests", "mp", "printer_fuzz.py")
BAUD = 460800  # the line and the driver's pacing
MODEL = IDENTITY[67]  # the emulator's model frame: "_REFUND-EMU\0"
OPTS = {"status_ms": 25, "poll_ms": 10, "idle_ms": 200, "xoff_check_ms": 40, "xoff_max_ms": 300,
        "settle_ms": 5, "confirm_ms": 250}
AFTER = {"status_ms": 300, "poll_ms": 100, "xoff_check_ms": 300, "xoff_max_ms": 60000, "settle_ms": 60,
         "confirm_ms": 10000}  # the emulator's line: test_printer_driver's timings
F_PRINTING = 2
READY = {1: 0x12, 2: 0x12, 4: 0x12}
FAULTS = {1: [0x1A, 0x1E], 2: [0x16, 0x32, 0x52], 4: [0x72, 0x7E, 0x1E]}
REQUESTS = ((b"\x10\x04\x01", "eot1"), (b"\x10\x04\x02", "eot2"), (b"\x10\x04\x04", "eot4"),
            (b"\x1dr\x01", "gsr"), (b"\x1dI\x43", "gsi"))


class NoisePrinter:
    """The other end of the line: never prints, answers with fuzz."""

    def __init__(self, path, n, seed):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.n = n
        self.rnd = random.Random(seed)
        self.cats = {}
        self.sent = 0
        self.idents = 0  # genuine model frames sent (the driver's learning only)
        self.tail = b""  # the last bytes sent: the model frame must never form
        self.buf = b""
        self.names = 0
        self.done = threading.Event()
        self.stop_ = threading.Event()
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def _send(self, data):
        if not data:
            return
        while MODEL in self.tail[-len(MODEL):] + data:
            data = data.replace(b"\x00", b"\x01")  # never the model frame, however it is cut
        self.tail = (self.tail + data)[-64:]
        try:
            os.write(self.fd, data)
        except OSError:
            pass

    def _case(self, cat, data=b"", later=0.0):
        self.cats[cat] = self.cats.get(cat, 0) + 1
        self.sent += 1
        if self.sent >= self.n:
            self.done.set()
        if later:
            threading.Timer(later, lambda: None if self.stop_.is_set() else self._send(data)).start()
        else:
            self._send(data)

    def answer(self, kind):
        rnd = self.rnd
        if kind == "gsi" and self.idents < 2:  # the driver learns the model: the real frame
            self.idents += 1
            os.write(self.fd, MODEL)
            self.tail = b""
            return
        k = rnd.randrange(10)
        if kind.startswith("eot"):
            n = int(kind[3])
            if k <= 5:  # ready often enough that receipts start and reach the completion check
                return self._case("status_ready", bytes((READY[n],)))
            if k == 6:
                return self._case("status_fault", bytes((rnd.choice(FAULTS[n]),)))
        elif kind == "gsr":
            if k <= 2:
                return self._case("gsr_paper_ok", b"\x00")
            if k == 3:
                return self._case("gsr_paper_end", bytes((rnd.choice([0x0C, 0x0F]),)))
        else:
            if k <= 1:
                self.names += 1
                return self._case("ident_other", b"_OTHER%06d\x00" % self.names)
            if k == 2:
                return self._case("ident_cut", MODEL[:rnd.randint(1, len(MODEL) - 1)])
            if k == 3:
                b = bytearray(MODEL)
                b[rnd.randint(1, len(b) - 2)] ^= 1 << rnd.randrange(7)
                self.names += 1  # each one different: the same other frame twice is another printer
                return self._case("ident_one_off", bytes(b[:-1]) + b"%d\x00" % self.names)
        k = rnd.randrange(8)
        if k == 0:
            return self._case("random_byte", bytes((rnd.randrange(256),)))
        if k == 1:
            return self._case("random_bytes", bytes(rnd.randrange(256) for _ in range(rnd.randint(2, 24))))
        if k == 2:
            return self._case("silence")
        if k == 3:
            return self._case("late", bytes((rnd.randrange(256),)), later=rnd.choice([0.08, 0.2, 0.5]))
        if k == 4:
            return self._case("xoff", b"\x13")
        if k == 5:
            return self._case("xon", b"\x11")
        if k == 6:  # a status byte with the fixed bits broken
            return self._case("status_bad_bits", bytes((rnd.choice([0x92, 0x13, 0x02, 0xFF, 0x00]),)))
        self._case("slow_frame", b"_SL")  # the rest comes after the frame's gap limit
        threading.Timer(0.1, lambda: None if self.stop_.is_set() else self._send(b"OW\x00")).start()

    def serve(self):
        last_noise = time.time()
        while not self.stop_.is_set():
            r, _, _ = select.select([self.fd], [], [], 0.01)
            if r:
                try:
                    self.buf += os.read(self.fd, 4096)
                except OSError:
                    pass
                while True:
                    hits = [(self.buf.find(req), req, kind) for req, kind in REQUESTS if req in self.buf]
                    if not hits:
                        self.buf = self.buf[-2:]
                        break
                    i, req, kind = min(hits)
                    self.buf = self.buf[i + len(req):]
                    self.answer(kind)
            if time.time() - last_noise > 0.05:  # noise between requests
                last_noise = time.time()
                if self.rnd.random() < 0.3:
                    k = self.rnd.randrange(3)
                    if k == 0:
                        self._case("noise", bytes(self.rnd.randrange(256) for _ in range(self.rnd.randint(1, 40))))
                    elif k == 1:
                        self._case("noise_xoff_xon", self.rnd.choice([b"\x13", b"\x11", b"\x13\x11"]))
                    else:
                        self._case("noise_status", bytes((self.rnd.choice([0x12, 0x16, 0x1A, 0x72]),)))

    def stop(self, drain=False):
        """drain: stay on the line, silent, until the driver has given up the job it was
        streaming (only status requests come for 0.5 s): a printer plugged in mid-receipt
        would print the rest of it, a fragment no check could tell from a fault."""
        self.stop_.set()
        self.t.join(5)
        t0 = quiet = time.time()
        while drain and time.time() - quiet < 0.5 and time.time() - t0 < 10:
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                for req in [q for q, _ in REQUESTS] + [b"\x10\x05\x02"]:
                    data = data.replace(req, b"")
                if data:
                    quiet = time.time()
        os.close(self.fd)


def run_campaign(tmp_path, n, seed, refunds=4):
    img = str(tmp_path / "flash.img")
    switch = str(tmp_path / "switch")
    nm = NullModem(baud=BAUD).start()
    noise = NoisePrinter(nm.b, n, seed)
    cfg = {"cfg": CFG, "opts": OPTS, "baud": BAUD, "n": refunds, "add_ms": 2000, "after": AFTER, "switch": switch, "deadline_ms": 10 ** 7}
    with open(img + ".json", "w") as f:
        json.dump(cfg, f, ensure_ascii=False)
    env = vboard.board_env(img, printer=nm.a)
    env["REFUND_PRINTER_BAUD"] = str(BAUD)
    env["MICROPYPATH"] = vboard.mp_path(vboard.FIRMWARE)
    p = subprocess.Popen([vboard.micropython(), "-X", "heapsize=256k", RUNNER, img + ".json"], env=env,
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    snapped = threading.Event()

    def reader():
        for l in p.stdout:
            lines.append(l.rstrip("\n"))
            if os.environ.get("FUZZ_DEBUG"):
                print("%.2f" % time.time(), l.rstrip())
            if l.startswith(("SNAPPED", "DIED", "RESULT")):
                snapped.set()

    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    t0 = time.time()
    violations = []
    emu = None
    try:
        while not noise.done.wait(0.5):
            if p.poll() is not None:
                break
            if time.time() - t0 > 60 + n / 5:
                violations.append("the fuzz stalled at %d replies" % noise.sent)
                break
        noise.stop(drain=True)
        with open(switch, "w"):
            pass
        snapped.wait(30)
        fuzz_s = time.time() - t0
        emu = PrinterEmulator(str(tmp_path / "paper"), font="none", lines_per_sec=None)
        emu.start(nm.b, baud=BAUD)
        p.wait(120 + n / 50)
    finally:
        if not noise.stop_.is_set():
            noise.stop()
        if p.poll() is None:
            p.kill()
            p.wait()
        rt.join(10)
    time.sleep(0.3)  # the emulator writes receipts off its receive path
    try:
        with emu.lock:
            receipts = list(emu.receipts)
        stats = dict(emu.stats)
    finally:
        emu.stop()
        nm.close()
    violations += ["printer task died: " + l for l in lines if l.startswith("DIED")]
    violations += ["error logged: " + l for l in lines if l.startswith("LOG ERROR")]
    violations += ["printed without a real completion: " + l for l in lines if l.startswith("PRINTED")][:5]
    snap = {}
    for l in lines:
        if l.startswith("SNAP "):
            _, rid, state, flags, aver = l.split()
            snap[rid] = (state, int(flags))
    res_line = [l for l in lines if l.startswith("RESULT ")]
    res = json.loads(res_line[-1][7:]) if res_line else None
    checked = {}
    if res is None:
        violations.append("no result (exit %s): %s" % (p.returncode, "\n".join(lines[-20:])))
    else:
        res["log"] = lines
        res["entries"] = [json.loads(l[2:]) for l in lines if l.startswith("E ")]
        try:
            segs = check_paper(res, receipts, emu, exact_originals=False)
            begun = {r for r, (st, fl) in snap.items() if fl & F_PRINTING}
            for e in res["entries"]:
                origs = [s for s in segs if s["rid"] == e["rid"] and not s["reprint"] and s["complete"]]
                if e["rid"] not in begun and len(origs) != 2:
                    violations.append("%s: never begun in the noise, %d complete originals" % (e["rid"], len(origs)))
                if e["rid"] in begun and origs:
                    violations.append("%s: an original after its print had begun" % e["rid"])
            checked = {"refunds": len(res["entries"]), "begun_in_noise": len(begun),
                       "reprinted_after_noise": sum(1 for s in segs if s["reprint"]) // 2,
                       "originals_after_noise": sum(1 for s in segs if s["kind"] == "merchant" and not s["reprint"]),
                       "aborted_jobs": res["status"]["aborted"], "garbage_bytes": res["status"]["garbage"],
                       "emulator_overruns": stats["overrun"]}
        except AssertionError as e:
            violations.append("paper check: %s" % str(e)[:500])
    return noise, checked, violations, fuzz_s


def test_fuzzed_printer_status_never_marks_printed_and_all_print_once(tmp_path):
    noise, checked, violations, secs = run_campaign(tmp_path, N, SEED)
    print("printer fuzz: %d replies, seed %d, %.0f s, categories %s, checked %s"
          % (noise.sent, SEED, secs, json.dumps(noise.cats, sort_keys=True), checked))
    for v in violations[:20]:
        print("printer fuzz violation (seed %d): %s" % (SEED, v))
    reliability.record("fuzz_printer_status", noise.sent, SEED, noise.cats, violations, checked=checked,
                       seconds=round(secs))
    assert not violations, "seed %d: %s" % (SEED, violations[:5])
    assert noise.idents == 2 and checked["refunds"] > 4 and checked["aborted_jobs"] > 0, checked
