# The virtual board's "ROM": what a real board's boot does before main.py.
# REFUND_FIRMWARE=<dir> runs firmware from a source tree; REFUND_FIRMWARE=flash
# runs what `make deploy BOARD=unix` put on the flash image, as a board would;
# REFUND_FIRMWARE=frozen runs the modules frozen into the interpreter (make vboard32:
# MICROPYPATH starts with .frozen), as production firmware on a board.
import os
import sys
import board

src = os.getenv("REFUND_FIRMWARE") or "flash"
if src == "flash":
    from refund_rom_log import log

    board.mount_flash(log)
    sys.path.insert(0, "/flash")
    sys.path.insert(0, "/flash/lib")
elif src == "frozen":
    pass  # .frozen leads sys.path: refund, main and the HAL are the frozen ones
else:
    sys.path.insert(0, src)
    if "lib" in os.listdir(src):
        sys.path.insert(0, src + "/lib")  # a built (mpy-cross) tree, laid out as on a board
try:
    import main  # noqa: F401  (runs the application)
except KeyboardInterrupt:
    print("application interrupted; REPL follows")
