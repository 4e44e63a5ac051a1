"""refund-hostsim: a conforming payment host for the bench (docs/host-link.md).

  refund-hostsim --listen HOST:PORT --mac-key HEX [--sales FILE] [--ledger FILE]
                 [--seed N] [fault options]

Host duties (docs/host-link.md, "Host duties"):
- 0200/0201 -> 0210. The first answer for each (terminal id, rid) is kept; a later
  0200/0201 with the same rid and the same amount, currency and orrn gets the same
  fields 37, 38, 39 again and moves no money; with a different amount, currency or orrn
  it gets `94` (the kept answer is not touched).
- 0420/0421 -> 0430 `00`. The refund named by `rid` (field 62), or else by the original
  STAN in field 90, is reversed if it was approved and not reversed yet.
- 0800 (70 = 301) -> 0810 `00` with a field 128 MAC.
- --sales FILE (JSON object: orrn -> amount in minor units, or -> {"amount": N}):
  unknown orrn -> `25`; refunds above the sale's amount (approved, not reversed
  refunds counted) -> `13`. Without it every refund is approved.
- Messages with a bad MAC, that do not decode or break the spec's field rules are
  logged and dropped. A frame length of 0 or above 4096 closes the connection.
- Several requests may be outstanding on a connection; each answer is sent when it is
  ready (latency), so answers are matched by STAN, not by order.

Ledger (--ledger FILE): JSON Lines, one line per money movement:
  {"time": "2026-11-05T10:00:00.123Z", "type": "refund" | "reversal", "tid": ...,
   "rid": ..., "amount": 1234 (minor units, positive), "delta": +1234 | -1234,
   "currency": "156", "rrn": ..., "auth": ..., "orrn": ..., "stan": ...}
An existing ledger is read back at start, so approvals and reversals (not declines)
survive a restart of the simulator.

Fault options. Every random decision is a hash of (--seed, fault, message identity),
where the identity of a request is (terminal id, STAN, MTI, how many times that triple
arrived before): the same seed gives the same faults for the same traffic, whatever the
timing or interleaving of connections.
  --latency-ms MEAN[,JITTER]  answer delay, uniform in [MEAN-JITTER, MEAN+JITTER] ms
  --drop-request P            ignore the request (nothing processed, no answer)
  --drop-answer P             process the request (money moves) but send no answer
  --close-mid-frame P         send the length and half of the answer, then close
  --garbage P                 send a frame of junk before the answer
  --bad-mac P                 send the answer with a wrong MAC
  --duplicate-answer P        send the answer twice
  --decline CODE:P            decline a new refund with CODE (repeatable; kept as the
                              answer for that rid; 91/96 are not kept)
  --unavailable CODE:START_S:DURATION_S
                              answer 0200/0201 with CODE (91 or 96) during that period
                              after start, without processing (repeatable)
  --out-of-order [N]          hold answers and send each group of N (default 4, or what
                              has gathered 100 ms after the first) in reverse order of
                              arrival of their requests
  --slow-accept MS            a new connection is served only after MS milliseconds
  --outage START_S:DURATION_S stop listening and close every connection during that
                              period after start (repeatable)
  --never-answer RID          ignore every request for that rid (a poisoned entry)

Counters (HostSim.stats, and the last line the command prints on exit): connections,
refused, frames_in, frame_errors, decode_errors, invalid, bad_mac_in, requests,
in_<MTI> (in_0200, in_0201, ...), dropped_requests, dropped_answers, unavailable,
repeats, dup_mismatch, approved, declined, declined_fault, reversed, reversal_noop,
bad_mac_out, garbage, closed_mid_frame, duplicated, reordered, answers_out,
answers_lost_closed, outages, internal_errors. A counter is absent until it is 1.

Library use (tests, benches):
  sim = HostSim(mac_key=bytes.fromhex(...), sales={...}, seed=1,
                faults=Faults(drop_answer=0.3))
  sim.start(); port = sim.port; ...; sim.ledger; sim.stats; sim.stop()
"""
import argparse
import asyncio
import datetime
import hashlib
import hmac
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import iso8583
from iso8583.specs import default_ascii as SPEC

