# HAL for the unix virtual board. The bench (host_tools/bench.py) sets the
# REFUND_* environment variables before it execs the interpreter.
# This is the only place that knows the board is a Linux process.
import os
import sys
import time
import vfs
import termios
import hashlib

NAME = "unix"
FLASH = "/flash"

# Board default config (merged under the user's config by the application).
# heap_headroom: what a print job, a host request and a service reply may need on top of
# what is live (measured by `python -m host_tools.memrun`): 8 KiB of 32-bit objects as on
# the ESP32 and RP2040 HALs, twice that on a 64-bit build (--interp 64).
DEFAULTS = {
    "printer_width": 58,
    "heap_headroom": 16384 if sys.maxsize > 0x7FFFFFFF else 8192,
}

_dev = None
_info = None
_env = os.getenv


def _int_env(name, default):
    v = _env(name)
    return int(v) if v else default


def _image():
    return _env("REFUND_FLASH") or "flash.img"


def mount_flash(log):
    """Mount littlefs at /flash; format only a blank or unmountable image."""
    global _dev, _info
    if _info is not None:
        return _info  # already mounted by the boot ROM stage
    from flashdev import FlashDev

    _dev = FlashDev(
        _image(),
        _int_env("REFUND_FLASH_BS", 4096),
        _int_env("REFUND_FLASH_BLOCKS", 256),
        _int_env("REFUND_CUT_AT", 0),
        _env("REFUND_CUT_TORN") == "1",
    )
    _info = mount_dev(_dev, log)
    return _info


# littlefs geometry: 512-byte reads cut the Python block device's calls against the
# 32-byte default; the cache is 4 x readsize (2 KiB) for littlefs and for every open file,
# on the heap: the 32-bit bench sets REFUND_LFS_READ=32 (128 B caches, an ESP32's stock
# mount), what a 96 KiB heap needs (measured with host_tools.memrun, docs/boards.md). 32-byte programs keep each small
# commit small; a 64-byte lookahead covers 512 blocks. Files up to 512 bytes stay inline
# in metadata.
LFS = {"readsize": _int_env("REFUND_LFS_READ", 512), "progsize": 32, "lookahead": 64}


def mount_dev(dev, log):
    info = {"mount": FLASH, "fs": "littlefs2", "block_size": dev.bs,
            "blocks": dev.n, "formatted": False}
    try:
        fs = vfs.VfsLfs2(dev, **LFS)
    except OSError as e:
        if dev.created:
            log("flash", "blank image: formatting littlefs")
        else:
            # Loud: a reformat of a used image loses whatever it held.
            log("flash", "CANNOT MOUNT (%r): REFORMATTING, previous content lost" % (e,),
                level="ERROR")
        vfs.VfsLfs2.mkfs(dev, **LFS)
        fs = vfs.VfsLfs2(dev, **LFS)
        info["formatted"] = True
    vfs.mount(fs, FLASH)
    st = os.statvfs(FLASH)
    info["free"] = st[0] * st[3]
    info["total"] = st[0] * st[2]
    return info


def config_path():
    """Where the terminal config lives: the bench passes a host file; else on flash."""
    return _env("REFUND_CONFIG") or FLASH + "/config.json"


def flash_stats():
    return _dev.stats() if _dev else {}


def flash_dev():
    return _dev


def _open_tty(role, path):
    try:
        f = open(path, "r+b")
    except OSError as e:
        raise OSError("uart %s: cannot open tty %s (%s)" % (role, path, e))
    fd = f.fileno()
    termios.setraw(fd)
    a = termios.tcgetattr(fd)
    a[6][6] = 0  # VMIN: reads never block the event loop
    a[6][5] = 0  # VTIME
    termios.tcsetattr(fd, termios.TCSANOW, a)
    return f


