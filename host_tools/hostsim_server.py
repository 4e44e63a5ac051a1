"""HostSim, the payment host simulator (host_tools/hostsim.py): a TCP server on asyncio in a
thread of its own that ties the parts: framing and the request checks (hostsim_msg), the
host duties (hostsim_service), the ledger (hostsim_ledger) and the faults
(hostsim_faults): outages, slow accept, dropped requests and answers, latency, answers
held and sent out of order.

Several requests may be outstanding on a connection; each answer is sent when it is ready
(latency), so answers are matched by STAN, not by order.
"""
import asyncio
import logging
import random
import threading
import time

from host_tools.hostsim_faults import FaultPlan, Faults
from host_tools.hostsim_ledger import Ledger
from host_tools.hostsim_msg import (DECODE_ERRORS, MAX_FRAME, Invalid, check_request, decode,
                                    encode, verify)
from host_tools.hostsim_service import Service

log = logging.getLogger("hostsim")


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
        self._stats = {}
        self._lock = threading.Lock()
        self.plan = FaultPlan(self.faults, self.seed, self._count)
        self.book = Ledger(ledger_path)
        self.service = Service(self.book, self.plan, self.sales, self.seed, self._count,
                               self._elapsed)
        self._arrivals = {}  # (tid, stan, mti) -> count
        self._arrival_seq = 0
        self._conn_seq = 0
        self._conns = set()
        self._tasks = set()  # answers being delivered, timers
        self._handlers = set()  # connection handlers (ended by closing their connection)
        self._server = None
        self._loop = None
        self._thread = None
        self._t0 = 0.0
        self._outage_on = False

    def __repr__(self):
        return "<HostSim %s:%s seed=%d key=***>" % (self.host, self.port, self.seed)

    # ---- public API ----

    @property
    def stats(self):
        with self._lock:
            return dict(self._stats)

    @property
    def ledger(self):
        """The ledger lines (dicts), those read back at start included."""
        return self.book.lines

    @property
    def refunds(self):
        """(tid, rid) -> hostsim_ledger.Refund: every refund answered with a final code."""
        return self.book.refunds

    @property
    def settlements(self):
        """The settlement records (uploads, differences, closed batches) as dicts."""
        return self.book.settle_lines

    def differences(self, tid=None):
        """The differences settlement found, per rid ('difference' records)."""
        return self.book.differences(tid)

    def batch(self, tid, batch, currency="156"):
        """The host's view of a batch: {rid: amount}, approved and not reversed (rids
        lost by --settle-fault missing left out, as reconciliation counts them)."""
        return self.book.batch(tid, batch, currency, self.plan.settle_lost())

    def net(self, tid=None):
        """Sum of ledger deltas per rid (approved minus reversed), optionally for one tid."""
        return self.book.net(tid)

    ident = staticmethod(FaultPlan.ident)

    def roll(self, kind, ident):
        """The deterministic draw in [0, 1) of a fault (hostsim_faults.FaultPlan.roll)."""
        return self.plan.roll(kind, ident)

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
        self.book.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- internals ----

    def _count(self, name, n=1):
        with self._lock:
            self._stats[name] = self._stats.get(name, 0) + n

    def _elapsed(self):
        return time.monotonic() - self._t0

    async def _open(self):
        self._t0 = time.monotonic()
        self.book.open()
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
        self._outage_on = self.plan.in_outage(self._elapsed(), other_than=(start, dur))
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
            doc = decode(body)
        except DECODE_ERRORS as e:
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
        if self.plan.hits("drop_request", ident):
            self._count("dropped_requests")
            log.info("conn %d: %s STAN %s dropped (fault)", conn.n, mti, stan)
            return
        answer = self.service.answer(doc, f62)
        log.info("conn %d: %s STAN %s from %s -> %s %s", conn.n, mti, stan, tid, answer["t"], answer["39"])
        if self.plan.settle_drop(tid, stan, mti):
            log.info("conn %d: answer to %s STAN %s dropped (settle fault)", conn.n, mti, stan)
            return
        if self.plan.hits("drop_answer", ident):
            self._count("dropped_answers")
            log.info("conn %d: answer to %s STAN %s dropped (fault)", conn.n, mti, stan)
            return
        self._arrival_seq += 1
        self._spawn(self._deliver(conn, ident, answer, self._arrival_seq))

    # ---- delivery with faults ----

    async def _deliver(self, conn, ident, answer, arrival):
        delay = self.plan.delay_ms(ident)
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        data, close = self.plan.wire(encode(answer, self._key), ident)
        if self.faults.out_of_order:
            conn.held.append((arrival, data, close))
            if len(conn.held) >= self.faults.out_of_order:
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
