# Outbox record codec. Every record on flash is one frame:
#   [len u8][type u8][payload ...][crc32 u32 LE]   len = whole frame, CRC over len..payload
# littlefs does not checksum file data, so every frame carries its own CRC.
# Layouts are in docs/outbox-format.md; keep both in step.
import struct
from binascii import crc32
from micropython import const

# Lifecycle states (the names are used everywhere: records, links, tools, docs).
QUEUED = const(1)
APPROVED = const(2)
PRINTED = const(3)
DECLINED = const(4)
CANCELLING = const(5)
CANCELLED = const(6)
NAMES = ("", "queued", "approved", "printed", "declined", "cancelling", "cancelled")

# Flag bits of an entry.
F_SENT = const(1)  # a 0200 may have reached the host: resends are 0201, cancel needs 0420
F_PRINTING = const(2)  # a receipt (or slip) byte may be on paper: the next print is a REPRINT
F_SLIP = const(4)  # decline slip printed: a declined entry is then complete
F_REV_SENT = const(8)  # a 0420 may have reached the host: resends are 0421
F_NOTICE = const(16)  # a pending notice was printed for this queued refund: not again

# Allowed transitions: a state never goes backwards; approved cannot be cancelled.
_NEXT = {
    QUEUED: (QUEUED, APPROVED, DECLINED, CANCELLING, CANCELLED),
    APPROVED: (APPROVED, PRINTED),
    DECLINED: (DECLINED,),
    CANCELLING: (CANCELLING, CANCELLED),
    PRINTED: (),
    CANCELLED: (),
}

T_ENTRY = const(0x45)  # 'E'
T_LEASE = const(0x4C)  # 'L'
T_HEAD = const(0x48)  # 'H'
T_BATCH = const(0x42)  # 'B': the batch numbers changed (cut, close)
T_TOTAL = const(0x54)  # 'T': one batch's count and total in one currency (snapshot only)

MAX_FRAME = const(128)  # one journal file stays inline in littlefs metadata (cheap)
_OVER = const(6)  # len + type + crc

# ver seq state flags stan rstan amount currency created updated aver sent code gen
_ENTRY = "<IIBBIIqHIIII2s4s"
_ENTRY_LEN = const(50)
_LEASE = "<III"  # ver seq_limit stan_limit
_BATCH = "<III"  # ver open cut
_TOTAL = "<IHIq"  # batch currency count total
# fmt gen base seq_limit stan_limit hist_ver hist_count hist_oldest count; fmt 2 adds
# batch_open batch_cut
_HEAD = "<B4sIIIIIII"
_HEAD2 = "<II"
_HEAD_LEN = const(33)  # struct.calcsize(_HEAD)
_STRS = ("orrn", "rrn", "auth", "op", "sup", "ecr")
STR_MAX = {"orrn": 12, "rrn": 12, "auth": 6, "op": 8, "sup": 8, "ecr": 16}


class Corrupt(Exception):
    pass


def can_move(old, new):
    return new in _NEXT[old]


def complete(state, flags):
    """Complete entries leave the live set (history keeps them for explain/reprint)."""
    return state == PRINTED or state == CANCELLED or (state == DECLINED and flags & F_SLIP)


def rid_of(gen, seq):
    return "%s-%06d" % (gen, seq)


def _frame(typ, payload):
    n = len(payload) + _OVER
    if n > 255:
        raise ValueError("record too long")
    b = bytearray(n)
    b[0] = n
    b[1] = typ
    b[2 : n - 4] = payload
    struct.pack_into("<I", b, n - 4, crc32(memoryview(b)[: n - 4]))
    return b


def check(buf):
    """Validate one frame in buf (a bytes/memoryview starting at the frame). Returns (type, payload mv)."""
    if len(buf) < _OVER:
        raise Corrupt("short")
    n = buf[0]
    if n < _OVER or n > len(buf):
        raise Corrupt("length")
    mv = memoryview(buf)
    if struct.unpack_from("<I", mv, n - 4)[0] != crc32(mv[: n - 4]):
        raise Corrupt("crc")
    return buf[1], mv[2 : n - 4]


