"""ISO 8583 messages of the host simulator (host_tools/hostsim.py), as docs/host-link.md
defines them: the MAC, the 2-byte length framing, and the field rules a request must keep.

Each request MTI has a `Rule` in `RULES`: the MTI of its answer, exactly the fields it
carries, the fields with a fixed value, the keys its field 62 must have and any check of
its own. A new request type is a rule here, its fields' formats in `NUMERIC`, and a
handler in host_tools/hostsim_service.py (the settlement's 0500/0501 and 0320/0321 have
theirs in host_tools/hostsim_settle.py).
"""
import hashlib
import hmac
import re
from dataclasses import dataclass, field

import iso8583
from iso8583.specs import default_ascii as SPEC

MAX_FRAME = 4096
MAC_LEN = 16

NUMERIC = {"3": 6, "4": 12, "7": 10, "11": 6, "12": 6, "13": 4, "15": 4, "49": 3, "70": 3,
           "74": 10, "86": 16, "90": 42}
PRINTABLE = ("41", "42")  # fields of printable ASCII
ALNUM = {"37": 12, "38": 6}  # an fields: letters, digits, space
AN_RE = re.compile(r"[A-Za-z0-9 ]*\Z")
BATCH_RE = re.compile(r"(?!000000)[0-9]{6}\Z")
RID_RE = re.compile(r"[A-Z0-9-]{1,32}\Z")
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,16}\Z")
HEX16_RE = re.compile(r"[0-9A-F]{16}\Z")


class Invalid(ValueError):
    """A request that breaks the spec's field rules."""


def _check90(doc):
    f90 = doc["90"]
    if f90[:4] != "0200" or f90[20:] != "0" * 22:
        raise Invalid("field 90 %r" % f90)


def _check_settle3(doc):
    if doc["3"] not in ("920000", "960000"):
        raise Invalid("field 3 %r (920000 or 960000)" % doc["3"])


@dataclass(frozen=True)
class Rule:
    answer: str  # MTI of the answer
    fields: frozenset  # exactly these fields (no bitmap), MAC included
    fixed: dict = field(default_factory=dict)  # field -> the only value allowed
    f62_keys: tuple = ()  # keys field 62 must have besides rid
    check: object = None  # check(doc) of its own, raises Invalid
    rid: bool = True  # field 62 must have a rid (the batch-level 05xx have none)


_REQ = frozenset({"3", "4", "7", "11", "12", "13", "41", "42", "49", "62", "64"})
# 0420/0421 carry field 90, hence a secondary bitmap: their MAC is field 128 (the MAC
# is always the last field).
_REV = frozenset({"3", "4", "7", "11", "41", "42", "49", "62", "90", "128"})
# 0500/0501 carry 74 and 86, hence a secondary bitmap and the MAC in 128
_RECON = frozenset({"3", "7", "11", "41", "42", "49", "62", "74", "86", "128"})
_UPLOAD = frozenset({"3", "4", "7", "11", "12", "13", "37", "38", "41", "42", "49", "62", "64"})
_REFUND = Rule("0210", _REQ, {"3": "200000"}, ("orrn",))
_REVERSAL = Rule("0430", _REV, {"3": "200000"}, check=_check90)
_RECONCILE = Rule("0510", _RECON, f62_keys=("batch",), check=_check_settle3, rid=False)
_BATCH_UPLOAD = Rule("0330", _UPLOAD, {"3": "200000"}, ("orrn", "batch"))
RULES = {
    "0200": _REFUND, "0201": _REFUND,
    "0420": _REVERSAL, "0421": _REVERSAL,
    "0800": Rule("0810", frozenset({"7", "11", "41", "70", "128"}), {"70": "301"}),
    "0500": _RECONCILE, "0501": _RECONCILE,
    "0320": _BATCH_UPLOAD, "0321": _BATCH_UPLOAD,
}
REQUESTS = tuple(RULES)
ANSWER_MTI = {mti: r.answer for mti, r in RULES.items()}
FIELDS = {mti: set(r.fields) for mti, r in RULES.items()}


def mac_of(key, data):
    """MAC of the spec: HMAC-SHA256, first 8 bytes, 16 uppercase hex characters."""
    return hmac.new(key, bytes(data), hashlib.sha256).digest()[:8].hex().upper().encode()