log = logging.getLogger("hostsim")

MAX_FRAME = 4096
MAC_LEN = 16
REQUESTS = ("0200", "0201", "0420", "0421", "0800")
ANSWER_MTI = {"0200": "0210", "0201": "0210", "0420": "0430", "0421": "0430", "0800": "0810"}

_REQ = {"3", "4", "7", "11", "12", "13", "41", "42", "49", "62", "64"}
# 0420/0421 carry field 90, hence a secondary bitmap: their MAC is field 128 (the MAC
# is always the last field).
_REV = {"3", "4", "7", "11", "41", "42", "49", "62", "90", "128"}
FIELDS = {"0200": _REQ, "0201": _REQ, "0420": _REV, "0421": _REV,
          "0800": {"7", "11", "41", "70", "128"}}
NUMERIC = {"3": 6, "4": 12, "7": 10, "11": 6, "12": 6, "13": 4, "49": 3, "70": 3, "90": 42}
RID_RE = re.compile(r"[A-Z0-9-]{1,32}\Z")
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,16}\Z")
HEX16_RE = re.compile(r"[0-9A-F]{16}\Z")


class Invalid(ValueError):
    """A request that breaks the spec's field rules."""


def mac_of(key, data):
    """MAC of the spec: HMAC-SHA256, first 8 bytes, 16 uppercase hex characters."""
    return hmac.new(key, bytes(data), hashlib.sha256).digest()[:8].hex().upper().encode()


def mac_field(doc):
    """'128' if the message has a field 65..127 (secondary bitmap), else '64'."""
    for k in doc:
        if k.isdigit() and 64 < int(k) < 128:
            return "128"
    return "64"


def encode(doc, key, mac=True):
    """dict (str keys, str values, no 64/128) -> message bytes with the MAC filled in."""
    doc = {k: v for k, v in doc.items() if k not in ("p", "1", "64", "128")}
    if mac:
        doc[mac_field(doc)] = "0" * MAC_LEN
    raw, _ = iso8583.encode(doc, SPEC)
    if mac:
        raw[-MAC_LEN:] = mac_of(key, raw[:-MAC_LEN])
    return bytes(raw)


def frame(data):
    if not 0 < len(data) <= MAX_FRAME:
        raise ValueError("frame length %d" % len(data))
    return len(data).to_bytes(2, "big") + data


def verify(key, data, doc):
    """True if the MAC field is where the spec puts it and verifies."""
    second = any(k.isdigit() and int(k) > 64 for k in doc)
    where = "128" if second else "64"
    other = "64" if second else "128"
    if where not in doc or other in doc:
        return False
    return hmac.compare_digest(mac_of(key, data[:-MAC_LEN]), bytes(data[-MAC_LEN:]))


def parse62(text):
    d = {}
    if not text:
        raise Invalid("field 62 empty")
    for part in text.split(";"):
        k, sep, v = part.partition("=")
        if not sep or not KEY_RE.match(k) or "=" in v or k in d:
            raise Invalid("field 62 %r" % text)
        if any(not " " <= c <= "~" for c in v):
            raise Invalid("field 62 characters")
        d[k] = v
    if not RID_RE.match(d.get("rid", "")):
        raise Invalid("field 62 rid")
    if "orrn" in d and len(d["orrn"]) != 12:
        raise Invalid("field 62 orrn")
    return d


