# HAL for the qemu test board (ports/qemu MPS2_AN385, Cortex-M3; make qemu): the
# firmware's board-independent parts run here as on a microcontroller, frozen, on a
# 96 KiB heap. Flash is littlefs2 on `ramdisk.RAMDisk` (boards/qemu/cmod: static RAM
# outside the heap, kept across soft resets, power cut at the k-th program/erase like the
# virtual board's FlashDev). No UARTs, watchdog or RTC: the clock starts at
# 2026-01-01T00:00:00Z plus uptime, set_time() moves it.
import time
import vfs
import ramdisk

NAME = "qemu"
FLASH = "/flash"
DEFAULTS = {"printer_width": 58, "heap_headroom": 16384}

# Set before mount_flash() (the test harness does): geometry and the power cut.
CONF = {"block_size": 4096, "blocks": 256, "cut_at": 0, "torn": False}
LFS = {"readsize": 512, "progsize": 32, "lookahead": 64}  # as boards/unix/board.py

_EPOCH = 1767225600  # 2026-01-01T00:00:00Z
_dev = None
_info = None
_skew = 0


def mount_flash(log):
    """Mount littlefs at /flash; format only a blank or unmountable device."""
    global _dev, _info
    if _info is not None:
        return _info
    _dev = ramdisk.RAMDisk(block_size=CONF["block_size"], blocks=CONF["blocks"])
    _dev.arm(CONF["cut_at"], CONF["torn"])
    info = {"mount": FLASH, "fs": "littlefs2", "block_size": _dev.bs, "blocks": _dev.n,
            "formatted": False}
    try:
        fs = vfs.VfsLfs2(_dev, **LFS)
    except OSError as e:
        log("flash", "cannot mount (%r): formatting" % (e,))
        vfs.VfsLfs2.mkfs(_dev, **LFS)
        fs = vfs.VfsLfs2(_dev, **LFS)
        info["formatted"] = True
    vfs.mount(fs, FLASH)
    _info = info
    return info


def flash_dev():
    return _dev


def flash_stats():
    return _dev.stats() if _dev else {}


def now():
    return _EPOCH + time.ticks_ms() // 1000 + _skew


def set_time(t):
    global _skew
    _skew = int(t) - _EPOCH - time.ticks_ms() // 1000


def localtime(t=None):
    return time.gmtime(t if t is not None else now())


def ticks_ms():
    return time.ticks_ms()


def unique_id():
    return b"qemu01"


def reset_reason():
    return "power_on"


def info():
    return {"board": NAME}
