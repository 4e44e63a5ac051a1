"""Service link log pull on the real terminal (issue 10's figures), shared by `make bench`
(host_tools/benchmarks.py, svc_section) and tests/test_service_pull.py.

    prefill(img, nbytes)          event log of ~nbytes of refund lifecycles on a flash image
    SvcShop(dir, baud=115200)     the Shop with every null-modem the bench creates throttled
    pull(client, since, ...)      `logs` requests from a cursor until next == head
    TapClient(port)               svclink.Client that counts wire bytes and every frame seen
    Ecr(port).refund(i)           one REFUND on the ECR, timed (s)
    measure(tmp) / lines(res)     the benchmark section
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from host_tools import evdecode, svclink, vboard
from host_tools.shop import Shop

LOGS_MAX = 32768  # the largest `logs` reply the board serves (what refundctl asks for)

_PREFILL = r"""
import board, json, time
from refund import evlog
board.mount_flash(lambda *a, **k: None)
clk = [%(wall0)d]
evlog.attach(board.FLASH + "/ev", lambda: clk[0], cap=%(cap)d, segments=%(segs)d)
target = %(target)d
up0 = %(up0)d
i = 0

def at(ms):
    # the simulated moment: wall clock and uptime `ms` after the terminal booted
    clk[0] = %(wall0)d + ms // 1000
    evlog._t0 = time.ticks_add(time.ticks_ms(), -ms)

while True:
    i += 1
    t = up0 + i * %(step_ms)d
    rid = "PREF-%%06d" %% i
    stan = "%%06d" %% i
    rrn = "%%012d" %% (400000000000 + i)
    auth = "A%%05d" %% (i %% 100000)
    at(t)
    evlog.event("captured", rid, op="01", amount=100 + i * 7 %% 50000, cur=156,
                orrn="ORIG%%08d" %% i, ecr=str(1000000 + i))
    at(t + 150)
    evlog.event("send", rid, mti="0200", stan=stan, attempt=1)
    if i %% 10 == 0:  # one in ten: a timeout, then a second attempt
        at(t + 30150)
        evlog.event("send_fail", rid, level="W", cause="timeout", attempt=1)
        t += 31000
        at(t)
        evlog.event("send", rid, mti="0200", stan=stan, attempt=2)
    at(t + 420)
    evlog.event("answer", rid, mti="0210", rc="00", rrn=rrn, auth=auth)
    evlog.event("approved", rid, rrn=rrn, auth=auth)
    at(t + 500)
    evlog.event("print_begun", rid, copy="original")
    at(t + 2900)
    evlog.event("printed", rid)
    if evlog.used() + evlog._n >= target:
        break
evlog.flush()
print("PREFILL " + json.dumps({"refunds": i, "head": evlog.head, "first": evlog.first(),
                              "bytes": evlog.used(), "segments": evlog.segments()}))
