# Printer task: approved refunds (approval order), then decline slips, then pending
# notices (refund.prqueue picks), on a serial ESC/POS thermal printer (refund.prlink).
# A refund is marked `printed` only after the printer confirmed the whole receipt;
# anything less leaves it `approved`, and it is printed again in full, marked REPRINT,
# once the printer is ready. One job:
#   1. status DLE EOT 1, 2, 4; not ready -> retry every poll_ms, the refund stays owed.
#   2. outbox.print_begun(rid) is durable BEFORE the first receipt byte (sets PRINTING:
#      any later copy is composed as a REPRINT): printed once as an original, whatever
#      power cuts or paper faults happen.
#   3. the composer's chunks, paced to the UART's baud (the app passes the board's,
#      set by config printer_baud) under XON/XOFF.
#   4. completion: GS r 1 and GS I 67 (in-band: answered once everything before them
#      is printed and cut; the model-name frame is the proof, refund.prident), then
#      DLE EOT 1/2/4 ready. Then outbox.printed(rid) (a slip: slip_printed).
#   Failure at any point: after settle_ms, DLE ENQ 2 (clear the printer's buffers, so
#   the rest of a broken receipt is not printed later); the state says why.
# At start DLE ENQ 2 drops whatever a previous run left half-sent (that refund is still
# approved with PRINTING set: it comes out again as a REPRINT). A decline slip printed
# again after a fault is not marked (the composer has no reprint form for slips).
import asyncio
import time
from refund import escpos as P
from refund import receipt
from refund import record as R
from refund import settings, evlog
from refund.prlink import Link, DEFAULTS, ABSENT
from refund import prqueue as Q

try:
    from refund import prident
except ImportError:  # optional: completion by GS r 1 alone
    prident = None

READY = P.READY
PAPER_OUT = P.PAPER_OUT
COVER_OPEN = P.COVER_OPEN
OFFLINE = P.OFFLINE
ERROR = P.ERROR
PRINTING = "printing"