def check_request(doc):
    """Strict check of a decoded request; returns its field 62 dict (or None)."""
    mti = doc["t"]
    if mti not in FIELDS:
        raise Invalid("MTI %r is not a request" % mti)
    have = {k for k in doc if k.isdigit() and k != "1"}
    if have != FIELDS[mti]:
        raise Invalid("%s fields: missing %s, unexpected %s" % (
            mti, sorted(FIELDS[mti] - have, key=int), sorted(have - FIELDS[mti], key=int)))
    for k, n in NUMERIC.items():
        if k in doc and (len(doc[k]) != n or not doc[k].isdigit() or not doc[k].isascii()):
            raise Invalid("field %s not n%d" % (k, n))
    for k in ("41", "42"):
        if k in doc and any(not " " <= c <= "~" for c in doc[k]):
            raise Invalid("field %s characters" % k)
    mac = doc.get("64", doc.get("128"))
    if not HEX16_RE.match(mac):
        raise Invalid("MAC field not 16 uppercase hex")
    if "3" in doc and doc["3"] != "200000":
        raise Invalid("field 3 %r" % doc["3"])
    if "70" in doc and doc["70"] != "301":
        raise Invalid("field 70 %r" % doc["70"])
    if "90" in doc and (doc["90"][:4] != "0200" or doc["90"][20:] != "0" * 22):
        raise Invalid("field 90 %r" % doc["90"])
    if "62" not in doc:
        return None
    f62 = parse62(doc["62"])
    if mti in ("0200", "0201") and "orrn" not in f62:
        raise Invalid("field 62 without orrn")
    return f62


def _spec_pairs(text, name, kinds):
    """'A:B:C' -> tuple converted by kinds."""
    parts = text.split(":")
    if len(parts) != len(kinds):
        raise argparse.ArgumentTypeError("%s wants %s, got %r" % (name, ":".join(k.__name__ for k in kinds), text))
    try:
        return tuple(k(p) for k, p in zip(kinds, parts))
    except ValueError:
        raise argparse.ArgumentTypeError("bad %s %r" % (name, text)) from None


