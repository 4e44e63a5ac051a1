# micropython-lib against the firmware's own code, where both do the same job (issue 11:
# use micropython-lib unless it measures worse). Run on a board build with
# micropython-lib's python-stdlib/hmac and python-stdlib/bisect on the path. Per call:
# microseconds and heap bytes allocated (gc disabled while counting). Prints JSON.
import gc
import hashlib
import json
import time

import bisect
import hmac
from refund.mac import Mac
from refund.sched import Sched

_N = 20
KEY = bytes(range(32))
MSG = b"0200" + b"7" * 300  # about a refund request


def measure(fn, rounds=7):
    # The best of `rounds` rounds of _N calls: other work on the machine only adds time.
    fn()
    best = None
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        a = gc.mem_alloc()
        t = time.ticks_us()
        for _ in range(_N):
            fn()
        us = time.ticks_diff(time.ticks_us(), t)
        b = gc.mem_alloc() - a
        gc.enable()
        if best is None or us < best:
            best = us
    gc.collect()
    return {"us": round(best / _N, 2), "bytes": b // _N}


def loop_find(a, x, n):
    # The search the index, retry schedule and recent list each wrote by hand before.
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


m = Mac(KEY)
assert m.hmac(MSG) == hmac.new(KEY, MSG, hashlib.sha256).digest()
s = Sched(500)
for i in range(500):
    s.add(2 * i + 1)
assert all(loop_find(s.seq, x, s.n) == bisect.bisect_left(s.seq, x, 0, s.n) for x in (0, 1, 2, 499, 999, 1000))
out = {
    "hmac_ours": measure(lambda: m.hmac(MSG)),
    "hmac_mpl": measure(lambda: hmac.new(KEY, MSG, hashlib.sha256).digest()),
    "bisect_ours": measure(lambda: loop_find(s.seq, 777, s.n)),
    "bisect_mpl": measure(lambda: bisect.bisect_left(s.seq, 777, 0, s.n)),
}
print(json.dumps(out))
