# rp2040 firmware with the refund terminal frozen in (docs/boards.md): the port's own manifest
# (boot script that mounts the flash, asyncio, the port's modules) plus the firmware's
# manifest with this board's HAL frozen as `board`. Build from a MicroPython checkout:
#   make -C ports/rp2 BOARD=RPI_PICO FROZEN_MANIFEST=$REPO/boards/rp2040/manifest.py
include("$(PORT_DIR)/boards/manifest.py")
include("../../firmware/manifest.py", board="rp2040")
