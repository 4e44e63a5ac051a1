"""Event log records (docs/service-link.md "Event log") -> dicts.

    E7 | LEN | SEQ u32 | WALL u32 | UP u32 | LEVEL | TEXT | CRC32 u32 (over LEN..TEXT)
    TEXT = name 0x1F rid 0x1F k=v 0x1F k=v ...

Shared by `refundctl logs` (record bodies of service frames) and the mpremote fallback
(segment files copied from FLASH/ev/). A bad CRC or a torn tail (power cut) is skipped
to the next 0xE7 and counted once per damaged stretch.

    python -m host_tools.evdecode DIR_OR_FILE...    # JSON Lines on stdout
"""
import binascii
import json
import os
import sys

MAGIC = 0xE7
US = 0x1F
_MIN_LEN = 13  # SEQ + WALL + UP + LEVEL
INT_FIELDS = frozenset(("amount", "attempt", "n", "s", "old", "new", "ok", "due", "total"))
LEVELS = {"I": "INFO", "W": "WARN", "E": "ERROR"}


def new_stats():
    return {"records": 0, "bad_crc": 0, "torn": 0, "skipped_bytes": 0}


def _fields(items):
    out = {}
    for kv in items:
        k, _sep, v = kv.partition("=")
        if k in INT_FIELDS and v.lstrip("-").isdigit() and str(int(v)) == v:
            v = int(v)  # canonical integers only: "0042" stays text
        out[k] = v
    return out


def parse_record(rec):
    """One whole record (bytes from 0xE7 to the CRC, CRC already checked) -> dict."""
    ln = rec[1]
    seq = int.from_bytes(rec[2:6], "big")
    wall = int.from_bytes(rec[6:10], "big")
    up = int.from_bytes(rec[10:14], "big")
    level = chr(rec[14])
    text = bytes(rec[15:2 + ln]).decode("ascii", "replace").split("\x1f")
    name = text[0]
    rid = text[1] if len(text) > 1 else ""
    return {"seq": seq, "wall": wall, "up_ms": up, "level": level, "name": name, "rid": rid,
            "fields": _fields(text[2:])}


def decode(data, stats=None):
    """bytes -> list of record dicts in the order found; stats (a dict from new_stats(),
    updated in place) counts records, damaged stretches (bad_crc / torn) and skipped bytes."""
    st = new_stats() if stats is None else stats
    data = bytes(data)
    out = []
    i, n = 0, len(data)
    damaged = False  # inside a damaged stretch: count it once

    def fail(kind, at):
        nonlocal damaged
        if not damaged:
            st[kind] += 1
            damaged = True
        j = data.find(bytes((MAGIC,)), at + 1)
        j = n if j < 0 else j
        st["skipped_bytes"] += j - at
        return j

    while i < n:
        if data[i] != MAGIC:
            i = fail("bad_crc", i)  # bytes that are not a record: damage too
            continue
        if i + 2 > n:
            i = fail("torn", i)
            continue
        ln = data[i + 1]
        end = i + 2 + ln + 4
        if ln < _MIN_LEN:
            i = fail("bad_crc", i)
            continue
        if end > n:
            i = fail("torn", i)
            continue
        crc = int.from_bytes(data[end - 4:end], "big")
        if binascii.crc32(data[i + 1:end - 4]) & 0xFFFFFFFF != crc:
            i = fail("bad_crc", i)
            continue
        out.append(parse_record(data[i:end]))
        st["records"] += 1
        damaged = False
        i = end
    return out


def segment_files(path):
    """Segment files (8-digit names) in a directory, oldest first."""
    names = [f for f in os.listdir(path) if len(f) == 8 and f.isdigit()]
    return [os.path.join(path, f) for f in sorted(names, key=int)]


def decode_dir(path, stats=None):
    """Every segment of a copied FLASH/ev directory -> records ordered by seq (each seq
    once). Each file is decoded on its own: a torn tail never swallows the next file."""
    st = new_stats() if stats is None else stats
    seen = {}
    for f in segment_files(path):
        with open(f, "rb") as fh:
            for r in decode(fh.read(), st):
                seen.setdefault(r["seq"], r)
    return [seen[k] for k in sorted(seen)]


def human(r):
    """One line for a person: time (UTC, or uptime if the clock was unset), level, event."""
    import time

    if r["wall"]:
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["wall"]))
    else:
        t = "+%.3fs" % (r["up_ms"] / 1000.0)
    kv = " ".join("%s=%s" % (k, v) for k, v in r["fields"].items())
    return "%s %s %s %s %s" % (t, LEVELS.get(r["level"], r["level"]), r["name"], r["rid"] or "-", kv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    st = new_stats()
    for p in argv:
        if os.path.isdir(p):
            recs = decode_dir(p, st)
        else:
            with open(p, "rb") as f:
                recs = decode(f.read(), st)
        for r in recs:
            print(json.dumps(r, sort_keys=True))
    print("evdecode: %s" % json.dumps(st), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
