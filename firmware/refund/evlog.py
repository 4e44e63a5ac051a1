# Event log ring on flash: one structured record per step of a refund's life, for the
# technician's "where is my refund?" (docs/service-link.md has the format).
#
#   <dir>/NNNNNNNN  segment files, N = seq of the segment's first record
#   record: E7 | LEN | SEQ u32 | WALL u32 | UP u32 | LEVEL | TEXT | CRC32 (over LEN..TEXT)
#   TEXT:   name US rid US k=v US k=v ...      (US = 0x1F)
#
# Records are built in a preallocated RAM buffer and appended every few seconds (each
# littlefs sync rewrites the file's tail block): a power cut loses at most the unflushed
# records, and a torn record is caught by its CRC. RAM does not grow with the log:
# the buffer, a record scratch and one array of segment numbers.
import os
import struct
import time
from binascii import crc32
from micropython import const
from refund.chars import clean

MAGIC = const(0xE7)
_HDR = const(15)  # magic, len, seq, wall, up, level
_TEXT_MAX = const(236)  # LEN (1 byte) = 13 + text <= 249
_VAL_MAX = const(48)
_BUF = const(1024)
_REPEAT_MS = const(600000)  # a repeated condition is summarised at least this often
_AGG_SLOTS = const(8)
_CLOCK_OK = const(1600000000)  # an RTC below 2020 is not set
_US = "\x1f"
_SECRET = ("pin", "key", "hash", "salt", "mac", "pan")

_t0 = time.ticks_ms()
_dir = None
_clock = None
_cap = 262144
_nseg = 8
_segs = []  # first seq of each segment, oldest first (<= segments + 1 ints)
_size = 0  # bytes in the newest segment
_buf = bytearray(_BUF)
_mv = memoryview(_buf)
_n = 0  # bytes held in _buf
head = 1  # seq of the next record
_agg = {}  # key -> [count, first ticks, name, rid, text of the first]
stats = {"events": 0, "repeated": 0, "lost": 0, "bytes": 0, "damaged": 0}


def _text(name, rid, kw):
    t = name + _US + rid
    for k in kw:
        v = kw[k]
        if v is None:
            continue
        lk = k.lower()
        for w in _SECRET:
            if w in lk:
                v = "***"  # belt and braces: callers never pass secrets
                break
        t += _US + k + "=" + clean(v, _TEXT_MAX if k == "msg" else _VAL_MAX)
    return t[:_TEXT_MAX]


def event(name, rid="", level="I", agg=False, **kw):
    """Record one event. agg=True: a repeat of the same (name, rid, fields) only counts
    until the condition changes (clear()) or _REPEAT_MS pass; then one `repeat` record."""
    t = _text(name, rid or "", kw)
    if agg:
        key = name + _US + (rid or "")
        a = _agg.get(key)
        if a is not None and a[4] == t:
            a[0] += 1
            stats["repeated"] += 1
            return
        if a is not None:
            _summary(key)
        elif len(_agg) >= _AGG_SLOTS:
            _summary(next(iter(_agg)))
        _agg[key] = [0, time.ticks_ms(), name, rid or "", t]
    _append(level, t)


def clear(name, rid=""):
    """The condition `name` ended: write its repeat count, if any."""
    key = name + _US + (rid or "")
    if key in _agg:
        _summary(key)


