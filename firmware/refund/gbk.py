# Text -> printer bytes for Chinese receipts (ESC/POS GB18030 double-byte mode).
#
# MicroPython has no GB18030 codec. The build-time generator host_tools/gbtable.py
# (CPython's codec) writes refund/gb18030_tab.py (TABLE, one bytes literal: frozen
# firmware keeps it in flash, no heap), holding only the characters the receipt
# templates and the configured merchant name use; load(PATH) reads the same table
# from a file instead (gbtable --bin PATH):
#
#   offset     size  content
#   0          4     magic b"GBT1"
#   4          2     N, number of characters (uint16 little-endian)
#   6          2     reserved, 0
#   8          2N    code points (uint16 LE, BMP only), strictly ascending
#   8+2N       2N    their GB18030 double-byte codes (lead, trail), same order
#   8+4N       4     CRC-32 of bytes 0 .. 8+4N (uint32 LE)
#
# The table is one bytes object (a few hundred characters: ~1-2 KB)
# and searched by bisection through a memoryview: no dict of characters.
#
# Output assumes the printer is in double-byte mode (FS &) with code page 16
# (WPC1252, ESC t 16) selected, as refund.escpos.START sets it. ASCII goes as is;
# a character of the table as its two bytes (two columns on paper); a few symbols
# that GB18030 has only as 4-byte codes (the printer's FS & mode takes 2-byte codes
# only) go through the single-byte code page (FS . <byte> FS &). Anything else
# prints as "?", is counted in `unknown` and logged once per character: never an
# exception.
import binascii
from micropython import const

from refund.chars import cp_at, seqlen

_HDR = const(8)
_LOG_MAX = const(32)  # distinct unknown characters logged, then only counted

# Single-byte fallbacks in code page 16 (WPC1252).
_SBCS = {0xA5: 0xA5, 0x20AC: 0x80, 0xA3: 0xA3, 0xB0: 0xB0, 0xB7: 0xB7}  # ¥ € £ ° ·

_tab = None  # memoryview of the table file, or b"" when it could not be loaded
_n = 0
unknown = 0  # characters printed as "?" since boot
_logged = []


def _log(msg, level="WARN"):
    try:
        from refund.log import log

        log("gbk", msg, level=level)
    except ImportError:
        print("gbk: " + msg)


def load(path=None):
    """(Re)load the table (the gb18030_tab module, or the file at path); on any
    problem log it and print CJK as '?'. Returns N. A MemoryError propagates (the
    print job that met it fails and is printed again) and leaves the table not
    loaded, so that the next lookup tries again: a full heap is not a bad table."""
    global _tab, _n
    _tab, _n = None, 0
    _tab, _n = _read(path)
    return _n


def _read(path):
    # (memoryview of the table, N), or (b"", 0) after logging why there is none
    try:
        if path is None:
            path = "refund.gb18030_tab"
            from refund.gb18030_tab import TABLE as data
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (OSError, ImportError) as e:
        _log("no character table %s (%r): Chinese prints as '?'" % (path, e), "ERROR")
        return b"", 0
    if len(data) < _HDR + 4 or data[:4] != b"GBT1":
        _log("bad character table %s (magic/size): Chinese prints as '?'" % path, "ERROR")
        return b"", 0
    n = data[4] | (data[5] << 8)
    end = _HDR + 4 * n
    if len(data) != end + 4:
        _log("bad character table %s (length): Chinese prints as '?'" % path, "ERROR")
        return b"", 0
    crc = getattr(binascii, "crc32", None)
    if crc is not None:
        want = data[end] | (data[end + 1] << 8) | (data[end + 2] << 16) | (data[end + 3] << 24)
        if crc(memoryview(data)[:end]) & 0xFFFFFFFF != want:
            _log("character table %s fails its CRC: Chinese prints as '?'" % path, "ERROR")
            return b"", 0
    return memoryview(data), n


def _table():
    if _tab is None:
        load()
    return _tab


def code(cp):
    """The 2-byte GB18030 code of code point cp as an int (lead << 8 | trail), or -1."""
    t = _table()
    lo, hi = 0, _n - 1
    while lo <= hi:
        mid = (lo + hi) >> 1
        p = _HDR + 2 * mid
        v = t[p] | (t[p + 1] << 8)
        if v < cp:
            lo = mid + 1
        elif v > cp:
            hi = mid - 1
        else:
            q = _HDR + 2 * _n + 2 * mid
            return (t[q] << 8) | t[q + 1]
    return -1


def cp_cols(cp):
    """Columns code point cp takes on paper once encoded (font A, normal size)."""
    if cp < 0x80:
        return 1
    if code(cp) >= 0:
        return 2
    return 1  # single-byte fallback or "?"


def cols(text):
    # Walks the UTF-8 bytes, never the str's characters (refund/chars.py says why).
    b = text.encode()
    n = 0
    i = 0
    while i < len(b):
        n += cp_cols(cp_at(b, i))
        i += seqlen(b[i])
    return n


def _unknown(cp):
    global unknown
    unknown += 1
    if cp not in _logged and len(_logged) < _LOG_MAX:
        _logged.append(cp)
        _log("no printer code for U+%04X: printed '?'" % cp)


def encode(text):
    """Bytes for text in double-byte mode (see the top of this file)."""
    b = text.encode()
    out = bytearray()
    i = 0
    while i < len(b):
        o = b[i]
        if o < 0x80:
            i += 1
            if o < 0x20 or o == 0x7F:
                out.append(0x20)  # never let a control byte through into the stream
            else:
                out.append(o)
            continue
        cp = cp_at(b, i)
        i += seqlen(o)
        c = code(cp)
        if c >= 0:
            out.append(c >> 8)
            out.append(c & 0xFF)
            continue
        sb = _SBCS.get(cp)
        if sb is not None:
            out.extend(b"\x1c.")
            out.append(sb)
            out.extend(b"\x1c&")
            continue
        _unknown(cp)
        out.append(0x3F)
    return bytes(out)
