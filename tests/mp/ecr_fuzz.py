# Fuzz worker for tests/test_ecr.py: one JSON request per stdin line, one JSON answer
# per stdout line, so hypothesis can drive the real firmware parser example by example.
#   {"op": "parse", "chunks": [HEX, ...]}  -> {"frames": [HEX], "stats": {...}, "pending": n}
#       a fresh ecr.Parser fed chunk by chunk, then flushed until empty (line quiet)
#   {"op": "answer", "payload": HEX}       -> {"reply": HEX | null, "req": dict | null}
#       ecr.answer with a handler that records the request
#   {"op": "echo", "payload": HEX}         -> {"frame": HEX}: decode, then encode + frame
import sys
import json
import asyncio
from binascii import hexlify, unhexlify
from refund import ecr


def h(b):
    return hexlify(b).decode()


def log(tag, msg, level="INFO", ev=True):
    pass


async def answer(payload):
    seen = []

    def handler(req):
        seen.append(req)
        return {"state": "queued", "rid": "TEST-000001"}

    r = await ecr.answer(payload, handler, log, {})
    return {"reply": h(r) if r is not None else None, "req": seen[0] if seen else None}


while True:
    line = sys.stdin.readline()
    if not line:
        break
    t = json.loads(line)
    try:
        if t["op"] == "parse":
            p = ecr.Parser()
            out = []
            for c in t["chunks"]:
                out += p.feed(unhexlify(c))
            while p.pending():
                out += p.flush()
            res = {"frames": [h(f) for f in out], "stats": p.stats, "pending": p.pending()}
        elif t["op"] == "answer":
            res = asyncio.run(answer(unhexlify(t["payload"])))
        else:
            d, err = ecr.decode(unhexlify(t["payload"]))
            res = {"frame": h(ecr.frame(ecr.encode(d))), "err": err}
    except Exception as e:
        res = {"exception": repr(e)}
    print(json.dumps(res))