class Printer:
    def __init__(self, stream, outbox, cfg, log, now, baud=115200, opts=None):
        """stream: the printer's byte stream (asyncio-stream capable) running at baud;
        outbox: the refund.outbox.Outbox; cfg: terminal config (merchant_name,
        merchant_id, terminal_id, printer_width, tz_min, pending_notice); log(tag, msg,
        level=...); now(): UTC s; opts: settings (refund.prlink.DEFAULTS)."""
        self.o = settings(DEFAULTS, opts, "printer")
        self.ob = outbox
        self.cfg = cfg
        self.log = log
        self.now = now
        self.counts = {"printed": 0, "reprints": 0, "slips": 0, "reports": 0, "settlements": 0, "notices": 0, "garbage": 0,
                       "untrusted_status": 0, "asb": 0, "aborted": 0, "absent": 0, "failed": 0,
                       "bytes": 0, "xoff_count": 0}
        self.link = Link(stream, baud, self.o, self.counts, log, self._set)
        self.ident = prident.Ident(self.link, log) if prident else None
        self.queue = Q.Queue(outbox, cfg, log, now, self.counts, self._set)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._booted = False
        self.host_up = None  # set by the app: () -> bool, the sender's view of the host
        # visible state
        self.state = ABSENT
        self.detail = "not checked yet"
        self.rid = None

    # ---- public API -------------------------------------------------------------

    def wake(self, *_):
        """The outbox changed (use as Outbox.on_change): look for work now."""
        self._wake.set()

    def status(self):
        """For staff and technicians: state, why, current rid, counters."""
        L = self.link
        d = dict(self.counts)
        d["state"] = self.state
        d["detail"] = self.detail
        d["rid"] = self.rid
        d["near_end"] = L.near_end
        d["xoff"] = L.xoff
        d["last_status"] = list(L.last_status) if L.last_status else None
        m = self.ident.model if self.ident else None
        d["model"] = prident.text(m) if m else None
        d["stuck"] = list(self.queue.skip)
        return d

    async def run(self):
        """The driver task: forever. Cancel it to stop."""
        self.log("printer", "line %d baud: writes paced to it" % self.link.baud)
        self.link.start()
        try:
            while True:
                self._wake.clear()
                more = False
                try:
                    async with self._lock:
                        more = await self._cycle()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # a driver bug must not end printing for good
                    self._set(ERROR, "driver: %r" % (e,))
                    self.log("printer", "cycle failed: %r" % (e,), level="ERROR")
                if more:
                    await asyncio.sleep_ms(0)
                    continue
                wait = self.o["idle_ms"] if self.state == READY else self.o["poll_ms"]
                try:
                    await asyncio.wait_for_ms(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.stop()

    def stop(self):
        self.link.stop()

    async def reprint(self, rid):
        """Print an approved or printed refund again, always marked REPRINT; its state
        does not change. Returns {"ok": bool, "state": ..., "error": ...}."""
        e = self.ob.get(rid)
        if e is None:
            return {"ok": False, "state": self.state, "error": "unknown refund %s" % rid}
        if e["state"] != R.APPROVED and e["state"] != R.PRINTED:
            return {"ok": False, "state": self.state,
                    "error": "no receipt for a refund in state %s" % R.NAMES[e["state"]]}
        self.link.start()
        async with self._lock:
            ok = await self._job(receipt.refund(Q.composer_input(e), self.cfg, True), rid)
        if ok:
            self.counts["reprints"] += 1
        return self._result(ok)

    async def queue_report(self):
        """Staff report of the live outbox entries."""
        self.link.start()
        async with self._lock:
            ok = await self._job(receipt.queue_report(Q.Live(self.ob), self.cfg, self.now()), None)
        if ok:
            self.counts["reports"] += 1
        return self._result(ok)

    async def slip(self, gen):
        """A settlement slip (refund.settleslip chunks); the caller keeps it owed."""
        self.link.start()
        async with self._lock:
            ok = await self._job(gen, None)
        if ok:
            self.counts["settlements"] += 1
        return self._result(ok)

    def _result(self, ok):
        return {"ok": ok, "state": self.state, "error": None if ok else self.detail}

    # ---- the print loop ---------------------------------------------------------

    async def _cycle(self):
        """One step: returns True when a job completed (look for the next at once)."""
        if not self._booted:
            # Whatever a previous run left in the printer (a receipt cut short by a
            # reset, half a command) is dropped: those refunds are still approved
            # with PRINTING set, so they come out again in full as REPRINTs.
            self._booted = True
            await self.link.clear()
        q = self.queue
        q.save()
        job = q.next(self.host_up is not None and not self.host_up())
        if job is None:
            st = await self.link.check()
            self._set(st, self.link.why)
            return False
        kind, e = job
        return await self._print_entry(kind, e)

    async def _ready(self):
        """Status check: True if ready, else False and the state says why."""
        st = await self.link.check()
        if st != READY:
            self._set(st, self.link.why)
        return st == READY

    async def _print_entry(self, kind, e):
        rid = e["rid"]
        again = bool(e["flags"] & R.F_PRINTING)  # a copy may already be on paper
        try:
            gen = Q.compose(kind, e, self.cfg, again)
            first = next(gen)  # the composer validates before its first chunk
        except Exception as ex:
            self.queue.stuck(rid, "cannot compose: %r" % (ex,))
            return True
        if not await self._ready():
            return False
        if kind == Q.NOTICE:
            # Not a receipt: no PRINTING mark; a notice cut short is simply not recorded.
            self.log("printer", "%s: printing pending notice" % rid)
            if not await self._job(gen, rid, first, False):
                return False
            self.queue.notice_printed(rid)
            return True
        if not again:
            try:
                self.ob.print_begun(rid)  # durable before the first receipt byte
            except Exception as ex:
                self._set(ERROR, "outbox: %r" % (ex,))
                self.log("printer", "%s: print_begun failed: %r" % (rid, ex), level="ERROR")
                return False
        self.log("printer", "%s: printing %s%s" % (
            rid, "refund receipt" if kind == Q.REFUND else "decline slip",
            " (REPRINT)" if again and kind == Q.REFUND else ""))
        evlog.event("print_begun", rid, copy="slip" if kind != Q.REFUND else ("reprint" if again else "original"))
        if not await self._job(gen, rid, first, False):
            return False
        if kind == Q.REFUND:
            self.counts["printed"] += 1
            if again:
                self.counts["reprints"] += 1
        else:
            self.counts["slips"] += 1
        self.queue.printed(rid)
        return True

    async def _job(self, gen, rid, first=None, check=True):
        """Status check (unless done), stream, confirm. True only if confirmed."""
        if check and not await self._ready():
            return False
        L = self.link
        idn = self.ident
        self.rid = rid
        self._set(PRINTING, rid)
        L.split.kanji = False
        L.watching(True)
        ok = False
        try:
            if idn is not None and idn.needed():
                await idn.learn()
            ok = await self._stream(gen, first) and await self._confirm()
        except Exception as ex:
            self._set(ERROR, "printing: %r" % (ex,))
            self.log("printer", "job failed: %r" % (ex,), level="ERROR")
        finally:
            L.watching(False)
            L.gsr.close()
            if idn is not None:
                idn.end()
            self.rid = None
        if ok:
            self._set(READY, None)
        else:
            self.counts["aborted"] += 1
            self.log("printer", "%s: not confirmed (%s: %s); stays owed" % (
                rid, self.state, self.detail), level="WARN", ev=False)
            evlog.event("print_fault", rid, level="W", agg=True, cause="%s %s" % (self.state, self.detail))
            await L.clear()
        return ok

    async def _stream(self, gen, first):
        put = self.link.put
        if first is not None and not await put(first):
            return False
        for chunk in gen:
            if not await put(chunk):
                return False
        return True

    async def _confirm(self):
        """After the final cut: GS r 1 (paper sensor) and, if the printer identified
        itself, GS I 67 (its model name). Both are answered in-band, once everything
        before them is printed. The completion proof is the exact model frame, which
        line noise cannot fake; a printer without GS I falls back to the one-byte GS r
        1 answer (weaker: see refund.prident)."""
        L = self.link
        idn = self.ident if self.ident is not None and self.ident.model is not None else None
        L.gsr.expect()
        if not await L.put(P.PAPER_SENSOR) or (idn is not None and not await idn.ask()):
            return False
        poll = self.o["poll_ms"]
        t0 = time.ticks_ms()
        while True:
            if idn is not None:
                r = await idn.step(poll)
                if r == prident.DONE:
                    break
                if r == prident.FAIL:
                    return False
                if r == prident.AGAIN:
                    continue
            elif await L.gsr.wait(poll) >= 0:
                break
            if L.seen is not None:
                return L.stopped()
            st = await L.check()  # still printing, or stopped by a fault?
            if st != READY:
                self._set(st, L.why or "during printing")
                return False
            if time.ticks_diff(time.ticks_ms(), t0) > self.o["confirm_ms"]:
                self._set(ERROR, "no completion answer")
                return False
        L.gsr.close()
        if L.gsr.val >= 0 and P.paper_sensor_end(L.gsr.val):
            self._set(PAPER_OUT, "paper sensor after the receipt")
            return False
        st = await L.check()
        if st != READY:
            self._set(st, L.why or "at the completion check")
            return False
        # A fault the printer reported while printing, even if over by now: the paper
        # may be torn, or a line lost (the rest was printed after a reload).
        return L.stopped()

    def _set(self, state, detail):
        fine = state == READY or state == PRINTING
        if state != self.state or (detail != self.detail and not fine):
            self.log("printer", "state %s%s" % (state, (" (%s)" % detail) if detail else ""),
                     level="INFO" if fine else "WARN", ev=False)
            if state != PRINTING:
                evlog.event("printer", level="I" if fine else "W", agg=not fine, state=state,
                            detail=detail)
            if fine:
                evlog.clear("printer")
            if state == ABSENT:
                self.counts["absent"] += 1
        self.state = state
        self.detail = detail
