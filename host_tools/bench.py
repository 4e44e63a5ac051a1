"""refund-bench: run the firmware on the virtual board.

  refund-bench board [--flash FILE] [--console DEV] [--printer DEV] [--ecr DEV] [--baud N]
                     [--printer-baud N]
  refund-bench terminal [--flash FILE] [--host HOST:PORT] [--printer DEV] [--ecr DEV]
                        [--baud N] [--printer-baud N]
                        [--console DEV] [--terminal-id ID] [--merchant-id ID] [--mac-key HEX]
                        [--config FILE]

Device options are tty paths the firmware opens. For every one not given the bench
creates a null-modem and prints one JSON line {"console": ..., "printer": ..., "ecr": ...}
with the far ends. The bench then *execs* the interpreter (same PID), so SIGKILL to
it is a power cut; the null-modem bridge runs in a child that dies with it.
"""
import argparse
import ctypes
import json
import os
import signal
import sys
import termios
import tty

from host_tools import BOARDS, vboard
from host_tools.nullmodem import NullModem

ROLES = ("console", "printer", "ecr")
CONSOLE_OUT_FD = 3


def _die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _check_tty(role, path):
    if not os.path.exists(path):
        raise SystemExit("refund-bench: %s tty %s does not exist" % (role, path))
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    is_tty = os.isatty(fd)
    os.close(fd)
    if not is_tty:
        raise SystemExit("refund-bench: %s device %s is not a tty" % (role, path))


def _raw_console(fd):
    # mpremote needs a byte-clean console: no echo, no ONLCR.
    tty.setraw(fd)
    a = termios.tcgetattr(fd)
    a[1] &= ~termios.OPOST
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _terminal_config(a):
    """Bench config file + command-line overrides -> a JSON file the firmware reads."""
    with open(a.config) as f:
        cfg = json.load(f)
    for key, val in (("host", a.host), ("terminal_id", a.terminal_id),
                     ("merchant_id", a.merchant_id), ("mac_key", a.mac_key)):
        if val:
            cfg[key] = val
    path = os.path.abspath(a.flash) + ".config.json"
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


FIRMWARE = ("src", "mpy", "flash", "frozen")
PRINTER_BAUD_HELP = ("the printer's line rate (default --baud, else 115200): the printer null-modem "
                     "the bench creates runs at it, and the board's printer UART (the driver paces "
                     "to it unless the config's printer_baud says otherwise)")
INTERP_HELP = ("64 (default): the pinned MicroPython (64-bit); 32: the unix port built 32-bit "
               "with the firmware frozen in (make vboard32; built on demand), firmware from "
               "its frozen modules unless --firmware says otherwise")