@dataclass
class Faults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop_request: float = 0.0
    drop_answer: float = 0.0
    close_mid_frame: float = 0.0
    garbage: float = 0.0
    bad_mac: float = 0.0
    duplicate_answer: float = 0.0
    decline: list = field(default_factory=list)  # [(code, p)]
    unavailable: list = field(default_factory=list)  # [(code, start_s, duration_s)]
    out_of_order: int = 0  # window; 0 = answers in the order they are ready
    ooo_hold_ms: float = 100.0
    slow_accept_ms: float = 0.0
    outage: list = field(default_factory=list)  # [(start_s, duration_s)]
    never_answer: list = field(default_factory=list)  # rids ignored for ever (a poisoned entry)

    def check(self):
        for name in ("drop_request", "drop_answer", "close_mid_frame", "garbage", "bad_mac",
                     "duplicate_answer"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError("%s must be a probability 0..1" % name)
        for code, p in self.decline:
            if len(code) != 2 or code == "00" or not 0.0 <= p <= 1.0:
                raise ValueError("decline %s:%s" % (code, p))
        for code, start, dur in self.unavailable:
            if code not in ("91", "96") or start < 0 or dur < 0:
                raise ValueError("unavailable %s:%s:%s (code 91 or 96)" % (code, start, dur))
        for start, dur in self.outage:
            if start < 0 or dur < 0:
                raise ValueError("outage %s:%s" % (start, dur))
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.slow_accept_ms < 0 or self.out_of_order < 0:
            raise ValueError("negative latency/jitter/slow-accept/out-of-order")


@dataclass
class Refund:
    tid: str
    rid: str
    amount: str
    currency: str
    orrn: str
    stan: str
    rc: str
    rrn: str = ""
    auth: str = ""
    reversed: bool = False


class _Conn:
    def __init__(self, n, writer):
        self.n = n
        self.writer = writer
        self.closed = False
        self.held = []  # out-of-order window: (arrival, frames)
        self.flush_task = None
        self.answers = 0
        peer = writer.get_extra_info("peername")
        self.peer = "%s:%s" % peer[:2] if peer else "?"

    def send(self, data):
        if self.closed:
            return False
        self.writer.write(data)
        return True

    def close(self):
        if not self.closed:
            self.closed = True
            self.writer.close()

    def abort(self):
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()


def _now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


class HostSim:
    def __init__(self, mac_key, host="127.0.0.1", port=0, sales=None, ledger_path=None,
                 seed=None, faults=None):
        if not mac_key:
            raise ValueError("MAC key is empty")
        self._key = bytes(mac_key)
        self.host = host
        self.port = port
        self.sales = None if sales is None else {k: (v["amount"] if isinstance(v, dict) else int(v))
                                                  for k, v in sales.items()}
        self.ledger_path = ledger_path
        self.seed = random.SystemRandom().randrange(1 << 31) if seed is None else int(seed)
        self.faults = faults or Faults()
        self.faults.check()
        self.refunds = {}  # (tid, rid) -> Refund
        self.by_stan = {}  # (tid, stan) -> (tid, rid)
        self.ledger = []  # the ledger lines as dicts
        self._stats = {}
        self._arrivals = {}  # (tid, stan, mti) -> count
        self._seq = 0
        self._arrival_seq = 0
        self._conn_seq = 0
        self._conns = set()
        self._tasks = set()  # answers being delivered, timers
        self._handlers = set()  # connection handlers (ended by closing their connection)
        self._server = None
        self._loop = None
        self._thread = None
        self._ledger_file = None
        self._t0 = 0.0
        self._outage_on = False
        self._lock = threading.Lock()
        if ledger_path and os.path.exists(ledger_path):
            self._reload(ledger_path)

    def __repr__(self):
        return "<HostSim %s:%s seed=%d key=***>" % (self.host, self.port, self.seed)

    # ---- public API ----

    @property
    def stats(self):
        with self._lock:
            return dict(self._stats)

    def start(self, timeout=10):
        """Start the server in a thread of its own; returns when it listens (self.port)."""
        ready = threading.Event()
        err = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except Exception as e:  # noqa: BLE001 - reported to start()
                err.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="hostsim", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("hostsim did not start")
        if err:
            raise err[0]
        return self

    def stop(self, timeout=10):
        """Close the server and every connection, cancel pending answers, join the thread."""
        if not self._thread:
            return
        loop = self._loop
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._close(), loop)
            try:
                fut.result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._thread = None
        if self._ledger_file:
            self._ledger_file.close()
            self._ledger_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def net(self, tid=None):
        """Sum of ledger deltas per rid (approved minus reversed), optionally for one tid."""
        out = {}
        for e in self.ledger:
            if tid is None or e["tid"] == tid:
                out[e["rid"]] = out.get(e["rid"], 0) + e["delta"]
        return out

    # ---- internals ----

    def _count(self, name, n=1):
        with self._lock:
            self._stats[name] = self._stats.get(name, 0) + n

    @staticmethod
    def ident(tid, stan, mti, nth=0):
        """The identity fault decisions use for a request: the nth arrival (from 0) of
        this (terminal id, STAN, MTI)."""
        return "%s|%s|%s|%d" % (tid, stan, mti, nth)

    def roll(self, kind, ident):
        """The deterministic draw in [0, 1) for a fault kind ('drop_request',
        'drop_answer', 'close_mid_frame', 'garbage', 'bad_mac', 'duplicate_answer',
        'latency'; 'decline<CODE>' with ident 'tid|rid'): the fault applies if it is
        below the fault's probability. Tests use it to predict faults."""
        h = hashlib.sha256(("%d|%s|%s" % (self.seed, kind, ident)).encode()).digest()
        return int.from_bytes(h[:8], "big") / 2.0 ** 64

    def _elapsed(self):
        return time.monotonic() - self._t0

    def _reload(self, path):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    e = json.loads(line)
                    key = (e["tid"], e["rid"])
                    if e["type"] == "refund":
                        self.refunds[key] = Refund(e["tid"], e["rid"], "%012d" % e["amount"],
                                                   e["currency"], e["orrn"], e["stan"], "00",
                                                   e["rrn"], e["auth"])
                        self.by_stan[(e["tid"], e["stan"])] = key
                    elif e["type"] == "reversal" and key in self.refunds:
                        self.refunds[key].reversed = True
                    self.ledger.append(e)
                except (ValueError, KeyError, TypeError) as x:
                    raise SystemExit("hostsim: ledger %s line %d unreadable: %s" % (path, n, x))
        self._seq = len(self.refunds)

    async def _open(self):
        self._t0 = time.monotonic()
        if self.ledger_path:
            self._ledger_file = open(self.ledger_path, "a", encoding="utf-8")
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listening on %s:%d (seed %d)", self.host, self.port, self.seed)
        for start, dur in self.faults.outage:
            self._spawn(self._outage(start, dur))

    async def _close(self):
        if self._server:
            self._server.close()
            self._server = None
        for c in list(self._conns):
            c.abort()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2)

    def _spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t):
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            self._count("internal_errors")
            log.error("hostsim task failed: %r", t.exception())

    async def _outage(self, start, dur):
        await asyncio.sleep(max(0.0, start - self._elapsed()))
        log.warning("outage: not listening for %.3f s", dur)
        self._count("outages")
        self._outage_on = True
        if self._server:
            self._server.close()
            self._server = None
        for c in list(self._conns):
            c.abort()
        await asyncio.sleep(dur)
        self._outage_on = any(s <= self._elapsed() < s + d for s, d in self.faults.outage
                              if (s, d) != (start, dur))
        if not self._outage_on and self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
            log.warning("outage over: listening on %s:%d again", self.host, self.port)

    async def _serve(self, reader, writer):
        self._conn_seq += 1
        conn = _Conn(self._conn_seq, writer)
        if self._outage_on:
            self._count("refused")
            conn.abort()
            return
        me = asyncio.current_task()
        self._handlers.add(me)
        self._conns.add(conn)
        self._count("connections")
        log.info("conn %d from %s", conn.n, conn.peer)
        try:
            if self.faults.slow_accept_ms:
                await asyncio.sleep(self.faults.slow_accept_ms / 1000.0)
            while not conn.closed:
                hdr = await reader.readexactly(2)
                n = int.from_bytes(hdr, "big")
                if n == 0 or n > MAX_FRAME:
                    self._count("frame_errors")
                    log.warning("conn %d: frame length %d: closing", conn.n, n)
                    break
                body = await reader.readexactly(n)
                try:
                    self._on_message(conn, body)
                except Exception:  # noqa: BLE001 - a bug here must not kill the host
                    self._count("internal_errors")
                    log.exception("conn %d: message dropped by an internal error", conn.n)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._handlers.discard(me)
            self._conns.discard(conn)
            conn.close()
            log.info("conn %d closed", conn.n)

    def _on_message(self, conn, body):
        self._count("frames_in")
        try:
            doc, _ = iso8583.decode(bytearray(body), SPEC)
        except (iso8583.DecodeError, ValueError, KeyError) as e:
            self._count("decode_errors")
            log.warning("conn %d: undecodable message dropped: %s", conn.n, e)
            return
        mti = doc.get("t")
        try:
            f62 = check_request(doc)
        except Invalid as e:
            self._count("invalid")
            log.warning("conn %d: %s dropped: %s", conn.n, mti, e)
            return
        if not verify(self._key, body, doc):
            self._count("bad_mac_in")
            log.warning("conn %d: %s STAN %s from %s: bad MAC, dropped", conn.n, mti, doc["11"], doc["41"])
            return
        tid, stan = doc["41"], doc["11"]
        k = (tid, stan, mti)
        nth = self._arrivals.get(k, 0)
        self._arrivals[k] = nth + 1
        ident = self.ident(tid, stan, mti, nth)
        self._count("requests")
        self._count("in_" + mti)
        if f62 and f62.get("rid") in self.faults.never_answer:
            self._count("never_answered")
            log.info("conn %d: %s STAN %s for poisoned rid ignored (fault)", conn.n, mti, stan)
            return
        if self.roll("drop_request", ident) < self.faults.drop_request:
            self._count("dropped_requests")
            log.info("conn %d: %s STAN %s dropped (fault)", conn.n, mti, stan)
            return
        answer = self._process(doc, f62, ident)
        log.info("conn %d: %s STAN %s from %s -> %s %s", conn.n, mti, stan, tid, answer["t"], answer["39"])
        if self.roll("drop_answer", ident) < self.faults.drop_answer:
            self._count("dropped_answers")
            log.info("conn %d: answer to %s STAN %s dropped (fault)", conn.n, mti, stan)
            return
        self._arrival_seq += 1
        self._spawn(self._deliver(conn, ident, answer, self._arrival_seq))

    # ---- host duties ----

    def _process(self, doc, f62, ident):
        mti = doc["t"]
        if mti in ("0200", "0201"):
            return self._refund(doc, f62, ident)
        if mti in ("0420", "0421"):
            return self._reverse(doc, f62)
        return {"t": "0810", "7": self._f7(), "11": doc["11"], "39": "00", "41": doc["41"], "70": "301"}

    def _f7(self):
        return _now_utc().strftime("%m%d%H%M%S")

    def _answer0210(self, doc, rid, rc, rrn="", auth=""):
        a = {"t": "0210", "3": doc["3"], "4": doc["4"], "7": self._f7(), "11": doc["11"],
             "12": doc["12"], "13": doc["13"], "39": rc, "41": doc["41"], "42": doc["42"],
             "49": doc["49"], "62": "rid=" + rid}
        if rrn:
            a["37"] = rrn
        if auth:
            a["38"] = auth
        return a

    def _unavailable(self):
        t = self._elapsed()
        for code, start, dur in self.faults.unavailable:
            if start <= t < start + dur:
                return code
        return None

    def _refund(self, doc, f62, ident):
        tid, rid, orrn = doc["41"], f62["rid"], f62["orrn"]
        code = self._unavailable()
        if code:
            self._count("unavailable")
            return self._answer0210(doc, rid, code)
        key = (tid, rid)
        rec = self.refunds.get(key)
        if rec is not None:
            if (rec.amount, rec.currency, rec.orrn) != (doc["4"], doc["49"], orrn):
                self._count("dup_mismatch")
                log.warning("%s rid %s: repeated with other amount/currency/orrn: 94", tid, rid)
                return self._answer0210(doc, rid, "94")
            self._count("repeats")
            return self._answer0210(doc, rid, rec.rc, rec.rrn, rec.auth)
        amount = int(doc["4"])
        rc = "00"
        if self.sales is not None:
            sale = self.sales.get(orrn)
            if sale is None:
                rc = "25"
            else:
                done = sum(int(r.amount) for r in self.refunds.values()
                           if r.orrn == orrn and r.rc == "00" and not r.reversed)
                if done + amount > sale:
                    rc = "13"
        if rc == "00":
            for dcode, p in self.faults.decline:
                if self.roll("decline" + dcode, "%s|%s" % (tid, rid)) < p:
                    rc = dcode
                    self._count("declined_fault")
                    break
        if rc in ("91", "96"):
            return self._answer0210(doc, rid, rc)
        self._seq += 1
        rrn = "%06d%06d" % (self.seed % 1000000, self._seq % 1000000)
        auth = ""
        if rc == "00":
            auth = "%06d" % int(self.roll("auth", "%s|%s" % (tid, rid)) * 1e6)
        rec = Refund(tid, rid, doc["4"], doc["49"], orrn, doc["11"], rc, rrn, auth)
        self.refunds[key] = rec
        self.by_stan[(tid, doc["11"])] = key
        if rc == "00":
            self._count("approved")
            self._book("refund", rec)
        else:
            self._count("declined")
        log.info("%s rid %s amount %d: %s rrn %s", tid, rid, amount, rc, rrn)
        return self._answer0210(doc, rid, rc, rrn, auth)

    def _reverse(self, doc, f62):
        tid, rid = doc["41"], f62["rid"]
        key = (tid, rid)
        rec = self.refunds.get(key)
        if rec is None:
            k2 = self.by_stan.get((tid, doc["90"][4:10]))
            rec = self.refunds.get(k2) if k2 else None
        if rec is not None and rec.rc == "00" and not rec.reversed:
            rec.reversed = True
            self._count("reversed")
            self._book("reversal", rec)
            log.info("%s rid %s reversed", tid, rec.rid)
        else:
            self._count("reversal_noop")
        return {"t": "0430", "3": doc["3"], "4": doc["4"], "7": self._f7(), "11": doc["11"],
                "39": "00", "41": tid, "42": doc["42"], "49": doc["49"], "62": "rid=" + rid}

    def _book(self, kind, rec):
        amount = int(rec.amount)
        e = {"time": _now_utc().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "type": kind,
             "tid": rec.tid, "rid": rec.rid, "amount": amount,
             "delta": amount if kind == "refund" else -amount, "currency": rec.currency,
             "rrn": rec.rrn, "auth": rec.auth, "orrn": rec.orrn, "stan": rec.stan}
        self.ledger.append(e)
        if self._ledger_file:
            self._ledger_file.write(json.dumps(e, sort_keys=True) + "\n")
            self._ledger_file.flush()

    # ---- delivery with faults ----

    def _frames(self, conn, ident, answer):
        """The bytes to send for one answer (with garbage / bad MAC / duplicate faults),
        and whether to close mid-frame."""
        raw = bytearray(encode(answer, self._key))
        if self.roll("bad_mac", ident) < self.faults.bad_mac:
            self._count("bad_mac_out")
            c = raw[-1]
            raw[-1] = ord("0") if c != ord("0") else ord("1")
        out = b""
        if self.roll("garbage", ident) < self.faults.garbage:
            self._count("garbage")
            rnd = random.Random("%d|garbage-bytes|%s" % (self.seed, ident))
            junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
            out += frame(junk)
        f = frame(bytes(raw))
        if self.roll("close_mid_frame", ident) < self.faults.close_mid_frame:
            self._count("closed_mid_frame")
            return out + f[:2 + len(raw) // 2], True
        out += f
        if self.roll("duplicate_answer", ident) < self.faults.duplicate_answer:
            self._count("duplicated")
            out += f
        return out, False

    async def _deliver(self, conn, ident, answer, arrival):
        fl = self.faults
        delay = fl.latency_ms
        if fl.jitter_ms:
            delay += (2.0 * self.roll("latency", ident) - 1.0) * fl.jitter_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        data, close = self._frames(conn, ident, answer)
        if fl.out_of_order:
            conn.held.append((arrival, data, close))
            if len(conn.held) >= fl.out_of_order:
                self._flush(conn)
            elif conn.flush_task is None:
                conn.flush_task = self._spawn(self._flush_later(conn))
            return
        self._send(conn, data, close)

    async def _flush_later(self, conn):
        await asyncio.sleep(self.faults.ooo_hold_ms / 1000.0)
        conn.flush_task = None
        self._flush(conn)

    def _flush(self, conn):
        held, conn.held = conn.held, []
        if conn.flush_task is not None and conn.flush_task is not asyncio.current_task():
            conn.flush_task.cancel()
        conn.flush_task = None
        if len(held) > 1:
            self._count("reordered", len(held))
        for _, data, close in sorted(held, key=lambda h: h[0], reverse=True):
            self._send(conn, data, close)

    def _send(self, conn, data, close):
        if not conn.send(data):
            self._count("answers_lost_closed")
            return
        self._count("answers_out")
        if close:
            conn.close()


# ---- command line ----

def _prob(text):
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a probability: %r" % text) from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError("probability must be 0..1: %r" % text)
    return p


def _latency(text):
    mean, _, jitter = text.partition(",")
    try:
        return float(mean), float(jitter or 0)
    except ValueError:
        raise argparse.ArgumentTypeError("--latency-ms MEAN[,JITTER]: %r" % text) from None


def _listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("--listen HOST:PORT: %r" % text)
    return host or "0.0.0.0", int(port)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="refund-hostsim",
                                description="Payment host simulator for the refund terminal "
                                            "(docs/host-link.md).")
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 8583), metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8583; port 0 = any)")
    p.add_argument("--mac-key", required=True, metavar="HEX", help="the terminals' MAC key, hex")
    p.add_argument("--sales", metavar="FILE", help="JSON {orrn: amount}: enables declines 25 and 13")
    p.add_argument("--ledger", metavar="FILE", help="JSON Lines ledger of money movements (appended)")
    p.add_argument("--seed", type=int, help="seed of every fault decision (default: random, logged)")
    p.add_argument("--latency-ms", type=_latency, default=(0.0, 0.0), metavar="MEAN[,JITTER]")
    p.add_argument("--drop-request", type=_prob, default=0.0, metavar="P")
    p.add_argument("--drop-answer", type=_prob, default=0.0, metavar="P",
                   help="process the request, send no answer")
    p.add_argument("--close-mid-frame", type=_prob, default=0.0, metavar="P")
    p.add_argument("--garbage", type=_prob, default=0.0, metavar="P",
                   help="send a junk frame before the answer")
    p.add_argument("--bad-mac", type=_prob, default=0.0, metavar="P")
    p.add_argument("--duplicate-answer", type=_prob, default=0.0, metavar="P")
    p.add_argument("--decline", action="append", default=[], metavar="CODE:P",
                   type=lambda t: _spec_pairs(t, "--decline", (str, float)))
    p.add_argument("--unavailable", action="append", default=[], metavar="CODE:START_S:DURATION_S",
                   type=lambda t: _spec_pairs(t, "--unavailable", (str, float, float)))
    p.add_argument("--out-of-order", type=int, nargs="?", const=4, default=0, metavar="N",
                   help="answer groups of N (default 4) in reverse order of arrival")
    p.add_argument("--slow-accept", type=float, default=0.0, metavar="MS")
    p.add_argument("--outage", action="append", default=[], metavar="START_S:DURATION_S",
                   type=lambda t: _spec_pairs(t, "--outage", (float, float)))
    p.add_argument("--never-answer", action="append", default=[], metavar="RID",
                   help="ignore every request for this rid (a poisoned entry; repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every message")
    return p.parse_args(argv)


