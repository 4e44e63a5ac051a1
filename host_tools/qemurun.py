"""Run scripts on the qemu test board: ports/qemu MPS2_AN385 (Cortex-M3) with the firmware
frozen in, under qemu-system-arm, its UART on a pty, driven through the raw REPL
(raw-paste mode, as mpremote and ports/qemu's `make test` via run-tests.py do).

  python -m host_tools.qemurun SCRIPT.py [SCRIPT.py ...]   # each after a soft reset
  python -m host_tools.qemurun -c "import refund.iso8583"

Each script runs in a fresh interpreter (soft reset: new VM and heap, same RAM "flash",
which is static RAM outside the heap). Prints the script's output; exit status 1 on an
exception on the board.
"""
import argparse
import os
import re
import select
import shutil
import subprocess
import sys
import time
import tty

from host_tools import REPO


class QemuError(AssertionError):
    pass


def _die_with_parent():
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphaned emulator


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
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=_die_with_parent)
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
        self.fd = os.open(pty, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.buf = b""
        os.write(self.fd, b"\r\x03\x03\r\x01")  # interrupt, raw REPL
        self._until(b"raw REPL; CTRL-B to exit\r\n>", 20)

    def _until(self, marker, timeout):
        """Read until marker; return what came before it (the rest stays buffered)."""
        end = time.time() + timeout
        while marker not in self.buf:
            left = end - time.time()
            if left <= 0 or self.proc.poll() is not None:
                raise QemuError("no %r from the qemu board within %ss; got %r"
                                % (marker, timeout, self.buf[-500:]))
            r, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if r:
                self.buf += os.read(self.fd, 65536)
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def _paste(self, data):
        """Raw-paste mode: the board grants a window of bytes and acks each with 0x01."""
        os.write(self.fd, b"\x05A\x01")
        self._until(b"R", 10)
        while len(self.buf) < 3:
            self._fill()
        if self.buf[:1] != b"\x01":
            raise QemuError("raw-paste refused: %r" % self.buf[:20])
        window = self.buf[1] | (self.buf[2] << 8)
        self.buf = self.buf[3:]
        credit, i = window, 0
        while i < len(data):
            while credit == 0 or self.buf:
                if not self.buf:
                    self._fill()
                c, self.buf = self.buf[:1], self.buf[1:]
                if c == b"\x01":
                    credit += window
                elif c == b"\x04":
                    raise QemuError("the board ended the paste early")
            n = min(credit, len(data) - i)
            os.write(self.fd, data[i:i + n])
            i += n
            credit -= n
        os.write(self.fd, b"\x04")
        self._until(b"\x04", 30)  # compiled; running

    def _fill(self, timeout=30):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            raise QemuError("the qemu board went silent")
        self.buf += os.read(self.fd, 65536)

    def run(self, code, timeout=120, soft_reset=True, check=True):
        """Run code (str) in a fresh interpreter; (stdout, stderr) as text."""
        if soft_reset:
            os.write(self.fd, b"\x04")  # soft reset at the raw REPL prompt
            self._until(b"soft reboot\r\n", 20)
            self._until(b"raw REPL; CTRL-B to exit\r\n>", 20)
        self._paste(code.encode() if isinstance(code, str) else code)
        out = self._until(b"\x04", timeout)
        err = self._until(b"\x04", timeout)
        self._until(b">", timeout)
        out, err = out.decode(errors="replace").replace("\r\n", "\n"), err.decode(errors="replace")
        if check and err:
            raise QemuError("exception on the qemu board:\n--- stdout\n%s\n--- stderr\n%s"
                            % (out[-4000:], err[-4000:]))
        return out, err

    def stash(self, slot, code):
        """Keep code in the board's static RAM (ramdisk.stash): later runs exec it without
        sending it again over the slow emulated UART."""
        data = code.encode() if isinstance(code, str) else code
        self.run("import ramdisk\nramdisk.stash(%d, %r)\n" % (slot, data))
        return "import ramdisk\nexec(ramdisk.stash(%d))\n" % slot

    def close(self):
        try:
            os.close(self.fd)
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
