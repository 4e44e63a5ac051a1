# ESC/POS byte builder and status decoding (Epson TM command set, as on the thermal
# printers of Chinese bank terminals). Pure functions returning bytes; no I/O here.
from micropython import const

XON = const(0x11)
XOFF = const(0x13)

ALIGN_LEFT = const(0)
ALIGN_CENTER = const(1)
ALIGN_RIGHT = const(2)

QR_EC_L = const(48)
QR_EC_M = const(49)
QR_EC_Q = const(50)
QR_EC_H = const(51)

_CODEPAGE_WPC1252 = const(16)

INIT = b"\x1b@"
CJK_ON = b"\x1c&"  # FS &: GB18030 double-byte mode
CJK_OFF = b"\x1c."  # FS .
LF = b"\n"
CUT = b"\x1dV\x00"  # GS V 0: full cut
PARTIAL_CUT = b"\x1dV\x01"
# Start of every slip: reset, code page 16 for the single-byte symbols, Chinese mode.
START = INIT + b"\x1bt" + bytes((_CODEPAGE_WPC1252,)) + CJK_ON

# Real-time status requests (answered at once, even offline or with a full buffer).
STATUS_PRINTER = b"\x10\x04\x01"
STATUS_OFFLINE = b"\x10\x04\x02"
STATUS_ERROR = b"\x10\x04\x03"
STATUS_PAPER = b"\x10\x04\x04"
RECOVER_CLEAR = b"\x10\x05\x02"  # DLE ENQ 2: recover from error, clear buffers
# In-band paper sensor status: answered only after everything before it is printed.
PAPER_SENSOR = b"\x1dr\x01"


def align(n):
    return bytes((0x1B, 0x61, n))


def bold(on):
    return b"\x1bE\x01" if on else b"\x1bE\x00"


def size(w, h):
    """GS ! : character size multipliers 1..8."""
    return bytes((0x1D, 0x21, ((w - 1) & 7) << 4 | ((h - 1) & 7)))


def feed(n):
    """ESC d n: print the line buffer and feed n lines."""
    return bytes((0x1B, 0x64, n & 0xFF))


def codepage(n):
    return bytes((0x1B, 0x74, n))


def _gs_k(cn, fn, data):
    n = len(data) + 2
    return bytes((0x1D, 0x28, 0x6B, n & 0xFF, n >> 8, cn, fn)) + data


def qr(data, module=4, ec=QR_EC_M):
    """GS ( k: QR model 2, module size, error correction, store data, print."""
    if isinstance(data, str):
        data = data.encode()
    return (_gs_k(49, 65, b"\x32\x00") + _gs_k(49, 67, bytes((module,))) +
            _gs_k(49, 69, bytes((ec,))) + _gs_k(49, 80, b"\x30" + data) +
            _gs_k(49, 81, b"\x30"))


def code128(data, height=60):
    """GS k 73: CODE128 (code set B), HRI below."""
    if isinstance(data, str):
        data = data.encode()
    d = b"{B" + data
    return (b"\x1dh" + bytes((height,)) + b"\x1dw\x02\x1dH\x02\x1dk\x49" +
            bytes((len(d),)) + d)


# ---- status decoding --------------------------------------------------------------
# Every DLE EOT reply has the fixed bits 0xx1xx10; a byte without them is not a
# status byte (line noise, XON/XOFF, an echo) and must not be trusted.
def status_valid(b):
    return (b & 0x93) == 0x12


def decode_status(n, b):
    """dict of flags for a DLE EOT n reply, or None if b is not a valid status byte."""
    if not status_valid(b):
        return None
    if n == 1:
        return {"offline": bool(b & 0x08), "waiting_recovery": bool(b & 0x20)}
    if n == 2:
        return {"cover_open": bool(b & 0x04), "feed_button": bool(b & 0x08),
                "paper_stop": bool(b & 0x20), "error": bool(b & 0x40)}
    if n == 3:
        return {"cutter_error": bool(b & 0x08), "unrecoverable": bool(b & 0x20),
                "auto_recoverable": bool(b & 0x40)}
    if n == 4:
        return {"near_end": (b & 0x0C) == 0x0C, "paper_end": (b & 0x60) == 0x60}
    return None


def paper_sensor_valid(b):
    """GS r 1 reply: Epson layout 0xx0xxxx (bits 4 and 7 fixed 0)."""
    return (b & 0x90) == 0


def paper_sensor(b):
    return {"near_end": (b & 0x03) == 0x03, "paper_end": (b & 0x0C) == 0x0C}
