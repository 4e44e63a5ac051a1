"""Run scripts on the qemu test board: ports/qemu MPS2_AN385 (Cortex-M3) with the firmware
frozen in, under qemu-system-arm, its UART on a pty, driven through the raw REPL
(mpremote's transport, as `make test` in ports/qemu does with run-tests.py).

  python -m host_tools.qemurun SCRIPT.py [SCRIPT.py ...]   # each after a soft reset
  python -m host_tools.qemurun -c "import refund.iso8583"

Each script runs in a fresh interpreter (soft reset: new VM and heap, same RAM "flash",
which is static RAM outside the heap). Prints the script's output; exit status 1 on an
exception on the board.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

from host_tools import REPO


class QemuError(AssertionError):
    pass


class Qemu:
    def __init__(self, elf=None, build=True):
        if elf is None:
            from host_tools import mpbuild

            elf = mpbuild.build("qemu") if build else mpbuild.binary("qemu")
        exe = shutil.which("qemu-system-arm")
        if not exe:
            raise QemuError("qemu-system-arm not found: apt-get install -y qemu-system-arm")
        self.proc = subprocess.Popen(
            [exe, "-machine", "mps2-an385", "-nographic", "-monitor", "null", "-semihosting",
             "-serial", "pty", "-kernel", elf],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
        pty, seen = None, b""
        end = time.time() + 20
        while pty is None and time.time() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen += line
            m = re.search(rb"redirected to (/dev/pts/\d+)", line)
            if m:
                pty = m.group(1).decode()
        if pty is None:
            self.close()
            raise QemuError("qemu printed no pty: %s" % seen.decode(errors="replace"))
        from mpremote.transport_serial import SerialTransport

        self.t = SerialTransport(pty, baudrate=115200)
        self.t.enter_raw_repl(soft_reset=False)

    def run(self, code, timeout=120, soft_reset=True, check=True):
        """Run code (str) in a fresh interpreter; (stdout, stderr) as text."""
        if soft_reset:
            self.t.serial.write(b"\x04")  # soft reset from the raw REPL prompt
            data = self.t.read_until(1, b"soft reboot\r\n", timeout_overall=20)
            if not data.endswith(b"soft reboot\r\n"):
                raise QemuError("no soft reboot: %r" % data[-200:])
            data = self.t.read_until(1, b"raw REPL; CTRL-B to exit\r\n", timeout_overall=20)
        self.t.exec_raw_no_follow(code)
        out, err = self.t.follow(timeout)
        out, err = out.decode(errors="replace").replace("\r\n", "\n"), err.decode(errors="replace")
        if check and err:
            raise QemuError("exception on the qemu board:\n--- stdout\n%s\n--- stderr\n%s"
                            % (out[-4000:], err[-4000:]))
        return out, err

    def close(self):
        try:
            self.t.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def main(argv=None):
    p = argparse.ArgumentParser(prog="qemurun", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scripts", nargs="*")
    p.add_argument("-c", dest="code", action="append", default=[])
    a = p.parse_args(argv)
    q = Qemu()
    rc = 0
    try:
        for code in a.code + [open(s).read() for s in a.scripts]:
            out, err = q.run(code, check=False)
            sys.stdout.write(out)
            if err:
                sys.stdout.write(err)
                rc = 1
    finally:
        q.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
