# ISO 8583:1987 ASCII codec for the host link (docs/host-link.md), byte-compatible
# with pyiso8583 4.x `default_ascii` for the MTIs and fields the spec uses.
#
# Messages are dicts keyed like pyiso8583's decoded dict: 't' is the MTI, fields are
# str keys ('3', '11', '62', '128'); values are str. For numeric (n) fields encode()
# also takes a non-negative int and zero-pads it. decode() returns str values only and
# no 'p' / '1' (bitmap) keys; encode() ignores 'p' and '1' if present.
#
# Every kind of bad input to decode() raises DecodeError; e.reason is a short code:
#   type      not a bytes-like object
#   short     truncated (message ends inside the MTI, a bitmap, a length or a field)
#   mti       MTI not one of the spec's
#   bitmap    a bitmap is not 16 uppercase hex characters
#   bitmap2   bit 1 is set but the secondary bitmap is empty
#   field     a bit is set for a field the spec does not use (e.f = its number)
#   len       LLLVAR length not 3 digits or above the maximum
#   digits    non-digit in a numeric field
#   chars     character outside the field's class (an: A-Z a-z 0-9 space; ans: 0x20-0x7E)
#   hex       MAC field not 16 uppercase hex characters
#   trailing  bytes after the last field
#   frame     frame length 0 or above 4096 (frame_len / read_frame)
#   long      a frame longer than any message of the spec (read_frame_into skips it:
#             the stream stays in step, the connection need not be reset)
# hostmsg.validate() adds: missing, unexpected, value, f62. encode() raises ValueError.
# Field 62 and what each MTI must carry are in refund/hostmsg.py; the settlement
# messages (0500/0510, 0320/0330) are built and checked in refund/settlemsg.py.
from array import array
from micropython import const

MAX_FRAME = const(4096)
_MAX_FRAME = const(4096)

_N = const(1)  # digits
_AN = const(2)  # letters, digits, space
_ANS = const(3)  # printable ASCII
_HEX = const(4)  # uppercase hex (MAC)
_LLLVAR = const(8)  # flag added to the kind

MTIS = ("0200", "0201", "0210", "0420", "0421", "0430", "0800", "0810",
        "0500", "0501", "0510", "0320", "0321", "0330")

# field number -> kind (0 = not used by the spec), and fixed length / LLLVAR maximum;
# 16-bit lengths and a dict of the used fields' keys: ~1 KB less than lists of 129
_KIND = bytearray(129)
_LEN = array("H", bytes(258))
_KEYS = {}  # field number -> its dict key, made once
for _f, _k, _l in ((3, _N, 6), (4, _N, 12), (7, _N, 10), (11, _N, 6), (12, _N, 6),
                   (13, _N, 4), (15, _N, 4), (37, _AN, 12), (38, _AN, 6), (39, _AN, 2), (41, _ANS, 8),
                   (42, _ANS, 15), (49, _N, 3), (62, _ANS | _LLLVAR, 999), (64, _HEX, 16),
                   (70, _N, 3), (74, _N, 10), (86, _N, 16), (90, _N, 42), (128, _HEX, 16)):
    _KIND[_f] = _k
    _LEN[_f] = _l
    _KEYS[_f] = str(_f)
del _f, _k, _l
# The longest message the field table allows (MTI, both bitmaps, every field at its
# maximum): the encode buffer and the host link's receive buffer are this big, not 4096.
MSG_MAX = 4 + 32
for _f in range(129):
    MSG_MAX += _LEN[_f] + (3 if _KIND[_f] & _LLLVAR else 0)
del _f

_HEXCHARS = b"0123456789ABCDEF"
_BM = bytearray(16)  # decoded bitmaps (primary 0..7, secondary 8..15)
BUF = bytearray(2 + MSG_MAX)  # shared encode buffer (length prefix + message)


class DecodeError(ValueError):
    def __init__(self, reason, field=0):
        super().__init__(reason)
        self.reason = reason
        self.field = field


def hexval(c):
    """Value of an uppercase hex digit byte, or -1."""
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x41 <= c <= 0x46:
        return c - 0x37
    return -1