_UART_ENV = {"printer": "REFUND_PRINTER", "ecr": "REFUND_ECR"}
# The line rate of each UART: the printer's is the bench's (refund-bench --printer-baud),
# unless config printer_baud sets it at boot (uart_baud). On a pty it is the null-modem's
# throttle that makes it a line rate; on a USB serial adapter the tty runs at it.
_BAUD = {"printer": _int_env("REFUND_PRINTER_BAUD", 115200), "ecr": 115200}
_open = {}


def uart(role):
    """A raw, non-blocking byte stream usable with asyncio.StreamReader/Writer."""
    if role == "console":
        return console()
    var = _UART_ENV.get(role)
    if var is None:
        raise ValueError("unknown uart role %r (have: console, %s)" % (role, ", ".join(sorted(_UART_ENV))))
    path = _env(var)
    if not path:
        return None  # not wired on this bench run
    f = _open_tty(role, path)
    _open[role] = f
    _set_speed(f, _BAUD[role])
    return f


def uart_baud(role, baud=None):
    """The line rate role's UART runs at; with baud (config printer_baud), set it first."""
    if baud and baud != _BAUD[role]:
        _BAUD[role] = baud
        if role in _open:
            _set_speed(_open[role], baud)
    return _BAUD[role]


def _set_speed(f, baud):
    speed = getattr(termios, "B%d" % baud, None)
    if speed is None:
        return  # a rate this termios module has no name for: the tty keeps its own
    a = termios.tcgetattr(f.fileno())
    a[4] = a[5] = speed
    termios.tcsetattr(f.fileno(), termios.TCSANOW, a)


def console():
    # The USB console is the process's stdin/stdout (a raw tty set up by the bench).
    return sys.stdin.buffer


_out = None


def console_out():
    """Non-blocking console writer: write(buf) -> bytes taken, or None when the line is
    full. The bench passes a second descriptor of the console tty opened O_NONBLOCK
    (REFUND_CONSOLE_FD), so stdout itself stays blocking for the REPL and mpremote."""
    global _out
    if _out is None:
        fd = _env("REFUND_CONSOLE_FD")
        _out = open(int(fd), "wb") if fd else sys.stdout.buffer
    return _out


_skew = 0  # set_time(): the board's clock minus the host's


def now():
    return int(time.time()) + _skew  # UTC seconds; the unix port's epoch is 1970


def set_time(t):
    global _skew
    _skew = int(t) - int(time.time())


def localtime(t=None):
    return time.gmtime(t if t is not None else now())


def ticks_ms():
    return time.ticks_ms()


def unique_id():
    return hashlib.sha256(_image().encode()).digest()[:6]


def _marker():
    return _image() + ".reset"


def reset_reason():
    # Set by the software watchdog or machine_reset() before they kill the process;
    # a SIGKILL from the bench leaves none: that is a power-on.
    try:
        with open(_marker()) as f:
            r = f.read().strip()
        os.remove(_marker())
        return r or "power_on"
    except OSError:
        return "power_on"


def _hard_reset(reason):
    with open(_marker(), "w") as f:
        f.write(reason)
    # The shell's parent is this interpreter: end it like a reset line would.
    os.system("kill -9 $PPID")


def machine_reset():
    _hard_reset("soft")


class WDT:
    """Software watchdog: a thread kills the process if feed() stops."""

    def __init__(self, timeout_ms):
        import _thread

        self.timeout = timeout_ms
        self.last = time.ticks_ms()
        self.on = True
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self.last = time.ticks_ms()

    def _watch(self):
        while self.on:
            time.sleep_ms(100)
            if self.on and time.ticks_diff(time.ticks_ms(), self.last) > self.timeout:
                print("WDT: not fed for %d ms, resetting" % self.timeout)
                _hard_reset("watchdog")
                return


def wdt(timeout_ms):
    return WDT(timeout_ms)


def wdt_service_mode(w):
    """The app stopped for a technician at the REPL: keep the board from resetting."""
    w.on = False


def info():
    return {"board": NAME, "flash_image": _image(), "platform": sys.platform}
