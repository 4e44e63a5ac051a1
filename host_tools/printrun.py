"""Run the printer driver (firmware/refund/printer.py) on MicroPython on the virtual
board against a printer on a tty (e.g. a NullModem end served by PrinterEmulator).

    run = PrintRun(img, tty, n=3, approve=[2, 0, 1], decline=[[3, "51"]]).start()
    res = run.wait(60)       # dict: entries, status, log lines, ...
    run.kill()               # power cut: SIGKILL the interpreter (no RESULT then)

Configuration goes to the MicroPython runner (host_tools/mp/print_run.py) through a
JSON file, never argv (argv strings >= 255 chars crash the interpreter)."""
import json
import os
import signal
import subprocess

from host_tools import REPO, vboard

RUNNER = os.path.join(REPO, "host_tools", "mp", "print_run.py")


class PrintRun:
    def __init__(self, img, tty, heap="256k", **cfg):
        self.img = img
        self.tty = tty
        self.heap = heap
        self.cfg = cfg
        self.proc = None
        self.out = self.err = ""

    def start(self):
        env = vboard.board_env(self.img, printer=self.tty)
        env["MICROPYPATH"] = vboard.mp_path(vboard.FIRMWARE)
        path = self.img + ".print.json"
        with open(path, "w") as f:
            json.dump(self.cfg, f, ensure_ascii=False)
        self.proc = subprocess.Popen([vboard.micropython(), "-X", "heapsize=" + self.heap,
                                      RUNNER, path], env=env, cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def wait(self, timeout=60):
        """Wait for the runner; its RESULT as a dict (+ "log", "boot", "stdout")."""
        self.out, self.err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise AssertionError("print runner exited %d\n--- stdout\n%s\n--- stderr\n%s"
                                 % (self.proc.returncode, self.out[-4000:], self.err[-4000:]))
        return parse(self.out)

    def kill(self):
        """Power cut: SIGKILL, whatever the interpreter is doing."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.out, self.err = self.proc.communicate(timeout=10)
        return self.out


def parse(out):
    lines = out.splitlines()
    res = [l for l in lines if l.startswith("RESULT ")]
    if not res:
        raise AssertionError("no RESULT from the print runner:\n" + out[-4000:])
    r = json.loads(res[-1][7:])
    r["log"] = [l[4:] for l in lines if l.startswith("LOG ")]
    r["boot"] = {}
    for l in lines:
        if l.startswith("BOOT "):
            _, rid, state, flags = l.split()
            r["boot"][rid] = (state, int(flags))
    r["stdout"] = out
    return r


def run_print(img, tty, timeout=60, **cfg):
    return PrintRun(img, tty, **cfg).start().wait(timeout)
