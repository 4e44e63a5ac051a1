# Service-link frames on the USB console (docs/service-link.md "Frames"). Keep both
# sides in step: host_tools/svclink.py is the same codec in CPython.
#
#   frame = 0x1E | escaped( LEN_HI LEN_LO | PAYLOAD | CRC32 big-endian )
#   CRC32 = binascii.crc32 over LEN and PAYLOAD (unescaped)
#   escaped: every byte of E = {00 01 02 03 04 05 10 11 13 1E} -> 0x10, b ^ 0x20
#
# No 0x03 (Ctrl-C), raw-REPL control, XON/XOFF or 0x1E is ever inside a frame. The
# decoder never raises on bad input and allocates nothing per byte: one preallocated
# buffer; a completed frame is handed out as a memoryview into it (valid until the
# next push/feed). After a frame error it keeps the frame "open" (discarding) until the
# frame's announced end, the next 0x1E or the 1 s limit, so a stray 0x03 in a damaged
# frame is never taken for a technician's Ctrl-C.
import time
from binascii import crc32
from micropython import const

MARK = const(0x1E)
DLE = const(0x10)
CTRL_C = const(0x03)
TIMEOUT_MS = const(1000)
_OUT = const(0)  # between frames: text
_IN = const(1)  # collecting a frame
_SKIP = const(2)  # a frame error: discarding to its end

# 1 for a byte that must be escaped
_ESC = bytearray(256)
for _b in (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11, 0x13, 0x1E):
    _ESC[_b] = 1
del _b


class Decoder:
    def __init__(self, max_len=512):
        self.max_len = max_len
        self._buf = bytearray(max_len + 6)
        self._mv = memoryview(self._buf)
        self._st = _OUT
        self._esc = False
        self._n = 0  # unescaped bytes of the frame so far
        self._need = 0  # total unescaped bytes (LEN + 6), 0 until LEN is known
        self._t0 = 0
        self.stats = {"frames": 0, "bad_crc": 0, "truncated": 0, "oversized": 0, "bad_byte": 0}
        self.breaks = 0  # Ctrl-C (0x03) pushed while no frame was open

    @property
    def in_frame(self):
        """True while a frame is open (collecting or discarding a damaged one)."""
        if self._st != _OUT and time.ticks_diff(time.ticks_ms(), self._t0) > TIMEOUT_MS:
            self._st = _OUT
            self.stats["truncated"] += 1
        return self._st != _OUT

    def is_break(self, b):
        """b is a technician's Ctrl-C: 0x03 while no frame is open."""
        return b == CTRL_C and not self.in_frame

    def expire(self, now_ms=None):
        """Drop a frame open for more than 1 s. True if one was dropped."""
        if self._st == _OUT:
            return False
        if now_ms is None:
            now_ms = time.ticks_ms()
        if time.ticks_diff(now_ms, self._t0) > TIMEOUT_MS:
            self._st = _OUT
            self.stats["truncated"] += 1
            return True
        return False

    def want(self):
        """Raw bytes that may be read next without reading past the current frame: 1
        between frames or before LEN is known, else the unescaped bytes still missing
        (<= the raw bytes still to come). Exact for an intact frame; after a frame error
        a new frame may start sooner (feed() stops after it and says how much it used).
        A frame open for more than 1 s is dropped first (then 1: a Ctrl-C may follow)."""
        if not self.in_frame or not self._need:
            return 1
        return self._need - self._n

    def _fail(self, key):
        self.stats[key] += 1
        if self._need and self._n >= self._need:
            self._st = _OUT
        else:
            self._st = _SKIP

    def push(self, b):
        """One raw byte. Returns the payload (memoryview) of a frame completed with a
        good CRC, else None. Bytes outside frames are text and are ignored here, except
        that a 0x03 among them counts in `breaks` (a technician's Ctrl-C)."""
        st = self._st
        if b == CTRL_C and st != _OUT and self.expire():
            st = _OUT
        if b == MARK:
            if st == _IN:
                self.stats["truncated"] += 1
            self._st = _IN
            self._esc = False
            self._n = 0
            self._need = 0
            self._t0 = time.ticks_ms()
            return None
        if st == _OUT:
            if b == CTRL_C:
                self.breaks += 1
            return None
        if _ESC[b] and b != DLE:
            # a raw control byte inside a frame
            if st == _IN:
                self._fail("bad_byte")
            return None
        if b == DLE and not self._esc:
            self._esc = True
            return None
        if self._esc:
            b ^= 0x20
            self._esc = False
        n = self._n
        if st == _SKIP:
            n += 1
            self._n = n
            if self._need and n >= self._need:
                self._st = _OUT
            return None
        if n < len(self._buf):
            self._buf[n] = b
        n += 1
        self._n = n
        if n == 2:
            ln = (self._buf[0] << 8) | b
            self._need = ln + 6
            if ln > self.max_len:
                self._fail("oversized")
            return None
        if n < 2 or n < self._need:
            return None
        self._st = _OUT
        buf = self._buf
        c = crc32(self._mv[: n - 4])
        if (c >> 16) & 0xFFFF == (buf[n - 4] << 8) | buf[n - 3] and c & 0xFFFF == (buf[n - 2] << 8) | buf[n - 1]:
            self.stats["frames"] += 1
            return self._mv[2 : n - 4]
        self.stats["bad_crc"] += 1
        return None

    def feed(self, data, n=-1):
        """Push data[:n] (all if n < 0). Returns (payload or None, bytes consumed):
        stops right after a completed frame, so call again with the rest."""
        if n < 0:
            n = len(data)
        self.expire()
        push = self.push
        for i in range(n):
            p = push(data[i])
            if p is not None:
                return p, i + 1
        return None, n


def chunks(parts, scratch):
    """Encode one frame whose payload is the concatenation of parts (bytes/memoryview
    pieces) into scratch (a preallocated bytearray, >= 16 B); yields memoryview slices
    of scratch, each valid until the next one is asked for. The CRC is computed piece
    by piece (binascii.crc32(data, crc)); nothing is allocated per byte."""
    total = 0
    for p in parts:
        total += len(p)
    if total > 0xFFFF:
        raise ValueError("payload too long")
    mv = memoryview(scratch)
    lim = len(scratch) - 1  # room for an escaped pair
    esc = _ESC
    hd = bytearray(4)
    hd[0], hd[1] = total >> 8, total & 0xFF
    scratch[0] = MARK
    pos, crc, k = 1, 0, -1
    while k <= len(parts):
        if k < 0:
            p = memoryview(hd)[:2]
            crc = crc32(p)
        elif k < len(parts):
            p = parts[k]
            crc = crc32(p, crc)
        else:
            hd[0], hd[1], hd[2], hd[3] = (crc >> 24) & 0xFF, (crc >> 16) & 0xFF, (crc >> 8) & 0xFF, crc & 0xFF
            p = hd
        k += 1
        for b in p:
            if esc[b]:
                scratch[pos] = DLE
                scratch[pos + 1] = b ^ 0x20
                pos += 2
            else:
                scratch[pos] = b
                pos += 1
            if pos >= lim:
                yield mv[:pos]
                pos = 0
    if pos:
        yield mv[:pos]


def encode_into(payload, out):
    """One whole frame of payload into the bytearray out; returns its length.
    ValueError if out is too small (2 * len + 13 always fits)."""
    n = 0
    lo = len(out)
    for c in chunks((payload,), _SCRATCH):
        m = len(c)
        if n + m > lo:
            raise ValueError("out too small")
        out[n : n + m] = c
        n += m
    return n


_SCRATCH = bytearray(64)
