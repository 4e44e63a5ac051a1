# What each message of the host link carries (docs/host-link.md, Messages and Fields):
# field 62 (key=value;...) and the per-MTI field rules every received message is held
# to. The codec itself is refund/iso8583.py; settlement messages are built and their
# answers checked in refund/settlemsg.py.
from refund.iso8583 import MTIS, DecodeError

# ---- field 62: key=value;key=value ----


def valid_rid(s):
    """True for a refund id of the spec: [A-Z0-9-]{1,32}."""
    if not isinstance(s, str):
        return False
    b = s.encode()
    if not 1 <= len(b) <= 32:
        return False
    for c in b:
        if not (0x41 <= c <= 0x5A or 0x30 <= c <= 0x39 or c == 0x2D):
            return False
    return True


def valid_batch(s):
    """True for a batch number of the spec: 6 digits, 000001-999999."""
    if not isinstance(s, str):
        return False
    b = s.encode()
    if len(b) != 6 or b == b"000000":
        return False
    for c in b:
        if not 0x30 <= c <= 0x39:
            return False
    return True


def _valid_key(k):
    b = k.encode()
    if not 1 <= len(b) <= 16:
        return False
    for c in b:
        if not (0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39 or c == 0x5F or c == 0x2D):
            return False
    return True


def _valid_value(v):
    for c in v.encode():
        if c == 0x3B or c == 0x3D or c < 0x20 or c > 0x7E:
            return False
    return True


def _check62(d, rid):
    if (rid or "rid" in d) and not valid_rid(d.get("rid")):
        return False
    o = d.get("orrn")
    if o is not None and len(o) != 12:
        return False
    b = d.get("batch")
    if b is not None and not valid_batch(b):
        return False
    return True


def parse62(s, rid=True):
    """'rid=R-1;orrn=123456789012' -> dict; DecodeError('f62') unless every part is
    key=value with a valid key, no ';'/'=' in values, no duplicate keys, a valid rid
    (required unless rid=False: the batch-level 05xx carry none) and, if present, a
    12-character orrn and a valid batch."""
    d = {}
    if not s:
        raise DecodeError("f62", 62)
    for part in s.split(";"):
        i = part.find("=")
        if i <= 0:
            raise DecodeError("f62", 62)
        k = part[:i]
        v = part[i + 1:]
        if not _valid_key(k) or not _valid_value(v) or k in d:
            raise DecodeError("f62", 62)
        d[k] = v
    if not _check62(d, rid):
        raise DecodeError("f62", 62)
    return d


def build62(d, rid=True):
    """dict -> 'rid=..;orrn=..;k=v' (rid, orrn first, then keys sorted); ValueError
    on anything parse62(.., rid) would reject or a result above 999 characters."""
    for k in d:
        v = d[k]
        if not isinstance(k, str) or not isinstance(v, str) or not _valid_key(k) or not _valid_value(v):
            raise ValueError("f62 key/value")
    if not _check62(d, rid):
        raise ValueError("f62 rid/orrn/batch")
    keys = sorted(k for k in d if k != "rid" and k != "orrn")
    parts = []
    if "rid" in d:
        parts.append("rid=" + d["rid"])
    if "orrn" in d:
        parts.append("orrn=" + d["orrn"])
    for k in keys:
        parts.append(k + "=" + d[k])
    if not parts:
        raise ValueError("f62 empty")
    s = ";".join(parts)
    if len(s) > 999:
        raise ValueError("f62 too long")
    return s


# ---- per-MTI message rules (docs/host-link.md, Messages and Fields) ----

