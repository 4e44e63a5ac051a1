# Host-link MAC (docs/host-link.md, "MAC"): HMAC-SHA256 with the terminal's MAC key
# over the whole encoded message except its last 16 characters, first 8 bytes of the
# HMAC as 16 uppercase hex characters, carried in field 64 (primary bitmap only) or
# field 128 (secondary bitmap). HMAC (RFC 2104) is built here on hashlib.sha256 with the
# key pads made once per key: micropython-lib's `hmac` remakes them on every call and
# measured 7-37x the time and 2.7x the heap per MAC (docs/benchmarks.md), and PBKDF2
# runs 2,000 of them per PIN check. The key is never logged, printed or kept in the clear (only
# the two padded key blocks HMAC needs).
import hashlib

from micropython import const

from refund import iso8583

_BLOCK = const(64)
_MACLEN = const(16)  # hex characters on the wire
_HEXCHARS = b"0123456789ABCDEF"
_TMP = bytearray(_MACLEN)


class Mac:
    """One MAC key. Mac(key_bytes) or Mac.from_hex('00112233...')."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        ik = bytearray(_BLOCK)
        ok = bytearray(_BLOCK)
        for i in range(_BLOCK):
            k = key[i] if i < len(key) else 0
            ik[i] = k ^ 0x36
            ok[i] = k ^ 0x5C
        self._ipad = ik
        self._opad = ok

    @classmethod
    def from_hex(cls, text):
        import binascii

        try:
            key = binascii.unhexlify(text)
        except ValueError:
            raise ValueError("MAC key is not hex")
        if not key:
            raise ValueError("MAC key is empty")
        return cls(key)

    def __repr__(self):
        return "<Mac key=***>"

    def hmac(self, data):
        """Full HMAC-SHA256 (32 bytes) of data (bytes, bytearray or memoryview)."""
        h = hashlib.sha256(self._ipad)
        h.update(data)
        inner = h.digest()
        h = hashlib.sha256(self._opad)
        h.update(inner)
        return h.digest()

    def mac_into(self, data, out, off=0):
        """Write the 16-character MAC of data at out[off:off + 16]."""
        d = self.hmac(data)
        for i in range(8):
            out[off + 2 * i] = _HEXCHARS[d[i] >> 4]
            out[off + 2 * i + 1] = _HEXCHARS[d[i] & 15]

    def mac(self, data):
        """The 16-character MAC of data, as bytes."""
        out = bytearray(_MACLEN)
        self.mac_into(data, out)
        return bytes(out)


def equal(a, b):
    """Constant-time comparison of two byte strings of the same length (the time does
    not depend on where they differ; a length difference returns at once)."""
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0


def sign_into(key, buf, start, end):
    """buf[start:end] is an encoded message whose last 16 characters are the MAC field
    (iso8583.encode_into(..., mac=True) leaves 16 '0' there): fill them in."""
    if end - start < 20 + _MACLEN:
        raise ValueError("message too short for a MAC")
    mv = memoryview(buf)
    key.mac_into(mv[start:end - _MACLEN], buf, end - _MACLEN)


def sign(key, msg):
    """Encode msg (without 64/128) with its MAC -> bytes of the message."""
    buf = iso8583.BUF
    end = iso8583.encode_into(buf, msg, 2, True)
    sign_into(key, buf, 2, end)
    return bytes(memoryview(buf)[2:end])


def signed_frame(key, msg):
    """Encode msg with its MAC and the 2-byte length prefix -> bytes ready to send."""
    buf = iso8583.BUF
    end = iso8583.encode_into(buf, msg, 2, True)
    sign_into(key, buf, 2, end)
    iso8583.put_len(buf, end - 2)
    return bytes(memoryview(buf)[0:end])


def verify(key, data, msg=None):
    """True if data (one encoded message, no length prefix) carries a valid MAC in
    the right place: field 128 when the message has a secondary bitmap, else field
    64, and that field is the last 16 characters. msg, the decoded dict of data, is
    optional; without it the placement is read from the bitmap(s)."""
    n = len(data)
    if n < 20 + _MACLEN:
        return False
    if msg is not None:
        second = "1" in msg
        if not second:
            for k in msg:
                if k != "t" and k != "p" and k != "128" and int(k) > 64:
                    second = True
        if second:
            if "128" not in msg or "64" in msg:
                return False
        elif "64" not in msg:
            return False
    else:
        first = iso8583.hexval(data[4])
        if first < 0:
            return False
        if first & 8:  # secondary bitmap: bit 128 = lowest bit of its last hex digit
            if n < 36 + _MACLEN:
                return False
            last = iso8583.hexval(data[35])
            b64 = iso8583.hexval(data[19])
            if last < 0 or not last & 1 or b64 < 0 or b64 & 1:
                return False
        else:
            last = iso8583.hexval(data[19])
            if last < 0 or not last & 1:
                return False
    mv = memoryview(data)
    key.mac_into(mv[0:n - _MACLEN], _TMP)
    return equal(_TMP, mv[n - _MACLEN:n])
