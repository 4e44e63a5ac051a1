# Worker for tests/test_svcframe.py: one JSON request per stdin line, one JSON answer
# per stdout line, so hypothesis drives the real firmware codec (refund/svcframe.py).
#   {"op": "decode", "chunks": [HEX], "max": N, "how": "push"|"feed"|"want"}
#       -> {"frames": [HEX], "stats": {...}, "in_frame": bool, "breaks": n, "wants": [...]}
#       a fresh Decoder; "push" byte by byte (a 0x03 asked is_break first, as the console
#       watcher does), "feed" chunk by chunk, "want" reads at most want() bytes at a time
#   {"op": "encode", "parts": [HEX], "scratch": N} -> {"frame": HEX, "sizes": [n]}
#   {"op": "encode_into", "payload": HEX, "out": N} -> {"frame": HEX} | {"error": ...}
#   {"op": "stale", "head": HEX, "ms": N, "tail": HEX} -> push head, sleep, push tail
import sys
import json
import time
import gc
from binascii import hexlify, unhexlify
from refund import svcframe


def h(b):
    return hexlify(b).decode()


def decode(t):
    d = svcframe.Decoder(t.get("max", 512))
    out = []
    breaks = 0
    wants = []
    how = t.get("how", "push")
    for c in t["chunks"]:
        data = unhexlify(c)
        if how == "push":
            for b in data:
                if d.is_break(b):
                    breaks += 1
                p = d.push(b)
                if p is not None:
                    out.append(h(p))
        elif how == "feed":
            mv = memoryview(data)
            while len(mv):
                p, used = d.feed(mv)
                if p is not None:
                    out.append(h(p))
                mv = mv[used:]
        else:
            i = 0
            while i < len(data):
                w = d.want()
                wants.append(w)
                if w < 1:
                    raise ValueError("want() < 1")
                collecting = d._st == 1  # an intact frame open (not a damaged one)
                st = d.stats
                cut = st["truncated"] + st["bad_byte"] + st["bad_crc"] + st["oversized"]
                k = min(w, len(data) - i)
                p, used = d.feed(memoryview(data)[i:], k)
                if p is not None:
                    out.append(h(p))
                    # an intact frame read completes with the read (a damaged one may not)
                    if collecting and w > 1 and used != k and cut == (
                            st["truncated"] + st["bad_byte"] + st["bad_crc"] + st["oversized"]):
                        raise ValueError("frame ended inside a want() read")
                i += used
    if how != "push":
        breaks = d.breaks
    elif breaks != d.breaks:
        raise ValueError("is_break and breaks disagree")
    return {"frames": out, "stats": d.stats, "in_frame": d.in_frame, "breaks": breaks,
            "wants": wants[:50]}


while True:
    line = sys.stdin.readline()
    if not line:
        break
    t = json.loads(line)
    try:
        op = t["op"]
        if op == "decode":
            res = decode(t)
        elif op == "encode":
            scratch = bytearray(t.get("scratch", 512))
            parts = tuple(unhexlify(p) for p in t["parts"])
            got = bytearray()
            sizes = []
            for c in svcframe.chunks(parts, scratch):
                if not isinstance(c, memoryview):
                    raise TypeError("chunk is not a memoryview")
                got += c
                sizes.append(len(c))
            res = {"frame": h(got), "sizes": sizes}
        elif op == "encode_into":
            out = bytearray(t["out"])
            try:
                n = svcframe.encode_into(unhexlify(t["payload"]), out)
                res = {"frame": h(out[:n])}
            except ValueError as e:
                res = {"error": str(e)}
        elif op == "stale":
            d = svcframe.Decoder()
            for b in unhexlify(t["head"]):
                d.push(b)
            before = d.in_frame
            time.sleep_ms(t["ms"])
            brk = d.is_break(3)
            frames = []
            for b in unhexlify(t["tail"]):
                p = d.push(b)
                if p is not None:
                    frames.append(h(p))
            res = {"before": before, "break": brk, "stats": d.stats, "frames": frames}
        elif op == "alloc":
            # heap bytes allocated while decoding a frame of n payload bytes, pushed
            # byte by byte through a bound method, after warming up
            d = svcframe.Decoder(2048)
            data = unhexlify(t["frame"])
            push = d.push
            for b in data:
                push(b)
            gc.collect()
            gc.disable()
            a0 = gc.mem_alloc()
            for b in data:
                push(b)
            a1 = gc.mem_alloc()
            gc.enable()
            res = {"alloc": a1 - a0, "frames": d.stats["frames"]}
        else:
            res = {"exception": "unknown op"}
    except Exception as e:
        res = {"exception": repr(e)}
    print(json.dumps(res))