def from_args(a):
    try:
        key = bytes.fromhex(a.mac_key)
    except ValueError:
        raise SystemExit("refund-hostsim: --mac-key is not hex") from None
    if not key:
        raise SystemExit("refund-hostsim: --mac-key is empty")
    sales = None
    if a.sales:
        with open(a.sales, encoding="utf-8") as f:
            sales = json.load(f)
    faults = Faults(latency_ms=a.latency_ms[0], jitter_ms=a.latency_ms[1],
                    drop_request=a.drop_request, drop_answer=a.drop_answer,
                    close_mid_frame=a.close_mid_frame, garbage=a.garbage, bad_mac=a.bad_mac,
                    duplicate_answer=a.duplicate_answer, decline=a.decline,
                    unavailable=a.unavailable, out_of_order=a.out_of_order,
                    slow_accept_ms=a.slow_accept, outage=a.outage, never_answer=a.never_answer)
    try:
        faults.check()
    except ValueError as e:
        raise SystemExit("refund-hostsim: %s" % e) from None
    host, port = a.listen
    return HostSim(key, host, port, sales=sales, ledger_path=a.ledger, seed=a.seed, faults=faults)


def main(argv=None):
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s hostsim %(levelname)s %(message)s")
    sim = from_args(a)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sim.start()
    print(json.dumps({"listen": "%s:%d" % (sim.host, sim.port), "seed": sim.seed}), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        print(json.dumps({"stats": sim.stats, "ledger_lines": len(sim.ledger)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
