# The firmware frozen into a MicroPython build: the `refund` package (bytecode and
# constants in flash, no heap for them), its GB18030 table (refund/gb18030_tab.py, a
# bytes constant: a frozen module has no directory to read a data file from), main.py
# and asyncio. Every build uses this file:
#   make vboard32 / make qemu (host_tools/mpbuild.py), and a board build, e.g.
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$REPO/firmware/manifest.py
# (docs/boards.md). Options, through include("<this file>", board=..., asyncio_py=...):
#   board="esp32"|"rp2040"|"unix"  also freeze that board's HAL (boards/<board>/) as
#                                  `board` (and, for unix, its block device and ROM log)
#   asyncio_py=True                 freeze asyncio's pure-Python Task/TaskQueue too, for
#                                  a port built without the `_asyncio` C module
options.defaults(board=None, asyncio_py=False)

include("$(MPY_DIR)/extmod/asyncio")
if options.asyncio_py:
    package("asyncio", files=("task.py",), base_path="$(MPY_DIR)/extmod", opt=3)

module("main.py")
package("refund")
require("bisect")  # micropython-lib: the index, retry schedule and recent list search with it

if options.board:
    module("board.py", base_path="../boards/" + options.board)
    if options.board == "unix":
        module("flashdev.py", base_path="../boards/unix")
        module("refund_rom_log.py", base_path="../boards/unix")