def cmd_board(a):
    if a.board not in BOARDS:
        raise SystemExit("refund-bench: unknown board %r; boards: %s" % (a.board, ", ".join(BOARDS)))
    if a.board != "unix":
        raise SystemExit("refund-bench: only the 'unix' virtual board runs on the bench; "
                         "deploy to %s with 'make deploy BOARD=%s PORT=DEV'" % (a.board, a.board))
    devs = {r: getattr(a, r) for r in ROLES}
    for role, path in devs.items():
        if path:
            _check_tty(role, path)
    modems = []
    far = {}
    # The printer's line rate: its null-modem (if the bench makes it) runs at it, and the
    # board's printer UART says so (REFUND_PRINTER_BAUD: the driver paces to it).
    printer_baud = getattr(a, "printer_baud", None) or a.baud
    for role in ROLES:
        if not devs[role]:
            nm = NullModem(printer_baud if role == "printer" else a.baud)
            modems.append(nm)
            devs[role], far[role] = nm.a, nm.b
    if modems:
        pid = os.fork()
        if pid == 0:  # bridge child: lives exactly as long as the board
            _die_with_parent()
            if os.getppid() == 1:
                os._exit(0)
            for nm in modems:
                nm.start()
            signal.pause()
            os._exit(0)
        print(json.dumps(far), flush=True)
    flash = a.flash
    os.makedirs(os.path.dirname(os.path.abspath(flash)), exist_ok=True)
    interp = getattr(a, "interp", "64")
    if a.firmware is None:
        a.firmware = "frozen" if interp == "32" else "mpy"
    if a.firmware == "frozen" and interp != "32":
        raise SystemExit("refund-bench: --firmware frozen needs --interp 32 (the pinned "
                         "interpreter has no firmware frozen in)")
    exe = vboard.interpreter(interp)  # --interp 32: built (or found cached) before the exec
    if a.firmware == "mpy":
        from host_tools.deploy import cached_build

        firmware = cached_build("unix")
    else:
        firmware = {"flash": "flash", "frozen": "frozen"}.get(a.firmware, vboard.FIRMWARE)
    env = vboard.board_env(flash, devs["printer"], devs["ecr"], firmware=firmware)
    if printer_baud:
        env["REFUND_PRINTER_BAUD"] = str(printer_baud)
    else:
        env.pop("REFUND_PRINTER_BAUD", None)
    if interp == "32":
        env["MICROPYPATH"] = vboard.frozen_path()
        # What a board runs: littlefs caches of 128 B per open file (an ESP32's stock
        # mount: 32-byte reads), not the 2 KiB the 64-bit bench uses to save block-device
        # calls. At 96 KiB, 512 B and then 256 B caches failed to open journal files once
        # the heap had fragmented (python -m host_tools.memrun, docs/boards.md).
        env.setdefault("REFUND_LFS_READ", "32")
    if getattr(a, "config", None):
        env["REFUND_CONFIG"] = _terminal_config(a)
    else:
        env.pop("REFUND_CONFIG", None)
    cfd = os.open(devs["console"], os.O_RDWR | os.O_NOCTTY)
    _raw_console(cfd)
    sys.stdout.flush()
    os.dup2(cfd, 0)
    os.dup2(cfd, 1)
    os.close(cfd)
    # The application's console output: the same tty opened again, O_NONBLOCK, as its
    # own open file (fds 0/1 stay blocking for the REPL and mpremote). A console nobody
    # reads then costs dropped lines, never a stalled terminal (docs/service-link.md).
    nfd = os.open(devs["console"], os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    os.dup2(nfd, CONSOLE_OUT_FD)
    if nfd != CONSOLE_OUT_FD:
        os.close(nfd)
    env["REFUND_CONSOLE_FD"] = str(CONSOLE_OUT_FD)
    argv = vboard.board_argv(a.heap)
    argv[0] = exe
    os.execve(argv[0], argv, env)


def main(argv=None):
    p = argparse.ArgumentParser(prog="refund-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("board", help="boot the virtual board")
    b.add_argument("--board", default="unix", help="board name (%s)" % ", ".join(BOARDS))
    b.add_argument("--flash", default="build/flash.img", help="flash image file (created on first boot)")
    for role in ROLES:
        b.add_argument("--" + role, metavar="DEV", help="tty path for the %s" % role)
    b.add_argument("--baud", type=int, default=None, help="throttle created null-modems to this baud")
    b.add_argument("--printer-baud", type=int, default=None, metavar="N", help=PRINTER_BAUD_HELP)
    b.add_argument("--heap", default=vboard.DEFAULT_HEAP, help="MicroPython heap size (-X heapsize)")
    b.add_argument("--interp", choices=vboard.INTERPS, default="64", help=INTERP_HELP)
    b.add_argument("--firmware", choices=FIRMWARE, default=None,
                   help="default mpy (frozen with --interp 32): the source tree compiled with mpy-cross, as deployed "
                        "(compiling the sources on the board needs more heap than it has); src: "
                        "the source tree; flash: what 'make deploy' put on flash")
    b.set_defaults(fn=cmd_board)
    t = sub.add_parser("terminal", help="run the whole terminal application on the virtual board")
    t.add_argument("--board", default="unix", help=argparse.SUPPRESS)
    t.add_argument("--flash", default="build/terminal.img", help="flash image file")
    for role in ROLES:
        t.add_argument("--" + role, metavar="DEV", help="tty path for the %s" % role)
    t.add_argument("--host", metavar="HOST:PORT", help="payment host (default: from the config)")
    t.add_argument("--terminal-id")
    t.add_argument("--merchant-id")
    t.add_argument("--mac-key", metavar="HEX")
    t.add_argument("--config", default=os.path.join(vboard.UNIX_BOARD, "bench-config.json"),
                   help="terminal config JSON (default: the TEST-ONLY bench config)")
    t.add_argument("--baud", type=int, default=None, help="throttle created null-modems to this baud")
    t.add_argument("--printer-baud", type=int, default=None, metavar="N", help=PRINTER_BAUD_HELP)
    t.add_argument("--heap", default=vboard.TERMINAL_HEAP, help="MicroPython heap size (-X heapsize)")
    t.add_argument("--interp", choices=vboard.INTERPS, default="64", help=INTERP_HELP)
    t.add_argument("--firmware", choices=FIRMWARE, default=None,
                   help="default mpy: the source tree compiled with mpy-cross, as deployed; "
                        "frozen (the default with --interp 32): the modules frozen in the build")
    t.set_defaults(fn=cmd_board)
    n = sub.add_parser("nullmodem", help="create a virtual serial cable and print its two ends")
    n.add_argument("--baud", type=int, default=None)
    n.set_defaults(fn=cmd_nullmodem)
    a = p.parse_args(argv)
    return a.fn(a)


def cmd_nullmodem(a):
    nm = NullModem(a.baud)
    print(json.dumps({"a": nm.a, "b": nm.b}), flush=True)
    try:
        nm.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
