# Service link: the technician's commands on the USB console while the app runs
# (docs/service-link.md). Requests are stateless JSON, answered in frames
# (refund.svcframe) written by this task alone through the non-blocking console
# (refund.conout); it yields after every frame, so a log pull never stalls refunds.
# Read-only commands expose no secret; privileged ones need HMAC challenge-response.
import asyncio
import gc
import json
import os
import time
from binascii import hexlify
from micropython import const
from refund import VERSION, evlog, svcframe
from refund import record as R
from refund import log as _log
from refund.mac import Mac, equal

_BODY = const(1024)  # event bytes per reply frame. 2048 took a pull to 88 % of the line, 1024
# to 83 % (goal 85 %, docs/benchmarks.md): the 96 KiB board needs the RAM. Made for each
# logs / explain request and dropped after it: nobody pulls logs most of the day.
_LOGS_MAX = const(32768)
_LOGS_DEFAULT = const(16384)
_OUTBOX_MAX = const(40)
_WRITE_MS = const(5000)  # a reply nobody reads for this long is abandoned
_NONCE_MS = const(60000)
_LOCK_AFTER = const(5)
_LOCK_MS = const(60000)
_PRIV = ("retry", "reprint", "report", "clock", "settle")


class Err(Exception):
    def __init__(self, code, text):
        super().__init__(code)
        self.code = code
        self.text = text