def _summary(key):
    a = _agg.pop(key)
    if a[0]:
        _append("I", _text("repeat", a[3], {"of": a[2], "n": a[0],
                                             "s": time.ticks_diff(time.ticks_ms(), a[1]) // 1000}))


def _append(level, text):
    global _n, head
    tb = text.encode()
    ln = _HDR - 2 + len(tb)
    need = ln + 6
    if _n + need > _BUF:
        flush()
        if _n + need > _BUF:
            stats["lost"] += 1
            return
    p = _n
    wall = _clock() if _clock is not None else 0
    if wall < _CLOCK_OK:
        wall = 0
    _buf[p] = MAGIC
    _buf[p + 1] = ln
    struct.pack_into(">III", _buf, p + 2, head, wall, time.ticks_diff(time.ticks_ms(), _t0) & 0xFFFFFFFF)
    _buf[p + 14] = ord(level[0])
    _mv[p + _HDR:p + _HDR + len(tb)] = tb
    q = p + _HDR + len(tb)
    struct.pack_into(">I", _buf, q, crc32(_mv[p + 1:q]))
    _n = q + 4
    head += 1
    stats["events"] += 1
    if _dir is None and _n > _BUF // 2:
        _n = 0  # not attached (tests, early boot): keep only the newest records


def _path(first):
    return "%s/%08d" % (_dir, first)


def attach(path, clock, cap=262144, segments=8):
    """Keep the log under `path`; recover the head seq from the newest segment. Records
    made before attach (boot) are renumbered after what is on flash."""
    global _dir, _clock, _cap, _nseg, _size, head, _n
    try:
        os.mkdir(path)
    except OSError:
        pass
    _dir, _clock, _cap, _nseg = path, clock, cap, max(2, segments)
    names = []
    try:
        for name in os.listdir(path):
            if len(name) == 8 and name.isdigit():
                names.append(int(name))
    except OSError:
        stats["lost"] += 1  # no log directory: events stay in RAM until flash works
    _segs[:] = names
    early, _n = bytes(_mv[:_n]), 0
    last, _size, torn = 0, 0, False
    if names:
        last, _size, torn = _scan_last(_path(names[-1]))
        last = max(last, names[-1] - 1)
    head = last + 1
    if torn:
        stats["damaged"] += 1
        _size = _cap  # start a new segment: torn bytes stay at a segment's end
    _renumber(early)
    flush()


def _renumber(early):
    # Boot records written before the flash was mounted get seqs after the flash's.
    global head
    i = 0
    while i + _HDR <= len(early):
        ln = early[i + 1]
        t = early[i + _HDR:i + 2 + ln].decode()
        _append(chr(early[i + 14]), t)
        i += ln + 6


def _scan_last(p):
    """(last good seq, bytes up to the end of it, torn tail?) of one segment file."""
    last = size = 0
    hdr = bytearray(2)
    rec = bytearray(256)
    try:
        with open(p, "rb") as f:
            while True:
                if f.readinto(hdr) < 2:
                    break
                if hdr[0] != MAGIC or hdr[1] < _HDR - 2:
                    return last, size, True
                k = hdr[1] + 4
                if f.readinto(memoryview(rec)[:k]) < k:
                    return last, size, True
                mv = memoryview(rec)
                if crc32(mv[:k - 4], crc32(memoryview(hdr)[1:2])) != struct.unpack_from(">I", rec, k - 4)[0]:
                    return last, size, True
                last = struct.unpack_from(">I", rec, 0)[0]
                size += k + 2
    except OSError:
        pass
    return last, size, False


def flush():
    """Append buffered records to the newest segment (a new one when it is full, the
    oldest removed beyond the cap). Never raises: a failing flash costs records."""
    global _n, _size
    if _dir is None or not _n:
        return
    for key in list(_agg):
        a = _agg[key]
        if a[0] and time.ticks_diff(time.ticks_ms(), a[1]) > _REPEAT_MS:
            _summary(key)
            _agg[key] = [0, time.ticks_ms(), a[2], a[3], a[4]]
    try:
        if not _segs or _size >= _cap // _nseg:
            first = struct.unpack_from(">I", _buf, 2)[0]
            _segs.append(first)
            _size = 0
            while len(_segs) > _nseg:
                try:
                    os.remove(_path(_segs[0]))
                except OSError:
                    pass
                _segs.pop(0)
        with open(_path(_segs[-1]), "ab") as f:
            f.write(_mv[:_n])
        _size += _n
        stats["bytes"] += _n
    except OSError:
        stats["lost"] += 1
    _n = 0


def limit(cap, segments):
    """The configured size: applies from the next segment on."""
    global _cap, _nseg
    _cap, _nseg = cap, max(2, segments)


def first():
    """Oldest seq still on flash (head if the log is empty)."""
    return _segs[0] if _segs else head


def segments():
    return list(_segs)


def seg_path(first_seq):
    return _path(first_seq)


def used():
    n = 0
    for s in _segs:
        try:
            n += os.stat(_path(s))[6]
        except OSError:
            pass
    return n