def _class_ok(kind, data, start, end):
    # True if every byte of data[start:end] belongs to the field class
    if kind == _N:
        for i in range(start, end):
            c = data[i]
            if c < 0x30 or c > 0x39:
                return False
    elif kind == _AN:
        for i in range(start, end):
            c = data[i]
            if not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c == 0x20):
                return False
    elif kind == _ANS:
        for i in range(start, end):
            c = data[i]
            if c < 0x20 or c > 0x7E:
                return False
    else:
        for i in range(start, end):
            if hexval(data[i]) < 0:
                return False
    return True


_REASON = {_N: "digits", _AN: "chars", _ANS: "chars", _HEX: "hex"}


def _bitmap(data, pos, dst):
    # 16 uppercase hex characters at data[pos:] -> 8 bytes at _BM[dst:]
    for i in range(8):
        hi = hexval(data[pos + 2 * i])
        lo = hexval(data[pos + 2 * i + 1])
        if hi < 0 or lo < 0:
            raise DecodeError("bitmap")
        _BM[dst + i] = (hi << 4) | lo


def decode(data):
    """bytes / bytearray / memoryview of one message (no length prefix) -> dict."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("type")
    n = len(data)
    mv = memoryview(data)
    if n < 4:
        raise DecodeError("short")
    if not _class_ok(_N, data, 0, 4):
        raise DecodeError("mti")
    mti = str(mv[0:4], "ascii")
    if mti not in MTIS:
        raise DecodeError("mti")
    if n < 20:
        raise DecodeError("short")
    _bitmap(data, 4, 0)
    pos = 20
    if _BM[0] & 0x80:
        if n < 36:
            raise DecodeError("short")
        _bitmap(data, 20, 8)
        pos = 36
        empty = True
        for i in range(8, 16):
            if _BM[i]:
                empty = False
        if empty:
            raise DecodeError("bitmap2")
    else:
        for i in range(8, 16):
            _BM[i] = 0
    # every set bit must be a field of the spec (bit 1 = secondary bitmap, 65 = tertiary)
    for byte in range(16):
        b = _BM[byte]
        if b:
            for bit in range(8):
                if b & (0x80 >> bit):
                    f = byte * 8 + bit + 1
                    if f != 1 and not _KIND[f]:
                        raise DecodeError("field", f)
    out = {"t": mti}
    for byte in range(16):
        b = _BM[byte]
        if not b:
            continue
        for bit in range(8):
            if not b & (0x80 >> bit):
                continue
            f = byte * 8 + bit + 1
            if f == 1:
                continue
            kind = _KIND[f]
            size = _LEN[f]
            if kind & _LLLVAR:
                kind &= 7
                if pos + 3 > n:
                    raise DecodeError("short", f)
                if not _class_ok(_N, data, pos, pos + 3):
                    raise DecodeError("len", f)
                ln = (data[pos] - 0x30) * 100 + (data[pos + 1] - 0x30) * 10 + data[pos + 2] - 0x30
                if ln > size:
                    raise DecodeError("len", f)
                size = ln
                pos += 3
            end = pos + size
            if end > n:
                raise DecodeError("short", f)
            if not _class_ok(kind, data, pos, end):
                raise DecodeError(_REASON[kind], f)
            out[_KEYS[f]] = str(mv[pos:end], "ascii")
            pos = end
    if pos != n:
        raise DecodeError("trailing")
    return out


def mac_field(msg):
    """'128' if the message needs a secondary bitmap (a field 65..127), else '64'."""
    for k in msg:
        if k != "t" and k != "p" and k != "1" and k != "64" and k != "128" and int(k) > 64:
            return "128"
    return "64"


def encode_into(buf, msg, off=0, mac=False):
    """Encode msg into buf[off:]; returns the end index. With mac=True the MAC field
    (64, or 128 when a secondary bitmap is needed) is added as 16 '0' for mac.sign_into
    to fill in; msg must not carry 64/128 itself then."""
    try:
        mti = msg["t"]
    except KeyError:
        raise ValueError("no MTI")
    if mti not in MTIS:
        raise ValueError("MTI")
    bm = _BM
    for i in range(16):
        bm[i] = 0
    for k in msg:
        if k == "t" or k == "p" or k == "1":
            continue
        try:
            f = int(k)
        except ValueError:
            raise ValueError("key " + str(k))
        if f < 2 or f > 128 or not _KIND[f] or _KEYS[f] != k:
            raise ValueError("field " + str(k))
        if msg[k] is not None:
            bm[(f - 1) >> 3] |= 0x80 >> ((f - 1) & 7)
    if mac:
        if msg.get("64") is not None or msg.get("128") is not None:
            raise ValueError("MAC field given")
        f = 128 if int(mac_field(msg)) == 128 else 64
        bm[(f - 1) >> 3] |= 0x80 >> ((f - 1) & 7)
    second = False
    for i in range(8, 16):
        if bm[i]:
            second = True
    if second:
        bm[0] |= 0x80
    pos = off
    top = len(buf)
    if pos + 36 > top:
        raise ValueError("buffer")
    mb = mti.encode()
    buf[pos:pos + 4] = mb
    pos += 4
    for i in range(16 if second else 8):
        buf[pos] = _HEXCHARS[bm[i] >> 4]
        buf[pos + 1] = _HEXCHARS[bm[i] & 15]
        pos += 2
    for f in range(2, 129):
        if not bm[(f - 1) >> 3] & (0x80 >> ((f - 1) & 7)):
            continue
        kind = _KIND[f]
        size = _LEN[f]
        v = msg.get(_KEYS[f])
        if v is None:  # in the bitmap without a value: the MAC placeholder
            v = "0000000000000000"
        if isinstance(v, int):
            if kind != _N or v < 0:
                raise ValueError("int for field " + str(f))
            if pos + size > top:
                raise ValueError("buffer")
            for i in range(pos + size - 1, pos - 1, -1):
                buf[i] = 0x30 + v % 10
                v //= 10
            if v:
                raise ValueError("too big for field " + str(f))
            pos += size
            continue
        if not isinstance(v, str):
            raise ValueError("value of field " + str(f))
        vb = v.encode()
        ln = len(vb)
        if kind & _LLLVAR:
            kind &= 7
            if ln > size:
                raise ValueError("too long: field " + str(f))
            if pos + 3 + ln > top:
                raise ValueError("buffer")
            buf[pos] = 0x30 + ln // 100
            buf[pos + 1] = 0x30 + ln // 10 % 10
            buf[pos + 2] = 0x30 + ln % 10
            pos += 3
        elif ln != size:
            raise ValueError("length of field " + str(f))
        if pos + ln > top:
            raise ValueError("buffer")
        if not _class_ok(kind, vb, 0, ln):
            raise ValueError("characters of field " + str(f))
        buf[pos:pos + ln] = vb
        pos += ln
    return pos


def encode(msg, mac=False):
    """msg dict -> bytes (one message, no length prefix)."""
    end = encode_into(BUF, msg, 2, mac)
    return bytes(memoryview(BUF)[2:end])


# ---- framing: 2-byte big-endian length, 1..4096 ----

def frame(data):
    """One message -> length-prefixed frame (bytes)."""
    n = len(data)
    if n == 0 or n > _MAX_FRAME:
        raise ValueError("frame length")
    return bytes((n >> 8, n & 255)) + data


def frame_len(hdr):
    """The 2 header bytes -> message length; DecodeError('frame') for 0 or > 4096."""
    if len(hdr) < 2:
        raise DecodeError("short")
    n = (hdr[0] << 8) | hdr[1]
    if n == 0 or n > _MAX_FRAME:
        raise DecodeError("frame")
    return n


def put_len(buf, n, off=0):
    """Write the 2-byte length prefix of an n-byte message at buf[off]."""
    if n == 0 or n > _MAX_FRAME:
        raise ValueError("frame length")
    buf[off] = n >> 8
    buf[off + 1] = n & 255


async def _fill(reader, mv):
    got = 0
    want = len(mv)
    while got < want:
        k = await reader.readinto(mv[got:])
        if not k:
            raise EOFError
        got += k


async def read_frame_into(reader, buf):
    """Read one frame from an asyncio stream into buf (>= MSG_MAX bytes, reused); returns
    the message length n, the message is buf[0:n]. EOFError at end of stream,
    DecodeError('frame') on a bad length: the caller must then close the connection;
    DecodeError('long') for a frame longer than buf, read and skipped (still in step)."""
    mv = memoryview(buf)
    await _fill(reader, mv[0:2])
    n = frame_len(buf)
    if n <= len(buf):
        await _fill(reader, mv[0:n])
        return n
    while n:  # no message of the spec is this long: skip it through the same buffer
        k = min(n, len(buf))
        await _fill(reader, mv[0:k])
        n -= k
    raise DecodeError("long")
