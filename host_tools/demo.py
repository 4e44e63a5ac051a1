"""make demo: boot the virtual board and show, honestly, what it mounted and started.

(The full shop-day demo arrives with the terminal application; until then this is
the board bring-up a technician would see.)
"""
import json
import os
import sys
import tempfile

from host_tools import REPO
from host_tools.vboard import Board


def main():
    work = tempfile.mkdtemp(prefix="refund-demo-")
    flash = os.path.join(work, "flash.img")
    print("== booting the virtual board (flash image %s)" % flash)
    b = Board(flash)
    try:
        st = b.ready()
        print(b.out.decode(errors="replace").rstrip())
        print("\n== far ends of the board's ttys:", json.dumps(b.ends))
        print("== board %s, reset reason %s, littlefs at %s: %d x %d B blocks, %d B free%s"
              % (st["board"], st["reset"], st["flash"]["mount"], st["flash"]["blocks"],
                 st["flash"]["block_size"], st["flash"]["free"],
                 " (formatted on first boot)" if st["flash"]["formatted"] else ""))
        print("== tasks started:", ", ".join(st["tasks"]))
        print("\n== technician: mpremote connect %s resume fs ls :/flash" % b.ends["console"])
        r = b.mpremote("exec", "import os; print(os.listdir('/flash')); import board; print(board.flash_stats())")
        print(r.stdout.rstrip() or r.stderr)
        print("\n== power cut (SIGKILL), then boot again from the same image")
        b.kill()
        b = Board(flash)
        st = b.ready()
        print("== second boot: formatted=%s, reset reason %s" % (st["flash"]["formatted"], st["reset"]))
    finally:
        b.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