# What each MTI carries, in the order of iso8583.MTIS: (required, optional) field numbers,
# one a byte. Requests are held to the whole table of the spec; answers need what the
# terminal decides on (Terminal duties) and may carry the rest. 0420/0421 carry field
# 90 and 0500/0501/0510 fields 74 and 86, so a secondary bitmap, so their MAC is field
# 128 (the MAC is always the last field; the spec's table lists 128 for 08xx and 05xx).
# A literal tuple of bytes literals is one constant: frozen, it takes no heap at all.
_RULES = (
    (b"\x03\x04\x07\x0b\x0c\x0d\x29\x2a\x31\x3e\x40",  # 0200: 3 4 7 11 12 13 41 42 49 62 64
     b""),
    (b"\x03\x04\x07\x0b\x0c\x0d\x29\x2a\x31\x3e\x40",  # 0201: 3 4 7 11 12 13 41 42 49 62 64
     b""),
    (b"\x04\x0b\x27\x29\x31\x3e\x40",  # 0210: 4 11 39 41 49 62 64
     b"\x03\x07\x0c\x0d\x25\x26\x2a"),  # may: 3 7 12 13 37 38 42
    (b"\x03\x04\x07\x0b\x29\x2a\x31\x3e\x5a\x80",  # 0420: 3 4 7 11 41 42 49 62 90 128
     b""),
    (b"\x03\x04\x07\x0b\x29\x2a\x31\x3e\x5a\x80",  # 0421: 3 4 7 11 41 42 49 62 90 128
     b""),
    (b"\x0b\x27\x29\x3e\x40",  # 0430: 11 39 41 62 64
     b"\x03\x04\x07\x2a\x31"),  # may: 3 4 7 42 49
    (b"\x07\x0b\x29\x46\x80",  # 0800: 7 11 41 70 128
     b""),
    (b"\x0b\x27\x29\x80",  # 0810: 11 39 41 128
     b"\x07\x46"),  # may: 7 70
    (b"\x03\x07\x0b\x29\x2a\x31\x3e\x4a\x56\x80",  # 0500: 3 7 11 41 42 49 62 74 86 128
     b""),
    (b"\x03\x07\x0b\x29\x2a\x31\x3e\x4a\x56\x80",  # 0501: 3 7 11 41 42 49 62 74 86 128
     b""),
    (b"\x0b\x27\x29\x31\x3e\x4a\x56\x80",  # 0510: 11 39 41 49 62 74 86 128
     b"\x03\x07\x0f\x2a"),  # may: 3 7 15 42
    (b"\x03\x04\x07\x0b\x0c\x0d\x25\x26\x29\x2a\x31\x3e\x40",  # 0320: 3 4 7 11 12 13 37 38 41 42 49 62 64
     b""),
    (b"\x03\x04\x07\x0b\x0c\x0d\x25\x26\x29\x2a\x31\x3e\x40",  # 0321: 3 4 7 11 12 13 37 38 41 42 49 62 64
     b""),
    (b"\x0b\x27\x29\x3e\x40",  # 0330: 11 39 41 62 64
     b"\x03\x04\x07\x2a\x31"),  # may: 3 4 7 42 49
)
_SETTLE_3 = ("920000", "960000")  # field 3 of 05xx: first reconciliation, after upload


def validate(msg):
    """Check a decoded message against the spec's field table for its MTI. Requests
    (0200/0201/0420/0421/0800/0500/0501/0320/0321) must carry exactly the fields
    listed; answers must carry what the terminal checks (0210: 4, 11, 39, 41, 49, 62,
    64, plus 37 and 38 when 39 is '00'; 0430 and 0330: 11, 39, 41, 62, 64; 0810: 11,
    39, 41, 128; 0510: 11, 39, 41, 49, 62, 74, 86, 128, plus 15 when 39 is '00') and
    may carry the other fields the spec lists for them, nothing else. Field 3 =
    200000 (05xx: 920000 or 960000), 70 = 301, 90 = 0200+STAN+field 7+22 zeros, 62
    parses with a rid (05xx: without one but with a batch; 0200/0201 and 03xx requests
    with an orrn, 03xx requests with a batch).
    Returns the parsed field 62 dict (None for 08xx).
    Raises DecodeError('mti' | 'missing' | 'unexpected' | 'value' | 'f62', field)."""
    mti = msg.get("t")
    try:
        need, may = _RULES[MTIS.index(mti)]
    except ValueError:
        raise DecodeError("mti")
    for f in need:
        if str(f) not in msg:
            raise DecodeError("missing", f)
    for k in msg:
        if k == "t" or k == "p" or k == "1":
            continue
        try:
            f = int(k)
        except ValueError:
            raise DecodeError("unexpected")
        if not 2 <= f <= 128 or (f not in need and f not in may):
            raise DecodeError("unexpected", f)
    ok = msg.get("39") == "00"
    if mti == "0210" and ok:
        for f in (37, 38):
            if str(f) not in msg:
                raise DecodeError("missing", f)
    if mti == "0510" and ok and "15" not in msg:
        raise DecodeError("missing", 15)
    settle = mti == "0500" or mti == "0501" or mti == "0510"
    if "3" in msg and (msg["3"] not in _SETTLE_3 if settle else msg["3"] != "200000"):
        raise DecodeError("value", 3)
    if "70" in msg and msg["70"] != "301":
        raise DecodeError("value", 70)
    if "90" in msg:
        v = msg["90"]
        if v[0:4] != "0200" or v[20:] != "0" * 22:
            raise DecodeError("value", 90)
    if "62" not in msg:
        return None
    d = parse62(msg["62"], not settle)
    if settle and "batch" not in d:
        raise DecodeError("f62", 62)
    upload = mti == "0320" or mti == "0321"
    if (mti == "0200" or mti == "0201" or upload) and "orrn" not in d:
        raise DecodeError("f62", 62)
    if upload and "batch" not in d:
        raise DecodeError("f62", 62)
    return d