def entry(e):
    """Encode an entry dict (see outbox.py for keys) as a frame."""
    strs = []
    for k in _STRS:
        s = e.get(k) or ""
        if isinstance(s, str):
            s = s.encode()
        if len(s) > STR_MAX[k]:
            raise ValueError("%s longer than %d" % (k, STR_MAX[k]))
        strs.append(bytes((len(s),)) + s)
    code = (e.get("code") or "").encode()
    head = struct.pack(_ENTRY, e["ver"], e["seq"], e["state"], e["flags"], e["stan"],
                       e.get("rstan", 0), e["amount"], e["currency"], e["created"],
                       e["updated"], e.get("aver", 0), e.get("sent", 0), code[:2] if len(code) == 2 else b"  ",
                       e["gen"].encode())
    # Format 2 appends u32 batch after the strings (a format-1 record ends there: batch 0).
    f = _frame(T_ENTRY, head + b"".join(strs) + struct.pack("<I", e.get("batch", 0)))
    if len(f) > MAX_FRAME:
        raise ValueError("entry record %d B > %d" % (len(f), MAX_FRAME))
    return f


def parse_entry(p):
    (ver, seq, state, flags, stan, rstan, amount, cur, created, updated, aver, sent, code,
     gen) = struct.unpack_from(_ENTRY, p, 0)
    if not 1 <= state <= 6:
        raise Corrupt("state")
    e = {"ver": ver, "seq": seq, "state": state, "flags": flags, "stan": stan,
         "rstan": rstan, "amount": amount, "currency": cur, "created": created,
         "updated": updated, "aver": aver, "sent": sent, "code": code.decode().strip(), "gen": gen.decode()}
    i = _ENTRY_LEN
    for k in _STRS:
        n = p[i]
        e[k] = bytes(p[i + 1 : i + 1 + n]).decode()
        i += 1 + n
    e["batch"] = _batch_at(p, i)
    return e


def _batch_at(p, i):
    if i == len(p):
        return 0  # written before batches existed
    if i + 4 != len(p):
        raise Corrupt("entry size")
    return struct.unpack_from("<I", p, i)[0]


def entry_batch(p):
    """(batch, currency, aver) of an entry payload, without decoding strings."""
    i = _ENTRY_LEN
    for _k in _STRS:
        i += 1 + p[i]
    return _batch_at(p, i), struct.unpack_from("<H", p, 26)[0], struct.unpack_from("<I", p, 36)[0]


def entry_head(p):
    """(ver, seq, state, flags, amount) without decoding strings: recovery's hot path."""
    ver, seq, state, flags = struct.unpack_from("<IIBB", p, 0)
    amount = struct.unpack_from("<q", p, 18)[0]
    if not 1 <= state <= 6:
        raise Corrupt("state")
    return ver, seq, state, flags, amount


def lease(ver, seq_limit, stan_limit):
    return _frame(T_LEASE, struct.pack(_LEASE, ver, seq_limit, stan_limit))


def parse_lease(p):
    return struct.unpack_from(_LEASE, p, 0)


def batch(ver, open_, cut):
    return _frame(T_BATCH, struct.pack(_BATCH, ver, open_, cut))


def parse_batch(p):
    return struct.unpack_from(_BATCH, p, 0)


def total(b, cur, count, amount):
    return _frame(T_TOTAL, struct.pack(_TOTAL, b, cur, count, amount))


def parse_total(p):
    return struct.unpack_from(_TOTAL, p, 0)


def head(h):
    return _frame(T_HEAD, struct.pack(_HEAD, 2, h["gen"].encode(), h["base"], h["seq_limit"],
                                      h["stan_limit"], h["hist_ver"], h["hist_count"],
                                      h["hist_oldest"], h["count"])
                  + struct.pack(_HEAD2, h.get("batch_open", 1), h.get("batch_cut", 0)))


def parse_head(p):
    fmt, gen, base, sl, stl, hv, hc, ho, count = struct.unpack_from(_HEAD, p, 0)
    if fmt != 1 and fmt != 2:
        raise Corrupt("snapshot format %d" % fmt)
    bo, bc = struct.unpack_from(_HEAD2, p, _HEAD_LEN) if fmt == 2 else (1, 0)
    return {"gen": gen.decode(), "base": base, "seq_limit": sl, "stan_limit": stl,
            "hist_ver": hv, "hist_count": hc, "hist_oldest": ho, "count": count,
            "batch_open": bo, "batch_cut": bc}
