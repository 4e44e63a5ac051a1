# Reading the event log for the service link: records copied from the segment files
# straight into the caller's buffer, by cursor (seq) or by rid. Nothing is held open
# between calls (a segment may rotate away meanwhile): each call reopens and seeks.
import struct
from binascii import crc32
from micropython import const
from refund import evlog

_HDR = const(15)
_ROOM = const(261)  # the largest record: 2 + 255 + 4
_hint = [0, 0, 0]  # seq, segment, offset where the last fill() stopped (a cache only)


def _read_one(f, mv, pos, cap):
    """Read the record at f's position into mv[pos:]; its end in mv, or -1 at the end of
    the segment, a bad record, or no room (the file position is then undefined)."""
    if pos + _HDR + 4 > cap or f.readinto(mv[pos:pos + 2]) < 2:
        return -1
    if mv[pos] != evlog.MAGIC or mv[pos + 1] < _HDR - 2:
        return -1
    k = mv[pos + 1] + 4
    end = pos + 2 + k
    if end > cap or f.readinto(mv[pos + 2:end]) < k:
        return -1
    if crc32(mv[pos + 1:end - 4]) != struct.unpack_from(">I", mv, end - 4)[0]:
        return -1
    return end


def _open(seg):
    try:
        return open(evlog.seg_path(seg), "rb")
    except OSError:
        return None


def fill(since, out):
    """Copy records with seq >= since into out, in order, as many as fit.
    Returns (bytes used, cursor after the last record copied)."""
    segs = evlog.segments()
    mv = memoryview(out)
    pos, nxt, cap = 0, since, len(out)
    seg_i = 0
    for i in range(len(segs)):
        if segs[i] <= since:
            seg_i = i
    off = _hint[2] if _hint[0] == since and segs and _hint[1] == segs[seg_i] else 0
    while seg_i < len(segs) and cap - pos >= _ROOM:
        seg = segs[seg_i]
        f = _open(seg)
        if f is not None:
            with f:
                f.seek(off)
                while cap - pos >= _ROOM:
                    end = _read_one(f, mv, pos, cap)
                    if end < 0:
                        break
                    off += end - pos
                    seq = struct.unpack_from(">I", out, pos + 2)[0]
                    if seq >= nxt:
                        pos, nxt = end, seq + 1
        _hint[0], _hint[1], _hint[2] = nxt, seg, off
        if cap - pos < _ROOM:
            break  # full: the client asks again from nxt
        seg_i += 1
        off = 0
    return pos, nxt


def scan_rid(rid, out, state):
    """Copy the records about `rid` into out from where `state` ([segment, offset], start
    [0, 0]) says; returns (bytes used, done). Call again with the same state to go on."""
    key = rid.encode()
    mv = memoryview(out)
    pos, cap = 0, len(out)
    for seg in evlog.segments():
        if seg < state[0]:
            continue
        if seg > state[0]:
            state[0], state[1] = seg, 0
        f = _open(seg)
        if f is None:
            continue
        with f:
            f.seek(state[1])
            while True:
                if cap - pos < _ROOM:
                    return pos, False
                end = _read_one(f, mv, pos, cap)
                if end < 0:
                    break
                state[1] += end - pos
                if _has(out, pos + _HDR, end - 4, key):
                    pos = end
        state[0] = seg + 1
        state[1] = 0
    return pos, True


def _has(buf, a, b, key):
    # The rid is the text's second field (name US rid US ...): compare it in place.
    while a < b and buf[a] != 0x1F:
        a += 1
    n = len(key)
    if a + 1 + n > b:
        return False
    for i in range(n):
        if buf[a + 1 + i] != key[i]:
            return False
    return a + 1 + n == b or buf[a + 1 + n] == 0x1F
