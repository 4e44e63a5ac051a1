# esp32 firmware with the refund terminal frozen in (docs/boards.md): the port's own manifest
# (boot script that mounts the flash, asyncio, the port's modules) plus the firmware's
# manifest with this board's HAL frozen as `board`. Build from a MicroPython checkout:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$REPO/boards/esp32/manifest.py
include("$(PORT_DIR)/boards/manifest.py")
include("../../firmware/manifest.py", board="esp32")
