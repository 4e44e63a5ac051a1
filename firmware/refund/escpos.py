# ESC/POS (Epson TM command set, as on the thermal printers of Chinese bank terminals):
# byte builders, the decoders of every status answer, and command lengths. No I/O here.
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
# GS a 14: automatic status back of online/offline, errors and the paper sensor. The
# printer reports each change the moment it happens, so a paper end that is reloaded
# between two status polls is still seen (refund.prlink). After ESC @: some printers
# turn it off there.
ASB_ON = b"\x1da\x0e"
# Start of every slip: reset, status back, code page 16 for the single-byte symbols,
# Chinese mode.
START = INIT + ASB_ON + b"\x1bt" + bytes((_CODEPAGE_WPC1252,)) + CJK_ON

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


# ---- status decoding: every rule applied to what the printer answers -------------
# Printer states a status answer can say (refund.printer adds printing and absent).
READY = "ready"
PAPER_OUT = "paper_out"
COVER_OPEN = "cover_open"
OFFLINE = "offline"
ERROR = "error"


def status_valid(b):
    """Every DLE EOT reply has the fixed bits 0xx1xx10; a byte without them is not a
    status byte (line noise, XON/XOFF, an echo) and must not be trusted."""
    return (b & 0x93) == 0x12


def paper_sensor_valid(b):
    """GS r 1 reply: Epson layout 0xx0xxxx (bits 4 and 7 fixed 0; never a DLE EOT
    reply, XON or XOFF)."""
    return (b & 0x90) == 0


def paper_sensor_end(b):
    """GS r 1 reply: paper end."""
    return (b & 0x0C) == 0x0C


def near_end(b4):
    """DLE EOT 4 reply: paper near its end (still printing)."""
    return (b4 & 0x0C) == 0x0C


def asb_first(b):
    """First byte of an automatic status back: 0xx1xx00 (never a DLE EOT reply, a GS r
    reply, XON or XOFF); the three after it are 0xx0xxxx."""
    return (b & 0x93) == 0x10


def asb_state(b1, b2, b3):
    """The state an automatic status back reports."""
    if b1 & 0x20:
        return COVER_OPEN
    if b3 & 0x0C:  # roll paper end sensor
        return PAPER_OUT
    if b2 & 0x6C:  # mechanical, autocutter, unrecoverable, auto-recoverable error
        return ERROR
    if b1 & 0x08:
        return OFFLINE
    return READY


def state(b1, b2, b4):
    """The printer's state from trusted DLE EOT 1, 2 and 4 replies."""
    if b2 & 0x04:
        return COVER_OPEN
    if (b4 & 0x60) == 0x60 or b2 & 0x20:  # paper end sensor, or stopped for paper
        return PAPER_OUT
    if b2 & 0x40:
        return ERROR
    if b1 & 0x08:
        return OFFLINE
    return READY


# ---- command lengths --------------------------------------------------------------
_ESC = const(0x1B)
_FS = const(0x1C)
_GS = const(0x1D)
_DLE = const(0x10)


class Splitter:
    """Where the ESC/POS commands of an outgoing stream begin and end: a real-time
    request may only go between two (Epson: a DLE EOT inside another command's data is
    taken as data). Tracks FS & / FS . / ESC @ for the 2-byte characters."""

    def __init__(self):
        self.kanji = False

    def length(self, b, i, n):
        """Length of the command or character at b[i] (cut at n)."""
        c = b[i]
        k = 1
        if c == _ESC:
            k = 2 if i + 1 < n and b[i + 1] in b"@2<im" else 3
            if k == 2 and b[i + 1] == 0x40:
                self.kanji = False
        elif c == _FS:
            if i + 1 < n and b[i + 1] == 0x26:
                self.kanji = True
                k = 2
            elif i + 1 < n and b[i + 1] == 0x2E:
                self.kanji = False
                k = 2
            else:
                k = 3
        elif c == _GS:
            m = b[i + 1] if i + 1 < n else 0
            if m == 0x28 and i + 4 < n:  # GS ( X pL pH data
                k = 5 + b[i + 3] + 256 * b[i + 4]
            elif m == 0x6B and i + 2 < n:  # GS k m ...
                if b[i + 2] >= 65:
                    k = 4 + (b[i + 3] if i + 3 < n else 0)
                else:
                    k = 3
                    while i + k < n and b[i + k]:
                        k += 1
                    k += 1
            elif m == 0x56 and i + 2 < n and b[i + 2] in b"ABabgh":
                k = 4
            elif m == 0x76 and i + 7 < n:  # GS v 0 m xL xH yL yH data
                k = 8 + (b[i + 4] + 256 * b[i + 5]) * (b[i + 6] + 256 * b[i + 7])
            else:
                k = 3
        elif c == _DLE:
            k = 3
        elif c >= 0x81 and self.kanji:
            k = 2
        return k if i + k <= n else n - i
