# Character rules on the UTF-8 bytes of a str, never on its characters.
#
# On MicroPython, iterating a str (or indexing it, or chr()) returns each character as
# an interned qstr: every character not seen before is added to the qstr pool for good,
# and the pool grows as one contiguous block that a fragmented heap no longer has. A
# validator that walked external text character by character could therefore make the
# next log line fail with MemoryError hours later (docs/platform-notes.md). Bytes
# iterate as small ints: no allocation, no qstr.
#
# Every rule takes any value and is False for a non-str: callers check types once here.


def _b(s):
    return s.encode() if isinstance(s, str) else None


def digits(s, lo=1, hi=9):
    """True if s is lo..hi ASCII digits."""
    b = _b(s)
    if b is None or not lo <= len(b) <= hi:
        return False
    for c in b:
        if not 0x30 <= c <= 0x39:
            return False
    return True


def alnum(s, n=0):
    """True if s is one or more ASCII letters and digits (exactly n of them when n)."""
    b = _b(s)
    if not b or (n and len(b) != n):
        return False
    for c in b:
        if not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A):
            return False
    return True


def printable(s, lo=0, hi=0xFFFF, forbid=b""):
    """True if s is lo..hi printable ASCII characters (space..~) and none of forbid."""
    b = _b(s)
    if b is None or not lo <= len(b) <= hi:
        return False
    for c in b:
        if c < 0x20 or c > 0x7E or c in forbid:
            return False
    return True


def clean(s, most):
    """s cut to `most` characters, every one that is not printable ASCII as "?"."""
    if not isinstance(s, str):
        s = str(s)
    if len(s) > most:
        s = s[:most]
    if printable(s):
        return s
    b = s.encode()
    out = bytearray()
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        k = seqlen(c)
        out.append(c if 0x20 <= c <= 0x7E else 0x3F)
        i += k
    return out.decode()


def seqlen(lead):
    """Bytes of the UTF-8 sequence that starts with byte `lead`."""
    if lead < 0x80:
        return 1
    if lead < 0xE0:
        return 2
    if lead < 0xF0:
        return 3
    return 4


def cp_at(b, i):
    """The code point of the UTF-8 sequence at b[i] (b: the bytes of a str, so valid)."""
    c = b[i]
    if c < 0x80:
        return c
    if c < 0xE0:
        return ((c & 0x1F) << 6) | (b[i + 1] & 0x3F)
    if c < 0xF0:
        return ((c & 0x0F) << 12) | ((b[i + 1] & 0x3F) << 6) | (b[i + 2] & 0x3F)
    return (((c & 0x07) << 18) | ((b[i + 1] & 0x3F) << 12) | ((b[i + 2] & 0x3F) << 6)
            | (b[i + 3] & 0x3F))
