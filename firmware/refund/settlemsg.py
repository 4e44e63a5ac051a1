# Settlement messages (docs/host-link.md, "Settlement"): the terminal's 0500/0501
# reconciliation and 0320/0321 batch upload, and the checks of the host's 0510 / 0330
# answer against the request it answers. Nothing here touches flash or the network:
# the settlement task sends what these build (hostlink.Link.request signs them) and
# records what these accept.
#
# An answer these checks refuse is treated as never received (the request is repeated
# later as 0501 / 0321): it never closes a batch and never names a difference. The
# refusal is NoAnswer with e.reason:
#   decode    not a message of the spec            (read: iso8583.decode)
#   mac       the MAC does not verify              (read)
#   fields    breaks its MTI's field rules         (hostmsg.validate)
#   mti       not 0510 (to a 05xx) / 0330 (to a 03xx)
#   stan tid currency batch phase totals
#             field 11 / 41 / 49 / 62 batch / 3 / 74 or 86 differ from the request
#   match     a 0330 that answers another upload (rid, amount, STAN): ignored
#   busy      39 is 91 or 96: the host is not ready, repeat later
#   code      any other response code; for a 960000 anything but 00 (the spec's host
#             always closes after an upload)
#   date      field 15 is not a date MMDD
#   f62       diff / extra / extra_n / host malformed
from refund import chars, hostmsg, iso8583
from refund import mac as _mac

FIRST = "920000"  # field 3: first reconciliation of a batch
AFTER_UPLOAD = "960000"  # field 3: reconciliation after the batch upload
_BUSY = ("91", "96")


class NoAnswer(ValueError):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def read(key, data):
    """One received message (bytes, no length prefix) -> its dict, decoded, its MAC
    verified with key (mac.Mac) and held to its MTI's rules; NoAnswer('decode' |
    'mac' | 'fields') otherwise. hostlink.Link does the same for what it delivers."""
    try:
        msg = iso8583.decode(data)
    except iso8583.DecodeError:
        raise NoAnswer("decode")
    if not _mac.verify(key, data, msg):
        raise NoAnswer("mac")
    try:
        hostmsg.validate(msg)
    except iso8583.DecodeError:
        raise NoAnswer("fields")
    return msg


def _num(v, lo, hi, what):
    if not isinstance(v, int) or v < lo or v > hi:
        raise ValueError(what)
    return v


def build_0500(tid, mid, currency, batch, count, total, stan, f7, phase=FIRST, repeat=False):
    """The reconciliation request of one batch and currency -> message dict (str
    values, no MAC) for Link.request / mac.sign. currency: ISO 4217 numeric (int);
    batch 1..999999; count, total: the terminal's approved, not reversed refunds of the
    batch in that currency (minor units); stan 1..999999 (kept by the 0501 repeats);
    f7: 'MMDDhhmmss' UTC; phase FIRST or AFTER_UPLOAD; repeat: 0501. ValueError on
    anything out of range."""
    if phase != FIRST and phase != AFTER_UPLOAD:
        raise ValueError("phase")
    return {"t": "0501" if repeat else "0500", "3": phase, "7": f7,
            "11": "%06d" % _num(stan, 1, 999999, "stan"), "41": tid, "42": mid,
            "49": "%03d" % _num(currency, 0, 999, "currency"),
            "62": "batch=%06d" % _num(batch, 1, 999999, "batch"),
            "74": "%010d" % _num(count, 0, 9999999999, "count"),
            "86": "%016d" % _num(total, 0, 9999999999999999, "total")}


def build_0320(tid, mid, batch, e, f7, localtime, repeat=False):
    """The upload of one approved refund -> message dict (no MAC). e: the refund as the
    outbox keeps it (keys rid, orrn, amount, currency, stan, created, rrn, auth); fields
    4, 11, 12, 13 are those of its 0200 (12/13 from localtime(e['created']) exactly as
    the sender makes them), 37/38 those of its 0210; repeat: 0321 (same STAN)."""
    if not e.get("rrn") or not e.get("auth"):
        raise ValueError("not approved")
    ct = localtime(e["created"])
    f62 = hostmsg.build62({"rid": e["rid"], "orrn": e["orrn"],
                           "batch": "%06d" % _num(batch, 1, 999999, "batch")})
    return {"t": "0321" if repeat else "0320", "3": "200000",
            "4": "%012d" % _num(e["amount"], 0, 999999999999, "amount"), "7": f7,
            "11": "%06d" % _num(e["stan"], 1, 999999, "stan"),
            "12": "%02d%02d%02d" % (ct[3], ct[4], ct[5]), "13": "%02d%02d" % (ct[1], ct[2]),
            "37": e["rrn"], "38": e["auth"], "41": tid, "42": mid,
            "49": "%03d" % _num(e["currency"], 0, 999, "currency"), "62": f62}


