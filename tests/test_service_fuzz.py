"""Fuzzed service frames against the running terminal (issue 10, "Bad input"): bad CRC,
truncated, oversized, unknown commands, bad arguments, cursors out of range, garbage
between frames and Ctrl-C bytes inside frames get an error reply or are dropped; the
application keeps running, refunds taken meanwhile are approved and printed, and no
reply carries a secret. REFUND_FUZZ_N sets the number of cases (make soak: 10,000)."""
import binascii
import json
import os
import random
import threading
import time

from host_tools import reliability
from host_tools.svclink import MARK, Client, Decoder, escape, frame, split_payload

N = int(os.environ.get("REFUND_FUZZ_N", "600"))
SEED = int(os.environ.get("REFUND_FUZZ_SEED", "10"))
CMDS = ["info", "status", "outbox", "logs", "explain", "metrics", "config", "challenge",
        "retry", "reprint", "report", "clock", "nosuch", "", "INFO", "logs\x00", 7, None]


def _json_case(rnd):
    req = {"id": rnd.choice([rnd.randint(1, 2 ** 31 - 1), -1, 0, "x", None, 2 ** 40]),
           "cmd": rnd.choice(CMDS)}
    for k in rnd.sample(["since", "max", "from", "rid", "t", "mac", "nonce"], rnd.randint(0, 3)):
        req[k] = rnd.choice([rnd.randint(-5, 10 ** 12), "A" * rnd.randint(0, 40), None, [], {},
                             True, "0000-000001", 2 ** 33])
    if req["cmd"] == "logs" and rnd.random() < 0.5:
        req["since"] = rnd.choice([10 ** 9, 2 ** 32 + 5, -1])  # out of range
    data = json.dumps(req).encode()
    return data if len(data) <= 512 else data[:512]


def case(rnd):
    """One fuzz case: raw bytes for the console. A 0x03 only ever inside a frame (outside
    one it is a technician's Ctrl-C, which stops the app by design)."""
    kind = rnd.randrange(8)
    good = frame(_json_case(rnd))
    if kind == 0:  # bad CRC
        b = bytearray(good)
        b[-1] = 0x41 if b[-1] != 0x41 else 0x42
        return "bad_crc", bytes(b)
    if kind == 1:  # truncated, then the next case's 0x1E resynchronises
        return "truncated", good[:rnd.randint(1, len(good) - 1)]
    if kind == 2:  # oversized LEN with a body that never ends properly
        n = rnd.randint(513, 65535)
        body = bytes(rnd.choice(range(0x20, 0x7F)) for _ in range(rnd.randint(0, 300)))
        return "oversized", bytes((MARK,)) + escape(n.to_bytes(2, "big") + body)
    if kind == 3:  # raw Ctrl-C (and other controls) inside a frame
        b = bytearray(good)
        for _ in range(rnd.randint(1, 3)):
            b.insert(rnd.randint(1, len(b) - 1), rnd.choice([0x03, 0x03, 0x01, 0x04, 0x00]))
        return "ctrl_c_inside", bytes(b)
    if kind == 4:  # garbage between frames (no 0x03 outside a frame)
        g = bytes(rnd.choice([x for x in range(256) if x not in (0x03, MARK)])
                  for _ in range(rnd.randint(1, 200)))
        return "garbage", g + good
    if kind == 5:  # not JSON / not an object
        junk = rnd.choice([b"", b"[]", b"nul", b"{", b'"x"', bytes(rnd.randrange(256) for _ in range(40))])
        return "not_json", frame(junk)
    return "json", good


def test_fuzzed_service_frames_leave_the_terminal_running(shop):
    shop.board.console.close()
    port = shop.board.ends["console"]
    stop = threading.Event()
    refunds = []

    def till():  # the cash register keeps taking refunds during the fuzz
        k = 0
        while not stop.is_set():
            r = shop.refund(500 + k, orrn="FUZZSVC%05d" % k, timeout=3, tries=2)
            assert r["_rc"] == 0, r
            refunds.append(r["rid"])
            k += 1
            time.sleep(0.3)

    t = threading.Thread(target=till, daemon=True)
    t.start()
    import serial

    ser = serial.serial_for_url(port, timeout=0)
    dec = Decoder()
    replies = bytearray()
    rnd = random.Random(SEED)
    kinds = {}
    t0 = time.time()
    try:
        for i in range(N):
            kind, raw = case(rnd)
            kinds[kind] = kinds.get(kind, 0) + 1
            ser.write(raw)
            if i % 20 == 0:
                time.sleep(0.01)
            data = ser.read(65536)
            replies += data
            dec.feed(data)
        ser.write(bytes((MARK,)))  # close whatever the last case left open
        time.sleep(1.2)  # the board's 1 s incomplete-frame limit
        replies += ser.read(65536)
    finally:
        ser.close()
        stop.set()
        t.join(30)
    print("service fuzz: %d cases, seed %d, kinds %s" % (N, SEED, json.dumps(kinds, sort_keys=True)))
    fuzz_s = time.time() - t0
    c = Client(port, timeout=5)
    info = c.call("info")
    m = c.call("metrics")["counters"]
    c.close()
    assert info["terminal"] is True and m["svc_requests"] > 0 and m["svc_bad"] > 0, m
    assert refunds, "no refund was taken during the fuzz"
    for rid in refunds:
        shop.wait_state(rid, ("printed",), timeout=30)
    text = bytes(replies)
    leaked = [s for s in _secrets() if s.encode() in text]
    reliability.record("fuzz_service_frames", N, SEED, kinds, ["a secret reached the console"] if leaked else [],
                       checked={"refunds_taken": len(refunds), "svc_requests": m["svc_requests"],
                                "svc_bad": m["svc_bad"]}, seconds=round(fuzz_s))
    assert not leaked, "a secret reached the console"


def _secrets():
    with open(os.path.join(os.path.dirname(__file__), "..", "boards", "unix", "bench-config.json")) as f:
        cfg = json.load(f)
    out = [cfg["mac_key"], cfg["mac_key"].lower(), cfg["tech_key"], cfg["tech_key"].lower()]
    for s in cfg["staff"]:
        out += [s["hash"], s["salt"]]
    return out