def mac_field(doc):
    """'128' if the message has a field 65..127 (secondary bitmap), else '64'."""
    for k in doc:
        if k.isdigit() and 64 < int(k) < 128:
            return "128"
    return "64"


def encode(doc, key, mac=True):
    """dict (str keys, str values, no 64/128) -> message bytes with the MAC filled in."""
    doc = {k: v for k, v in doc.items() if k not in ("p", "1", "64", "128")}
    if mac:
        doc[mac_field(doc)] = "0" * MAC_LEN
    raw, _ = iso8583.encode(doc, SPEC)
    if mac:
        raw[-MAC_LEN:] = mac_of(key, raw[:-MAC_LEN])
    return bytes(raw)


DECODE_ERRORS = (iso8583.DecodeError, ValueError, KeyError)  # what decode() raises


def decode(body):
    """Message bytes -> dict; raises one of DECODE_ERRORS if they are not a message."""
    doc, _ = iso8583.decode(bytearray(body), SPEC)
    return doc


def frame(data):
    if not 0 < len(data) <= MAX_FRAME:
        raise ValueError("frame length %d" % len(data))
    return len(data).to_bytes(2, "big") + data


def split_frames(buf):
    """Bytes read from a connection -> (the messages of its complete frames, what is
    left for the next read): the transport's 2-byte big-endian length prefix."""
    out = []
    while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
        n = int.from_bytes(buf[:2], "big")
        out.append(bytes(buf[2:2 + n]))
        buf = buf[2 + n:]
    return out, buf


def verify(key, data, doc):
    """True if the MAC field is where the spec puts it and verifies."""
    second = any(k.isdigit() and int(k) > 64 for k in doc)
    where = "128" if second else "64"
    other = "64" if second else "128"
    if where not in doc or other in doc:
        return False
    return hmac.compare_digest(mac_of(key, data[:-MAC_LEN]), bytes(data[-MAC_LEN:]))


def _printable(text):
    return all(" " <= c <= "~" for c in text)


def parse62(text, rid=True):
    """Field 62 -> dict; Invalid unless key=value pairs of the spec with a rid (unless
    rid=False, or one is given anyway), a 12-character orrn and a 6-digit batch."""
    d = {}
    if not text:
        raise Invalid("field 62 empty")
    for part in text.split(";"):
        k, sep, v = part.partition("=")
        if not sep or not KEY_RE.match(k) or "=" in v or k in d:
            raise Invalid("field 62 %r" % text)
        if not _printable(v):
            raise Invalid("field 62 characters")
        d[k] = v
    if (rid or "rid" in d) and not RID_RE.match(d.get("rid", "")):
        raise Invalid("field 62 rid")
    if "orrn" in d and len(d["orrn"]) != 12:
        raise Invalid("field 62 orrn")
    if "batch" in d and not BATCH_RE.match(d["batch"]):
        raise Invalid("field 62 batch %r (000001-999999)" % d["batch"])
    return d


def check_request(doc):
    """Strict check of a decoded request; returns its field 62 dict (or None)."""
    mti = doc["t"]
    rule = RULES.get(mti)
    if rule is None:
        raise Invalid("MTI %r is not a request" % mti)
    have = {k for k in doc if k.isdigit() and k != "1"}
    if have != rule.fields:
        raise Invalid("%s fields: missing %s, unexpected %s" % (
            mti, sorted(rule.fields - have, key=int), sorted(have - rule.fields, key=int)))
    for k, n in NUMERIC.items():
        if k in doc and (len(doc[k]) != n or not doc[k].isdigit() or not doc[k].isascii()):
            raise Invalid("field %s not n%d" % (k, n))
    for k in PRINTABLE:
        if k in doc and not _printable(doc[k]):
            raise Invalid("field %s characters" % k)
    for k, n in ALNUM.items():
        if k in doc and (len(doc[k]) != n or not AN_RE.match(doc[k])):
            raise Invalid("field %s not an%d" % (k, n))
    mac = doc.get("64", doc.get("128"))
    if not HEX16_RE.match(mac):
        raise Invalid("MAC field not 16 uppercase hex")
    for k, v in rule.fixed.items():
        if doc[k] != v:
            raise Invalid("field %s %r" % (k, doc[k]))
    if rule.check:
        rule.check(doc)
    if "62" not in doc:
        return None
    f62 = parse62(doc["62"], rule.rid)
    for k in rule.f62_keys:
        if k not in f62:
            raise Invalid("field 62 without %s" % k)
    return f62