"""

# The simulated shop day: the terminal booted at 07:00 UTC on 2026-06-01, a refund every
# minute from 08:00 (a 256 KiB log is ~630 refunds: until ~18:30). Fixed, so the figure
# does not change with the day it is measured on (WALL and UP bytes that happen to be
# escaped: docs/benchmarks.md shows the split).
WALL0 = 1780297200  # 2026-06-01 07:00:00 UTC
UP0_MS = 3600 * 1000
STEP_MS = 60 * 1000


def prefill(img, nbytes, cap=262144, segments=8):
    """Write refund lifecycles (captured, send, [send_fail, send], answer, approved,
    print_begun, printed) with evlog.event() on the flash image until the log holds
    nbytes, at the simulated times of a shop day (WALL0, UP0_MS, STEP_MS); the terminal
    then boots on it. Returns {refunds, head, first, bytes, segments}."""
    env = dict(vboard.board_env(img), MICROPYPATH=vboard.mp_path(vboard.FIRMWARE))
    code = _PREFILL % {"cap": cap, "segs": segments, "target": nbytes, "wall0": WALL0, "up0": UP0_MS,
                       "step_ms": STEP_MS}
    r = subprocess.run([vboard.micropython(), "-X", "heapsize=256k", "-c", code],
                       env=env, capture_output=True, text=True, timeout=600)
    lines = [l for l in r.stdout.splitlines() if l.startswith("PREFILL ")]
    if r.returncode or not lines:
        raise RuntimeError("prefilling the event log failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    return json.loads(lines[-1][8:])


class SvcShop(Shop):
    """The Shop, but `refund-bench terminal --baud N`: the console and ECR null-modems the
    bench creates carry at most N/10 B/s (the printer's is the Shop's, 115200 already)."""

    def __init__(self, workdir, baud=115200, **kw):
        self.baud = baud
        super().__init__(workdir, **kw)

    def boot(self):
        from host_tools.vboard import Board

        args = ["--host", "127.0.0.1:%d" % self.sim.port, "--printer", self.nm.a]
        if self.baud:
            args += ["--baud", str(self.baud)]
        if self.config:
            args += ["--config", self.config]
        if self.heap:
            args += ["--heap", self.heap]
        self.board = Board(self.flash, args=args, cmd="terminal")
        self.status = _ready(self.board, 60)
        # One reader of the console: the service client opens it itself.
        self.board.out += self.board.console.read(1 << 20)
        self.board.console.close()
        return self.status


def _ready(board, timeout):
    """The READY line's status. (vboard.Board.ready() takes any earlier newline for the
    end of the READY line, so on a throttled console it may parse half a line.)"""
    board.read_until(b"READY ", timeout)
    end = time.time() + timeout
    while b"\n" not in board.out[board.out.rindex(b"READY "):]:
        if time.time() > end:
            raise AssertionError("READY line never ended:\n" + board.out.decode(errors="replace"))
        board.out += board.console.read(4096)
    tail = board.out[board.out.rindex(b"READY ") + 6:]
    return json.loads(tail.split(b"\n", 1)[0])


class _TapSerial:
    def __init__(self, ser, owner):
        self._s = ser
        self._o = owner

    def read(self, n=1):
        d = self._s.read(n)
        self._o.wire += len(d)
        return d

    def __getattr__(self, k):
        return getattr(self._s, k)


class _TapDecoder(svclink.Decoder):
    def __init__(self, owner, **kw):
        super().__init__(**kw)
        self._o = owner

    def push(self, b):
        p = super().push(b)
        if p is not None:
            head = p.partition(b"\n")[0]
            try:
                fid = json.loads(head).get("id")
            except ValueError:
                fid = None
            self._o.seen.append((fid, len(svclink.frame(p)), self._o.wire, time.monotonic()))
        return p


class TapClient(svclink.Client):
    """svclink.Client that counts the bytes it reads off the line (`wire`) and records
    every good frame it decodes as (id, wire length, wire count, time when it completed) in
    `seen`, including late frames of an abandoned request (which the Client ignores)."""

    def __init__(self, port, **kw):
        self.wire = 0
        self.seen = []
        self.sent = []  # (id, wire count, time) of every request sent
        super().__init__(port, **kw)

    def send(self, req):
        self.sent.append((req.get("id"), self.wire, time.monotonic()))
        return super().send(req)

    def _open(self):
        super()._open()
        self.ser = _TapSerial(self.ser, self)
        self.dec = _TapDecoder(self, frame_timeout=self.frame_timeout)


def pull(c, since=0, max_bytes=LOGS_MAX, cut_after=None, cut_extra=600, tries=5, stop=None):
    """`logs` requests from `since`, each from the `next` of the last frame, until
    next == head. cut_after=N: stop once N body bytes came, after reading cut_extra more
    raw bytes (so the cut falls inside the next frame) and close the client. stop():
    checked after every frame, True ends the pull there (stopped=True).
    Returns {body (records' bytes), sizes (body bytes per frame), frames, requests, next,
    head, first, seconds, wire (bytes read), retries, cut_wire (bytes read after the last
    whole frame)}."""
    cursor = since
    body = bytearray()
    sizes = []
    frames = requests = retries = 0
    head = first = None
    t0 = time.monotonic()
    wire0 = c.wire
    while True:
        requests += 1
        try:
            for hdr, b in c.stream({"cmd": "logs", "since": cursor, "max": max_bytes}, tries=1):
                if hdr.get("from") != max(cursor, hdr.get("first", cursor)):
                    raise AssertionError("frame from %s, asked %s" % (hdr.get("from"), cursor))
                body += b
                sizes.append(len(b))
                frames += 1
                cursor, head, first = hdr["next"], hdr["head"], hdr["first"]
                if stop is not None and stop():
                    res = _res(body, frames, requests, cursor, head, first, t0, c.wire - wire0, retries)
                    res.update(sizes=sizes, stopped=True)
                    return res
                if cut_after is not None and len(body) >= cut_after:
                    if hdr.get("end"):
                        # the reply ended here: ask for the next one, so the cut falls
                        # inside a frame as a pulled cable would
                        c.send({"id": c.new_id(), "cmd": "logs", "since": cursor, "max": max_bytes})
                    at = c.wire
                    end = time.monotonic() + 5
                    while c.wire - at < cut_extra and time.monotonic() < end:
                        c.ser.read(min(64, cut_extra - (c.wire - at)))
                    res = _res(body, frames, requests, cursor, head, first, t0, c.wire - wire0, retries)
                    res.update(sizes=sizes, cut_wire=c.wire - at)
                    c.close()
                    return res
        except svclink.LinkError:
            retries += 1
            if retries > tries:
                raise
            continue
        if head is not None and cursor >= head:
            res = _res(body, frames, requests, cursor, head, first, t0, c.wire - wire0, retries)
            res["sizes"] = sizes
            return res


def _res(body, frames, requests, cursor, head, first, t0, wire, retries):
    return {"body": bytes(body), "frames": frames, "requests": requests, "next": cursor, "head": head,
            "first": first, "seconds": time.monotonic() - t0, "wire": wire, "retries": retries}


def check_records(body):
    """Records' bytes -> (seqs, evdecode stats); raises if a CRC is bad or seqs are not
    contiguous and increasing."""
    st = evdecode.new_stats()
    recs = evdecode.decode(body, st)
    seqs = [r["seq"] for r in recs]
    if st["bad_crc"] or st["torn"] or st["skipped_bytes"]:
        raise AssertionError("damaged records in the pull: %r" % st)
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise AssertionError("seqs not contiguous")
    return seqs, st


_rseq = [int(time.time()) % 100000 * 1000]


class Ecr:
    """The cash register's side of the ECR link with refundctl's codec (frame, encode,
    Decoder, decode), reading whatever has arrived instead of waiting out pyserial's read
    timeout, so an acknowledgement is timed to the millisecond."""

    def __init__(self, port, baud=115200):
        import serial

        from host_tools import refundctl

        self.rc = refundctl
        self.ser = serial.serial_for_url(port, baudrate=baud, timeout=0.02)
        self.dec = refundctl.Decoder()

    def request(self, req, timeout=20.0):
        """Send req; (seconds until its reply was decoded, reply dict or None on timeout)."""
        seq = str(req["seq"])
        raw = self.rc.frame(self.rc.encode(req))
        t0 = time.monotonic()
        self.ser.write(raw)
        self.ser.flush()
        end = t0 + timeout
        while time.monotonic() < end:
            data = self.ser.read(max(1, self.ser.in_waiting))
            for p in self.dec.feed(data) if data else ():
                try:
                    rep = self.rc.decode(p)
                except ValueError:
                    continue
                if rep.get("seq") == seq:
                    return time.monotonic() - t0, rep
        return time.monotonic() - t0, None

    def refund(self, i, tag="LAT"):
        _rseq[0] += 1
        return self.request({"cmd": "REFUND", "seq": _rseq[0], "amount": 500 + i,
                             "orrn": "%s%09d" % (tag, _rseq[0] % 10 ** 9), "op": "01", "pin": "1234"})

    def close(self):
        self.ser.close()


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def mpremote_copy(board, names, dest, one_call=False):
    """Copy :/flash/ev/<name> for each name into dest with mpremote on the console
    (closes the bench's console handle first). Returns (seconds, bytes, invocations)."""
    os.makedirs(dest, exist_ok=True)
    t0 = time.monotonic()
    calls = []
    if one_call:
        calls.append(["fs", "cp"] + [":/flash/ev/%s" % n for n in names] + [dest + "/"])
    else:
        calls += [["fs", "cp", ":/flash/ev/%s" % n, dest + "/"] for n in names]
    for args in calls:
        r = board.mpremote(*args, timeout=600)
        if r.returncode:
            raise RuntimeError("mpremote %s: %s%s" % (args, r.stdout[-1000:], r.stderr[-1000:]))
    dt = time.monotonic() - t0
    n = sum(os.path.getsize(os.path.join(dest, x)) for x in names)
    return dt, n, len(calls)


ESCAPED = svclink.ESCAPED
_FIELDS = (("magic+len", 0, 2), ("seq", 2, 6), ("wall", 6, 10), ("up", 10, 14), ("level", 14, 15))


def breakdown(body, frames_wire, nframes):
    """Where the wire bytes of a pull go: escapes per record field, frame headers."""
    esc = {k: 0 for k, _, _ in _FIELDS}
    esc["text"] = esc["crc"] = 0
    i = n = 0
    while i < len(body):
        ln = body[i + 1]
        rec = body[i:i + ln + 6]
        for k, a, b in _FIELDS:
            esc[k] += sum(1 for x in rec[a:b] if x in ESCAPED)
        esc["text"] += sum(1 for x in rec[15:ln + 2] if x in ESCAPED)
        esc["crc"] += sum(1 for x in rec[ln + 2:] if x in ESCAPED)
        n += 1
        i += ln + 6
    total_esc = sum(esc.values())
    return {"records": n, "record_bytes": len(body) / max(n, 1), "escapes": total_esc,
            "escapes_per_record": {k: v / max(n, 1) for k, v in esc.items()},
            "header_bytes": frames_wire - len(body) - total_esc, "frames": nframes}


def _own(c, since_sent=0):
    ids = {x[0] for x in c.sent[since_sent:]}
    return [x for x in c.seen if x[0] in ids]


def _diag(shop, c=None):
    """What is known about a board that stopped answering (for the exception)."""
    rc = shop.board.proc.poll()
    out = "board %s" % ("running" if rc is None else "exited with %s" % rc)
    if rc is not None:
        try:
            out += "; stderr: " + shop.board.proc.stderr.read()[-1500:].decode(errors="replace")
        except Exception:
            pass
    if c is not None:
        out += "; console text: " + bytes(c.dec.text)[-1500:].decode(errors="replace")
    return out


def _segment_names(board):
    r = board.mpremote("fs", "ls", ":/flash/ev", timeout=120)
    if r.returncode:
        raise RuntimeError("mpremote fs ls: %s%s" % (r.stdout, r.stderr))
    return [l.split()[-1] for l in r.stdout.splitlines()
            if l.split() and len(l.split()[-1]) == 8 and l.split()[-1].isdigit()]


def raw_line(baud=115200, n=131072):
    """Bytes per second a plain byte stream gets through `refund-bench nullmodem --baud`
    in this run: the emulated line's own capacity (its pacing loop is a process sharing the
    CPU with everything else, like the bridge `refund-bench terminal` forks)."""
    import serial

    exe = os.path.join(os.path.dirname(sys.executable), "refund-bench")
    p = subprocess.Popen([exe, "nullmodem", "--baud", str(baud)], stdout=subprocess.PIPE)
    try:
        ends = json.loads(p.stdout.readline())
        a = serial.serial_for_url(ends["a"], timeout=0.05)
        b = serial.serial_for_url(ends["b"], timeout=0.05)
        th = threading.Thread(target=lambda: (a.write(b"x" * n), a.flush()), daemon=True)
        th.start()
        got, first, skip = 0, None, 0
        end = time.monotonic() + 4 * n * 10.0 / baud
        while got < n and time.monotonic() < end:
            d = b.read(max(1, b.in_waiting))
            if d and first is None:
                first, skip = time.monotonic(), len(d)  # time from the first chunk on
            got += len(d)
        th.join(5)
        rate = (got - skip) / (time.monotonic() - first)
        a.close()
        b.close()
        return rate
    finally:
        p.kill()
        p.wait(5)


def measure(tmp, baud=115200, log_bytes=262144, refunds=20, pulls=2, interval=3.0, log=None):
    """Issue 10's figures on the terminal with its console (and ECR) null-modem at baud.
    Board A (prefilled log): `pulls` full pulls, a cut + resumed pull, then mpremote fs cp
    of the segments pulled (stops the app). Board B (a copy of the same prefilled image):
    ECR refund acknowledgement latency without and during a full log pull."""
    log = log or (lambda *a: None)
    line = baud / 10.0 if baud else float("inf")  # unthrottled (tests): no line figure
    res = {"baud": baud, "line": line, "load": [os.getloadavg()[0]]}
    if baud:
        res["raw_line"] = raw_line(baud)
    da = os.path.join(tmp, "svc-a")
    os.makedirs(da)
    img = os.path.join(da, "terminal.img")
    res["prefill"] = prefill(img, log_bytes)
    db = os.path.join(tmp, "svc-b")
    os.makedirs(db)
    shutil.copy(img, os.path.join(db, "terminal.img"))
    s = SvcShop(da, baud=baud)
    try:
        con = s.board.ends["console"]
        c = TapClient(con, timeout=5)
        res["log"] = c.call("info")["log"]
        res["pulls"] = []
        for k in range(pulls):
            k0, n0 = len(c.sent), len(c.seen)
            try:
                r = pull(c, 0)
            except svclink.LinkError as e:
                raise RuntimeError("full pull %d failed: %s (%s)" % (k + 1, e, _diag(s, c))) from None
            seqs, _st = check_records(r["body"])
            own = [x for x in _own(c, k0) if x in c.seen[n0:]]
            fw = sum(x[1] for x in own)
            p = {"payload": len(r["body"]), "seconds": r["seconds"], "wire": r["wire"], "frames": r["frames"],
                 "requests": r["requests"], "retries": r["retries"], "records": len(seqs), "first": seqs[0],
                 "last": seqs[-1], "head": r["head"], "frames_wire": fw,
                 "breakdown": breakdown(r["body"], fw, len(own))}
            res["pulls"].append(p)
            log("pull %d: %d B in %.2f s = %.1f%% of the line" % (k, p["payload"], p["seconds"],
                                                                   100 * p["payload"] / p["seconds"] / line))
        c.close()
        # A pull cut in the middle (inside a frame), resumed by a new client from `next`.
        half = res["pulls"][0]["payload"] // 2
        c1 = TapClient(con, timeout=5)
        r1 = pull(c1, 0, cut_after=half)
        c2 = TapClient(con, timeout=5)
        r2 = pull(c2, r1["next"])
        s1, _ = check_records(r1["body"])
        s2, _ = check_records(r2["body"])
        own2 = _own(c2)
        first_own = own2[0]
        stale = [x for x in c2.seen if x[3] < first_own[3] and x not in own2]
        res["resume"] = {"cut_at": len(r1["body"]), "next": r1["next"], "cut_wire": r1["cut_wire"],
                         "dup_records": len(set(s1) & set(s2)), "contiguous": s2[0] == s1[-1] + 1,
                         "last": s2[-1], "head": r2["head"], "resent_payload": r2["sizes"][0],
                         "stale_frames": len(stale), "stale_wire": first_own[2] - first_own[1],
                         "first_frame_s": first_own[3] - c2.sent[0][2]}
        c2.close()
        log("resume: %r" % res["resume"])
        # mpremote fs cp of the same segments, same board, same link (stops the app).
        names = _segment_names(s.board)
        dest = os.path.join(tmp, "svc-mpremote")
        dt, n, calls = mpremote_copy(s.board, names, dest)
        st = evdecode.new_stats()
        recs = evdecode.decode_dir(dest, st)
        res["mpremote"] = {"seconds": dt, "bytes": n, "calls": calls, "segments": len(names),
                           "records": len(recs), "bad": st["bad_crc"] + st["torn"],
                           "wire_est": _repr_wire(dest, names)}
        log("mpremote: %d B in %.2f s = %.1f%%" % (n, dt, 100 * n / dt / line))
    finally:
        s.close()
    res["load"].append(os.getloadavg()[0])
    res["latency"] = _latency(db, baud, refunds, interval, log)
    res["load"].append(os.getloadavg()[0])
    return res


def _repr_wire(dest, names, chunk=256):
    """Bytes mpremote's fs cp moves board->host for these files: repr() of each 256-byte
    read over the raw REPL (plus ~5 B of REPL framing per read)."""
    n = 0
    for name in names:
        with open(os.path.join(dest, name), "rb") as f:
            data = f.read()
        for i in range(0, len(data), chunk):
            n += len(repr(data[i:i + chunk])) + 5
    return n


def _latency(d, baud, refunds, interval, log):
    s = SvcShop(d, baud=baud)
    out = {}
    try:
        ecr = Ecr(s.board.ends["ecr"], baud or 115200)
        for i in range(2):  # warm up: host connection, printer state
            ecr.refund(i, "WRM")
            time.sleep(interval)

        def series(tag, n):
            xs = []
            for i in range(n):
                t = time.monotonic()
                dt, rep = ecr.refund(i, tag)
                if rep is None or rep.get("state") != "queued":
                    raise RuntimeError("refund %d (%s) not queued: %r" % (i, tag, rep))
                xs.append(dt)
                time.sleep(max(0.0, interval - (time.monotonic() - t)))
            return xs

        stop = threading.Event()
        pulled = {"payload": 0, "seconds": 0.0, "pulls": 0, "complete": 0, "errors": 0}

        def puller():
            c = TapClient(s.board.ends["console"], timeout=5)
            try:
                while not stop.is_set():
                    r = pull(c, 0, stop=stop.is_set)
                    check_records(r["body"])
                    pulled["payload"] += len(r["body"])
                    pulled["seconds"] += r["seconds"]
                    pulled["pulls"] += 1
                    pulled["complete"] += not r.get("stopped")
            except Exception as e:  # reported, not hidden: the figure then says so
                pulled["errors"] += 1
                pulled["error"] = str(e)
            finally:
                c.close()

        # Alternating blocks (idle, pull, idle, pull) so a drift in the machine's load
        # weighs on both alike.
        out["idle"], out["pull"] = [], []
        half = refunds // 2
        for blk, n in enumerate((half, refunds - half)):
            out["idle"] += series("I%dL" % blk, n)
            stop.clear()
            th = threading.Thread(target=puller, daemon=True)
            th.start()
            time.sleep(1.0)
            out["pull"] += series("P%dL" % blk, n)
            stop.set()
            th.join(60)
            time.sleep(4.0)  # the rest of the stopped reply crosses the line first
        out["pulled"] = pulled
        end = time.time() + 60
        want = 2 + 2 * refunds
        while time.time() < end:
            ok = sum(1 for r in s.sim.ledger if r.get("type") == "refund")
            if ok >= want:
                break
            time.sleep(0.5)
        out["approved"] = sum(1 for r in s.sim.ledger if r.get("type") == "refund")
        out["taken"] = want
        out["interval"] = interval
        out["printed"] = len(s.printer.receipts)
        log("latency: idle p50 %.1f ms, pull p50 %.1f ms" % (pct(out["idle"], 50) * 1e3, pct(out["pull"], 50) * 1e3))
        ecr.close()
    finally:
        s.close()
    return out


def lines(res):
    """res (from measure) -> the markdown section."""
    line = res["line"]
    L = ["## Service link: log pull (issue 10)", ""]
    pf = res["prefill"]
    L.append("The terminal application (`refund-bench terminal --baud %d`: console and ECR "
             "null-modems carry at most %d B/s each way) on a flash image whose event log was "
             "filled first with `refund.evlog.event()` (%d refund lifecycles of a simulated shop "
             "day: captured, send, answer, approved, print_begun, printed; one in ten with a "
             "timeout and a second send): %d records, %d B in %d segments (`evlog_cap` %d). "
             "Pull: `svclink.Client` `logs` requests (`max` %d) from cursor 0, each from the "
             "last frame's `next`, until `next == head`; payload = the records' bytes. Load "
             "average during the section: %s (2 CPUs)."
             % (res["baud"], line, pf["refunds"], res["log"]["head"] - res["log"]["first"],
                res["log"]["bytes"], res["log"]["segments"], res["log"]["cap"], LOGS_MAX,
                " / ".join("%.2f" % x for x in res["load"])))
    L += ["", "| pull | payload B | s | payload B/s | % of the line (goal >= 85) | wire B / payload B "
              "| frames | requests | retries |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, p in enumerate(res["pulls"]):
        L.append("| service `logs` #%d | %d | %.2f | %.0f | %.1f%% | %.3f | %d | %d | %d |" % (
            k + 1, p["payload"], p["seconds"], p["payload"] / p["seconds"],
            100 * p["payload"] / p["seconds"] / line, p["wire"] / p["payload"], p["frames"],
            p["requests"], p["retries"]))
    m = res["mpremote"]
    mrate = m["bytes"] / m["seconds"]
    L.append("| `mpremote connect CONSOLE resume fs cp :/flash/ev/SEG DIR/`, %d segments, one call each "
             "| %d | %.2f | %.0f | %.1f%% | %.3f (est.) | - | %d calls | - |" % (
                 m["segments"], m["bytes"], m["seconds"], mrate, 100 * mrate / line,
                 m["wire_est"] / m["bytes"], m["calls"]))
    best = min(p["payload"] / p["seconds"] for p in res["pulls"])
    L += ["", "Service pull / mpremote: **%.2fx** (slower service run; goal >= 2.7x). Both copies "
              "decode with `evdecode` without a bad CRC (mpremote: %d records, %d damaged)."
          % (best / mrate, m["records"], m["bad"])]
    b = res["pulls"][0]["breakdown"]
    e = b["escapes_per_record"]
    p0 = res["pulls"][0]
    L += ["", "Where the line goes (pull #1): line use %.1f%% (wire bytes / line capacity over the "
              "pull); per record (%.1f B on average) %.2f escaped bytes (%.1f%% of the payload: %s); "
              "frame headers and framing %.0f B per frame (%.1f%% of the payload, %.0f body B per "
              "frame on average)."
          % (100 * p0["wire"] / p0["seconds"] / line, b["record_bytes"],
             b["escapes"] / b["records"], 100.0 * b["escapes"] / p0["payload"],
             ", ".join("%s %.2f" % (k, v) for k, v in e.items() if v >= 0.005),
             b["header_bytes"] / b["frames"], 100.0 * b["header_bytes"] / p0["payload"],
             p0["payload"] / p0["frames"])]
    if res.get("raw_line"):
        L += ["", "The emulated line itself, measured in the same run (a plain byte stream through a "
                  "`NullModem(baud=%d)`): %.0f B/s = %.1f%% of %d B/s. Against that capacity the "
                  "service pull's payload is %.1f%% (the protocol's ceiling on this log, a saturated "
                  "line: 1 / %.3f = %.1f%%)."
              % (res["baud"], res["raw_line"], 100 * res["raw_line"] / line, line,
                 100 * p0["payload"] / p0["seconds"] / res["raw_line"], p0["wire"] / p0["payload"],
                 100 * p0["payload"] / p0["wire"])]
    r = res["resume"]
    L += ["", "### A pull cut in the middle", "",
          "The first client is closed inside a frame after %d B (cursor %d; %d B of the cut frame "
          "had arrived); a new client asks `since = next` of the last whole frame and pulls to "
          "the head (%d)." % (r["cut_at"], r["next"], r["cut_wire"], r["head"]), "",
          "| records delivered twice | records re-sent (the cut frame's, B) (goal <= one frame, 2048) "
          "| gap in seqs | frames of the abandoned reply still arriving | their wire B | first frame of the resumed pull after |",
          "|---:|---:|---|---:|---:|---:|",
          "| %d | %d | %s | %d | %d | %.2f s |" % (r["dup_records"], r["resent_payload"],
                                                 "none" if r["contiguous"] else "YES", r["stale_frames"],
                                                 r["stale_wire"], r["first_frame_s"]), "",
          "What the board sends again for the resumed request is the cut frame's records (at most "
          "one frame). The frames of the abandoned reply that were already queued in the console "
          "tty when the client went away (the virtual board's pty holds ~17 KB, 1.5 s of this "
          "line; a board's USB CDC or UART TX buffer holds far less) still cross the line and are "
          "ignored by id: that line time is lost before the resumed reply starts."]
    lat = res["latency"]
    i50, i95 = pct(lat["idle"], 50) * 1e3, pct(lat["idle"], 95) * 1e3
    p50, p95 = pct(lat["pull"], 50) * 1e3, pct(lat["pull"], 95) * 1e3
    pu = lat["pulled"]
    L += ["", "### Refunds during a full log pull", "",
          "Same image on a second boot. %d REFUNDs on the ECR (refundctl's codec, 115200-baud "
          "null-modem), one every %.1f s, timed from the request's first byte to its decoded "
          "acknowledgement; in alternating blocks of %d: without a pull, then while a thread pulls "
          "the whole log from cursor 0 (%d pulls, %d complete, %.1f%% of the line meanwhile%s); "
          "twice. %d of %d refunds (with 2 warm-up ones) "
          "approved by the host afterwards, %d receipt documents printed."
          % (len(lat["idle"]) + len(lat["pull"]), lat["interval"], len(lat["idle"]) // 2, pu["pulls"], pu["complete"],
             100 * pu["payload"] / max(pu["seconds"], 1e-9) / line,
             (", errors: %s" % pu.get("error")) if pu["errors"] else "",
             lat["approved"], lat["taken"], lat["printed"]), "",
          "| ECR acknowledgement | median ms | p95 ms | max ms |", "|---|---:|---:|---:|",
          "| no pull | %.1f | %.1f | %.1f |" % (i50, i95, max(lat["idle"]) * 1e3),
          "| during a full log pull | %.1f | %.1f | %.1f |" % (p50, p95, max(lat["pull"]) * 1e3),
          "", "Ratio during / without: median **%.2fx**, p95 **%.2fx** (goal <= 1.5x)." % (p50 / i50, p95 / i95), ""]
    return L