def _valid(ans):
    try:
        return hostmsg.validate(ans)
    except iso8583.DecodeError:
        raise NoAnswer("fields")


def _count(d, key):
    v = d.get(key)
    if v is None:
        return None
    if not chars.digits(v, 1, 10):
        raise NoAnswer("f62")
    return int(v)


def check_0510(req, ans):
    """The host's answer ans (a dict from Link.request or read) to the 0500/0501 req
    (from build_0500) -> {'code': '00' | '95', 'date': field 15 'MMDD' (00) or None,
    'diff': int or None (95: refunds the host disagrees on), 'extra': [rid, ...] (refunds
    only the host has, as many as fit), 'extra_n': int (their total count)}; NoAnswer
    when it must be treated as never received (see the reasons above)."""
    if ans.get("t") != "0510":
        raise NoAnswer("mti")
    if ans.get("11") != req["11"]:
        raise NoAnswer("stan")
    if ans.get("41") != req["41"]:
        raise NoAnswer("tid")
    d = _valid(ans)
    if ans["49"] != req["49"]:
        raise NoAnswer("currency")
    if "3" in ans and ans["3"] != req["3"]:
        raise NoAnswer("phase")
    if ans["74"] != req["74"] or ans["86"] != req["86"]:
        raise NoAnswer("totals")
    if d.get("batch") != hostmsg.parse62(req["62"], False)["batch"]:
        raise NoAnswer("batch")
    code = ans["39"]
    if code in _BUSY:
        raise NoAnswer("busy")
    date = None
    if code == "00":
        date = ans["15"]
        m = int(date[0:2])
        dd = int(date[2:4])
        if not 1 <= m <= 12 or not 1 <= dd <= 31:
            raise NoAnswer("date")
    elif code != "95" or req["3"] != FIRST:
        raise NoAnswer("code")
    extra = []
    v = d.get("extra")
    if v:
        for rid in v.split(","):
            if not hostmsg.valid_rid(rid):
                raise NoAnswer("f62")
            extra.append(rid)
    n = _count(d, "extra_n")
    if n is None:
        n = len(extra)
    elif n < len(extra):
        raise NoAnswer("f62")
    return {"code": code, "date": date, "diff": _count(d, "diff"), "extra": extra, "extra_n": n}


def check_0330(req, ans):
    """The host's answer ans to the upload req (from build_0320) -> {'rid': rid,
    'host': 'ok' | 'missing' | 'amount', 'amount': the host's amount (int) for
    'amount', else None}; NoAnswer('match') for a 0330 that is not the answer to this
    upload (ignored), other reasons as above."""
    if ans.get("t") != "0330" or ans.get("11") != req["11"] or ans.get("41") != req["41"]:
        raise NoAnswer("match")
    d = _valid(ans)
    mine = hostmsg.parse62(req["62"])
    if d["rid"] != mine["rid"] or ("batch" in d and d["batch"] != mine["batch"]):
        raise NoAnswer("match")
    if ("4" in ans and ans["4"] != req["4"]) or ("49" in ans and ans["49"] != req["49"]):
        raise NoAnswer("match")
    code = ans["39"]
    if code in _BUSY:
        raise NoAnswer("busy")
    if code != "00":
        raise NoAnswer("code")
    v = d.get("host")
    if v == "ok" or v == "missing":
        return {"rid": d["rid"], "host": v, "amount": None}
    if v is not None and v.startswith("amount:") and chars.digits(v[7:], 1, 12):
        return {"rid": d["rid"], "host": "amount", "amount": int(v[7:])}
    raise NoAnswer("f62")
