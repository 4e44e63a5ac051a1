# HAL for RP2040-class boards: real machine.UART / WDT / RTC, littlefs on the
# board's flash (rp2.Flash, the stock MicroPython filesystem region).
import os
import sys
import time
import vfs
import machine

NAME = "rp2040"
_EPOCH = 0  # time.time() is Unix time on this port
# The stock boot mounts littlefs at "/"; firmware data lives at FLASH + "/...".
FLASH = ""

DEFAULTS = {
    "printer_width": 58,
    "heap_headroom": 8192,
}

# role -> (UART id, tx pin, rx pin, baud); config printer_baud overrides the printer's.
# _open: role -> [the machine.UART uart() made, its baud now].
UARTS = {
    "printer": (0, 0, 1, 115200),
    "ecr": (1, 4, 5, 115200),
}
_open = {}

_RESET = {
    machine.PWRON_RESET: "power_on",
    machine.WDT_RESET: "watchdog",
}


def mount_flash(log):
    """The stock boot has mounted littlefs at "/"; mount it ourselves only if it did not."""
    info = {"mount": "/", "fs": "littlefs2", "formatted": False}
    try:
        st = os.statvfs("/")
    except OSError:
        st = None
    if st is None or os.listdir("/") is None:
        import rp2

        dev = rp2.Flash()
        try:
            fs = vfs.VfsLfs2(dev, progsize=256)
        except OSError as e:
            log("flash", "CANNOT MOUNT (%r): REFORMATTING, previous content lost" % (e,),
                level="ERROR")
            vfs.VfsLfs2.mkfs(dev, progsize=256)
            fs = vfs.VfsLfs2(dev, progsize=256)
            info["formatted"] = True
        vfs.mount(fs, "/")
        st = os.statvfs("/")
    info["block_size"] = st[0]
    info["blocks"] = st[2]
    info["free"] = st[0] * st[3]
    info["total"] = st[0] * st[2]
    return info


def config_path():
    return "/config.json"  # provisioned with mpremote fs cp


def flash_stats():
    return {}


def uart(role):
    if role == "console":
        return console()
    cfg = UARTS.get(role)
    if cfg is None:
        raise ValueError("unknown uart role %r (have: console, %s)" % (role, ", ".join(sorted(UARTS))))
    uid, tx, rx, baud = cfg
    u = machine.UART(uid, baudrate=baud, tx=machine.Pin(tx), rx=machine.Pin(rx),
                     rxbuf=1024, timeout=0)
    _open[role] = [u, baud]
    return u


def uart_baud(role, baud=None):
    """The line rate role's UART runs at (the role table's); with baud (config
    printer_baud: the printer's DIP switches), the UART is set to it first."""
    o = _open.get(role)
    if o is None:
        return baud or UARTS[role][3]
    if baud and baud != o[1]:
        o[0].init(baudrate=baud)
        o[1] = baud
    return o[1]


def console():
    return sys.stdin.buffer


class _PolledOut:
    # USB CDC / UART REPL: a plain write blocks while the host does not read (up to the
    # TX timeout on every call). Write only what poll says fits, so the app never waits.
    def __init__(self, s):
        import select

        self.s = s
        self.p = select.poll()
        self.p.register(s, select.POLLOUT)

    def write(self, mv):
        if not self.p.poll(0):
            return None
        return self.s.write(mv[:64])  # small pieces: the CDC buffer takes at least this


def console_out():
    """Non-blocking console writer: write(buf) -> bytes taken, or None."""
    return _PolledOut(sys.stdout.buffer)


def set_time(t):
    import machine as m

    tm = time.gmtime(t - _EPOCH)
    m.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))


def now():
    return time.time()  # rp2 port uses the Unix epoch; RTC set by the host link


def localtime(t=None):
    return time.gmtime(t) if t is not None else time.gmtime()


def ticks_ms():
    return time.ticks_ms()


def unique_id():
    return machine.unique_id()


def reset_reason():
    return _RESET.get(machine.reset_cause(), "unknown")


def machine_reset():
    machine.reset()


def wdt(timeout_ms):
    return machine.WDT(timeout=min(timeout_ms, 8388))  # RP2040 WDT max ~8.3 s


_service_timer = None


def wdt_service_mode(w):
    """The app stopped for a technician at the REPL. A started WDT cannot be
    stopped on this chip, so a timer keeps feeding it while the REPL is in use."""
    global _service_timer
    _service_timer = machine.Timer(-1)
    _service_timer.init(period=1000, callback=lambda t: w.feed())


def info():
    return {"board": NAME, "freq": machine.freq(), "platform": sys.platform}