class Service:
    def __init__(self, board, out, reset_reason):
        """board: the HAL; out: the ConOut; term: set later (None: not provisioned)."""
        self.board = board
        self.out = out
        self.reset = reset_reason
        self.term = None
        self.tech = None  # Mac of the technician key, or None: privileged commands refused
        self._body = None  # bytearray(_BODY) while a logs / explain request is served
        self._scratch = None  # bytearray(512) while a request is answered
        self._req = None
        self._new = asyncio.Event()
        self._nonce = None
        self._nonce_t = 0
        self._fails = 0
        self._locked_t = None
        self.stats = {"requests": 0, "bad": 0, "abandoned": 0, "auth_fail": 0}

    def attach(self, term, tech_key_hex):
        self.term = term
        self.tech = Mac.from_hex(tech_key_hex) if tech_key_hex else None

    def submit(self, payload):
        """The console reader got a good frame: it replaces any request being served."""
        self._req = bytes(payload)
        self._new.set()

    async def run(self):
        while True:
            await self._new.wait()
            self._new.clear()
            raw, self._req = self._req, None
            if raw is None:
                continue
            self.stats["requests"] += 1
            try:
                self._scratch = bytearray(512)
            except MemoryError:
                gc.collect()
                self.stats["abandoned"] += 1  # not even an error frame fits: the client asks again
                continue
            try:
                await self._serve(raw)
            finally:
                self._scratch = None

    async def _serve(self, raw):
        rid = 0
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError
            rid = req.get("id", 0)
            if not isinstance(rid, int):
                rid = 0
                raise ValueError
            await self._dispatch(rid, req)
        except Err as e:
            self.stats["bad"] += 1
            await self._safe_err(rid, e.code, e.text)
        except (ValueError, TypeError, KeyError):
            self.stats["bad"] += 1
            await self._safe_err(rid, "bad_request", "request is not a JSON object with id and cmd")
        except MemoryError:
            gc.collect()
            await self._safe_err(rid, "memory", "no RAM for this reply now: ask again")
        except OSError:
            self.stats["abandoned"] += 1  # the technician stopped reading
        except _Abandon:
            self.stats["abandoned"] += 1

    async def _safe_err(self, rid, code, text):
        try:
            await self._send({"id": rid, "ok": False, "err": code, "text": text})
        except (OSError, _Abandon):
            self.stats["abandoned"] += 1

    async def _send(self, hdr, body=None):
        if self._new.is_set():
            raise _Abandon()  # a newer request came: this reply is no longer wanted
        h = json.dumps(hdr, separators=(",", ":")).encode()  # 13% smaller headers
        parts = (h,) if body is None else (h, b"\n", body)
        out = self.out
        await out.begin(_WRITE_MS)
        try:
            for chunk in svcframe.chunks(parts, self._scratch):
                await out.write_all(chunk, _WRITE_MS)
        finally:
            out.end()
        await asyncio.sleep_ms(0)  # one frame at a time: the other tasks run in between

    async def _dispatch(self, rid, req):
        cmd = req.get("cmd")
        if cmd in _PRIV:
            self._authorise(req, cmd)
        fn = getattr(self, "c_" + cmd, None) if isinstance(cmd, str) and cmd.isalpha() else None
        if fn is None:
            raise Err("unknown_cmd", "unknown command %r" % (str(cmd)[:16],))
        if cmd in _PRIV:
            evlog.event("svc_cmd", req.get("rid", ""), cmd=cmd, arg=req.get("t"))
        if cmd == "logs" or cmd == "explain":
            self._body = _buffer()  # MemoryError: answered "memory", ask again
            try:
                return await self._reply(rid, req, fn)
            finally:
                self._body = None
        await self._reply(rid, req, fn)

    async def _reply(self, rid, req, fn):
        rep = await fn(rid, req)
        if rep is not None:
            rep["id"] = rid
            rep["ok"] = True
            await self._send(rep)

    # ---- authentication ---------------------------------------------------------

    def _authorise(self, req, cmd):
        now = time.ticks_ms()
        if self._locked_t is not None:
            if time.ticks_diff(now, self._locked_t) < _LOCK_MS:
                raise Err("auth_locked", "too many refused attempts: wait 60 s")
            self._locked_t, self._fails = None, 0
        nonce, self._nonce = self._nonce, None  # single use, right or wrong
        ok = False
        if self.tech is not None and nonce is not None and time.ticks_diff(now, self._nonce_t) < _NONCE_MS:
            arg = req.get("rid", "") if cmd == "reprint" else (str(req.get("t", "")) if cmd == "clock" else "")
            want = hexlify(self.tech.hmac(("%s|%s|%s" % (nonce, cmd, arg)).encode()))
            mac = req.get("mac")
            ok = isinstance(mac, str) and equal(want, mac.encode())
        evlog.event("svc_auth", level="I" if ok else "W", cmd=cmd, ok=int(ok))
        if not ok:
            self.stats["auth_fail"] += 1
            self._fails += 1
            if self._fails >= _LOCK_AFTER:
                self._locked_t = now
            raise Err("auth", "technician authentication refused" if self.tech is not None
                      else "no technician key is configured on this terminal")
        self._fails = 0

    async def c_challenge(self, rid, req):
        self._nonce = hexlify(os.urandom(16)).decode()
        self._nonce_t = time.ticks_ms()
        return {"nonce": self._nonce, "ttl_s": _NONCE_MS // 1000}

    # ---- read-only --------------------------------------------------------------

    async def c_info(self, rid, req):
        b = self.board
        gc.collect()
        try:
            st = os.statvfs(b.FLASH)
            ffree, ftotal = st[0] * st[3], st[0] * st[2]
        except OSError:
            ffree = ftotal = 0
        t = b.now()
        return {"fw": VERSION, "board": b.NAME, "uid": hexlify(b.unique_id()).decode(),
                "uptime_ms": time.ticks_diff(time.ticks_ms(), _log._t0), "reset": self.reset,
                "time": t if t >= 1600000000 else 0, "time_known": t >= 1600000000,
                "flash_free": ffree, "flash_total": ftotal, "heap_free": gc.mem_free(),
                "heap_alloc": gc.mem_alloc(), "terminal": self.term is not None,
                "log": {"first": evlog.first(), "head": evlog.head, "bytes": evlog.used(),
                        "cap": evlog._cap, "segments": len(evlog.segments())}}

    def _term(self):
        if self.term is None:
            raise Err("not_provisioned", "the terminal application is not running (config)")
        return self.term

    async def c_status(self, rid, req):
        t = self._term()
        s = t.intake.summary()
        states = {}
        ix = t.ob.ix
        for i in range(ix.n):
            if ix.state[i]:
                n = R.NAMES[ix.state[i]]
                states[n] = states.get(n, 0) + 1
        p = t.printer.status() if t.printer is not None else None
        return {"states": states, "live": s["live"], "pending_total": s["pending"],
                "oldest_s": s.get("oldest", 0), "stale": s["stale"],
                "host": {"up": t.sender.host_up, "connected": t.link.up()},
                "printer": None if p is None else {"state": p["state"], "detail": p["detail"],
                                                   "rid": p["rid"]},
                "batch": _batch(t.ob.batch_info()), "settle": t.settle.status()}

    async def c_outbox(self, rid, req):
        t = self._term()
        after = _int(req, "from", 0)
        n = min(max(_int(req, "max", 20), 1), _OUTBOX_MAX)
        part, batch, nxt = 0, [], None
        for seq in t.ob.seqs(None, after):
            if len(batch) >= n:
                nxt = seq - 1
                break
            e = t.ob.get(t.ob.rid(seq))
            if e is not None:
                batch.append(_entry(e))
            if len(batch) == 8:  # one frame stays well under 2 KiB
                await self._send({"id": rid, "ok": True, "part": part, "entries": batch})
                part, batch = part + 1, []
                n -= 8
        await self._send({"id": rid, "ok": True, "part": part, "entries": batch, "next": nxt,
                          "end": True})

    async def c_logs(self, rid, req):
        since = _int(req, "since", 0)
        budget = min(max(_int(req, "max", _LOGS_DEFAULT), _BODY), _LOGS_MAX)
        evlog.flush()
        head, first = evlog.head, evlog.first()
        if since > head:
            raise Err("cursor", "cursor %d is beyond the log head %d" % (since, head))
        lost = 0
        if since < first:
            lost, since = first - since if since else 0, first
        part = 0
        mv = memoryview(self._body)
        while True:
            n, nxt = _evread().fill(since, self._body)
            budget -= n
            end = nxt >= evlog.head or n == 0 or budget < _BODY
            hdr = {"id": rid, "ok": True, "part": part, "from": since, "next": nxt, "head": evlog.head,
                   "first": first}
            if lost:
                hdr["lost"] = lost
                lost = 0
            if end:
                hdr["end"] = True
            await self._send(hdr, mv[:n])
            if end:
                return
            since, part = nxt, part + 1

    async def c_explain(self, rid, req):
        r = req.get("rid")
        if not isinstance(r, str) or not 6 <= len(r) <= 16:
            raise Err("bad_request", "rid is required")
        e = None
        if self.term is not None:
            e = self.term.ob.get(r)
        evlog.flush()
        state = [0, 0]
        n, done = _evread().scan_rid(r, self._body, state)
        if e is None and n == 0 and done:
            raise Err("unknown_rid", "no such refund on this terminal")
        mv = memoryview(self._body)
        await self._send({"id": rid, "ok": True, "part": 0, "found": e is not None,
                          "entry": None if e is None else _entry(e)})
        part = 1
        while True:
            hdr = {"id": rid, "ok": True, "part": part}
            if done:
                hdr["end"] = True
            await self._send(hdr, mv[:n])
            if done:
                return
            n, done = _evread().scan_rid(r, self._body, state)
            part += 1

    async def c_metrics(self, rid, req):
        c = {"events": evlog.stats["events"], "events_repeated": evlog.stats["repeated"],
             "log_lost": evlog.stats["lost"], "log_bytes": evlog.stats["bytes"],
             "console_dropped": self.out.dropped, "console_cut": self.out.cut,
             "svc_requests": self.stats["requests"], "svc_bad": self.stats["bad"],
             "svc_abandoned": self.stats["abandoned"], "svc_auth_fail": self.stats["auth_fail"],
             "log_warn": _log.counts["WARN"], "log_error": _log.counts["ERROR"]}
        fs = self.board.flash_stats() or {}
        for k, name in (("bytes_programmed", "flash_bytes_written"), ("erases", "flash_erases"),
                        ("programs", "flash_programs")):
            if k in fs:
                c[name] = fs[k]
        t = self.term
        if t is not None:
            s, ls = t.sender.stats, t.link.stats
            c.update({"sends": s["sends"], "retries": s["retries"], "timeouts": s["timeouts"],
                      "unknown": s["unknown"], "approved": s["approved"], "declined": s["declined"],
                      "reversals": s["reversed"], "echo": s["echo"], "mismatch": s["mismatch"],
                      "host_connects": ls.get("connects", 0), "host_bad_mac": ls.get("bad_mac", 0)})
            if t.printer is not None:
                p = t.printer.counts
                c.update({"prints": p["printed"], "reprints": p["reprints"], "slips": p["slips"],
                          "notices": p["notices"], "print_faults": p["failed"] + p["aborted"]})
            c.update(t.intake.stats)
        return {"counters": c}

    async def c_config(self, rid, req):
        from refund import config

        t = self._term()
        return {"config": config.redacted(t.cfg)}

    # ---- privileged -------------------------------------------------------------

    async def c_retry(self, rid, req):
        t = self._term()
        return {"due": t.sender.retry_now()}

    async def c_reprint(self, rid, req):
        t = self._term()
        r = req.get("rid")
        if t.printer is None:
            raise Err("no_printer", "no printer is wired to this terminal")
        e = t.ob.get(r) if isinstance(r, str) else None
        if e is None:
            raise Err("unknown_rid", "no such refund on this terminal")
        if e["state"] != R.PRINTED:
            raise Err("no_receipt", "refund %s is %s: no receipt to reprint" % (r, R.NAMES[e["state"]]))
        asyncio.create_task(t.intake.print_job(lambda: t.printer.reprint(r), "reprint " + r, "tech"))
        return {"print": "started", "rid": r}

    async def c_report(self, rid, req):
        t = self._term()
        if t.printer is None:
            raise Err("no_printer", "no printer is wired to this terminal")
        asyncio.create_task(t.intake.print_job(t.printer.queue_report, "queue report", "tech"))
        return {"print": "started", "total": t.ob.live}

    async def c_settle(self, rid, req):
        t = self._term()
        try:
            started, b = t.settle.start("technician")
        except OSError as e:
            raise Err("flash_error", "could not record the settlement start (%s)" % e)
        return {"settle": "started" if started else "running", "batch": b}

    async def c_clock(self, rid, req):
        v = req.get("t")
        if not isinstance(v, int) or not 1600000000 <= v < 4000000000:
            raise Err("bad_request", "t must be UTC seconds (2020..2096)")
        old = self.board.now()
        self.board.set_time(v)
        evlog.event("clock", old=old, new=v)
        return {"old": old, "new": self.board.now()}


def _buffer():
    # A heap split by a day's work may lack 1 KB in one piece: half of it only halves
    # the bytes per frame (a record is at most 261 B).
    try:
        return bytearray(_BODY)
    except MemoryError:
        gc.collect()
        return bytearray(_BODY // 2)


def _evread():
    # Imported by the two commands that read the log, not at boot (RAM on a 96 KiB board).
    from refund import evread

    return evread


class _Abandon(Exception):
    pass


def _int(req, k, default):
    v = req.get(k, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise Err("bad_request", "%s must be a non-negative integer" % k)
    return v


def _entry(e):
    return {"rid": e["rid"], "state": R.NAMES[e["state"]], "amount": e["amount"],
            "currency": e["currency"], "created": e["created"], "sent": e.get("sent", 0),
            "orrn": e["orrn"], "op": e["op"], "sup": e["sup"], "stan": e["stan"],
            "rrn": e["rrn"], "auth": e["auth"], "code": e["code"], "flags": e["flags"],
            "stale": e.get("stale", False), "batch": e.get("batch", 0)}


def _batch(bi):
    """The open (and cut) batch for `status`: number, per currency count and total."""
    def tot(b):
        t = bi["totals"].get(b) or {}
        return {"%03d" % c: {"count": t[c][0], "total": t[c][1]} for c in t}

    r = {"open": bi["open"], "totals": tot(bi["open"])}
    if bi["cut"]:
        r["cut"] = bi["cut"]
        r["cut_totals"] = tot(bi["cut"])
    return r
