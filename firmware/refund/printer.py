# Printer driver task: approved refunds (approval order), then decline slips, on a
# serial ESC/POS thermal printer. A refund is marked `printed` only after the printer
# confirmed the whole receipt; anything less leaves it `approved`, and it is printed
# again in full, marked REPRINT, once the printer is ready.
#
# One job:
#   1. real-time status DLE EOT 1, 2, 4 (every reply must match 0xx1xx10, else it is
#      not trusted); no answer within status_ms = printer absent. Not ready -> retry
#      every poll_ms; the refund stays approved.
#   2. outbox.print_begun(rid) is durable BEFORE the first receipt byte (sets PRINTING:
#      any later copy is composed as a REPRINT). An approved refund is printed once as
#      an original, whatever power cuts or paper faults happen.
#   3. stream the composer's chunks, honouring XON/XOFF and paced to the line rate
#      (baud/10 bytes a second: a pty or a UART driver would buffer kilobytes that the
#      printer then overruns). Real-time requests are only ever inserted between whole
#      ESC/POS commands, never inside one (Epson: a DLE EOT inside another command's
#      data is taken as data).
#   4. completion check: GS r 1 and GS I 67 (in-band: answered after everything before
#      them has been printed and cut), then DLE EOT 1/2/4. Only a printer that confirms
#      (its model-name frame, paper present, cover closed, no error, online) gets
#      outbox.printed(rid). The model name ("_" name NUL) is learnt before the first job
#      (two identical answers); one noise byte can look like a one-byte GS r answer, but
#      cannot forge that frame. A printer that never answers GS I is confirmed by GS r 1
#      alone (logged: then a noise byte in the wrong place could confirm early).
#   Failure at any point: wait settle_ms, send DLE ENQ 2 (recover, clear the printer's
#   buffers, so the rest of a broken receipt is not printed later), report the reason.
#
# A reader task demultiplexes everything the printer sends: XON/XOFF, the reply to the
# outstanding real-time request (pattern 0xx1xx10), the reply to the outstanding GS r
# (pattern 0xx0xxxx; the two sets do not overlap and exclude XON/XOFF), a GS I frame
# ("_" ... NUL, back to back) while one is expected, and garbage (anything else:
# logged, counted, ignored). A byte that arrives while a real-time request is
# outstanding but violates its fixed bits is counted as untrusted_status; a status
# request answered only by such bytes leaves the printer in state "error".
#
# The print queue is the outbox's set of approved refunds: a boot never prints a
# `printed` one again. At start the driver sends DLE ENQ 2 once, dropping whatever a
# previous run left half-sent in the printer (that refund is still approved with
# PRINTING set: it comes out again in full as a REPRINT). A decline slip printed again
# after a fault is not marked (the composer has no reprint form for slips).
#
# Hardware comes only through the stream handed in (a raw non-blocking tty on the unix
# board, machine.UART on a board): no `machine` here.
import asyncio
import time
from micropython import const
from refund import escpos as P
from refund import receipt
from refund import record as R
from refund import settings, evlog

_XON = const(0x11)
_XOFF = const(0x13)
_ESC = const(0x1B)
_FS = const(0x1C)
_GS = const(0x1D)
_DLE = const(0x10)
_RBUF = const(32)
_NOISE_LOG = const(8)  # garbage bytes logged one by one, then every _NOISE_EVERY-th
_NOISE_EVERY = const(64)
_MAX_SKIP = const(16)  # entries that cannot be composed, remembered (and skipped)
_ID_REQ = b"\x1dI\x43"  # GS I 67: model name, answered in-band as "_" name NUL
_ID_MAX = const(24)  # longest model name kept
_ID_GAP_MS = const(50)  # a frame's bytes come back to back: longer = not a frame
_IDENT_TRIES = const(3)

READY = "ready"
PRINTING = "printing"
PAPER_OUT = "paper_out"
COVER_OPEN = "cover_open"
OFFLINE = "offline"
ABSENT = "absent"
ERROR = "error"

DEFAULTS = {
    "status_ms": 500,  # a real-time status reply must come within this: else absent
    "poll_ms": 1000,  # retry period while the printer is not ready
    "idle_ms": 10000,  # status poll period while there is nothing to print
    "xoff_check_ms": 500,  # XOFF lasting this long: ask the printer why (again)
    "xoff_max_ms": 60000,  # XOFF from a printer reporting ready this long: give up
    "confirm_ms": 30000,  # GS r 1 answer (whole receipt printed) within this
    "settle_ms": 100,  # after a failure, before DLE ENQ 2 (bytes still on the line)
    "chunk": 16,  # bytes per write: a UART FIFO's worth
}

_REFUND = const(1)
_SLIP = const(2)
_NOTICE = const(3)
# Pending notice (cfg pending_notice): for a refund still queued while the host is down
# or after _NOTICE_WAIT_S, accepted within _NOTICE_RECENT_S (the customer may still be at
# the counter; an outage backlog after a reboot gets none). Printed once (F_NOTICE).
_NOTICE_WAIT_S = const(20)
_NOTICE_RECENT_S = const(300)


class Printer:
    def __init__(self, stream, outbox, cfg, log, now, baud=115200, opts=None):
        """stream: the printer's byte stream (asyncio-stream capable); outbox: the
        refund.outbox.Outbox; cfg: terminal config (merchant_name, merchant_id,
        terminal_id, printer_width, tz_min); log(tag, msg, level=...); now(): UTC s."""
        self.o = settings(DEFAULTS, opts, "printer")
        self.s = stream
        self.ob = outbox
        self.cfg = cfg
        self.log = log
        self.now = now
        self.baud = baud
        self._chunk = self.o["chunk"]
        # Line pacing: microseconds of line time per byte x 1000 (integer math).
        self._ns_byte = 10 * 1000000000 // baud
        self._fifo_us = self._chunk * self._ns_byte // 1000
        self._free_at = time.ticks_us()
        self._mv_write = False  # the stream lacks write(buf, off, n): use memoryviews
        self._rs = asyncio.StreamReader(stream)
        self._rbuf = bytearray(_RBUF)
        self._reader_task = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # flow control and replies (written by the reader task)
        self._xoff = False
        self._xon_ev = asyncio.Event()
        self._want_rt = False
        self._rt = -1
        self._rt_ev = asyncio.Event()
        self._want_gsr = False
        self._gsr = -1
        self._gsr_ev = asyncio.Event()
        self._want_id = False  # a GS I 67 answer is expected
        self._idbuf = bytearray(_ID_MAX)
        self._idn = -1  # >= 0: inside a "_...NUL" frame, bytes so far
        self._id_t0 = 0
        self._idframe = None  # last frame while learning the model
        self._id_ok = False  # the model frame came (completion proof)
        self._id_bad = False  # a frame that was not the model came
        self._prev_bad = None  # the previous such frame (the same twice: a new model)
        self._id_ev = asyncio.Event()
        self._model = None  # bytes: the printer's GS I 67 answer, once it agreed twice
        self._ident_tries = 0
        self._kanji = False  # FS & seen in the stream being sent (2-byte characters)
        self._booted = False
        self._why = None  # detail of the last _check() that was not READY
        self._skip = []  # rids that cannot be composed (logged): never block the queue
        self._unsaved = []  # confirmed on paper but outbox.printed() failed: retry that
        self._noticed = []  # pending notices printed but not recorded (F_NOTICE failed)
        self.host_up = None  # set by the app: () -> bool, the sender's view of the host
        # visible state
        self.state = ABSENT
        self.detail = "not checked yet"
        self.rid = None
        self.near_end = False
        self.last_status = None
        self.counts = {"printed": 0, "reprints": 0, "slips": 0, "reports": 0, "notices": 0, "garbage": 0,
                       "untrusted_status": 0, "aborted": 0, "absent": 0, "failed": 0,
                       "bytes": 0, "xoff_count": 0}

    # ---- public API -------------------------------------------------------------

    def wake(self, *_):
        """The outbox changed (use as Outbox.on_change): look for work now."""
        self._wake.set()

    def status(self):
        """For staff and technicians: state, why, current rid, counters."""
        d = dict(self.counts)
        d["state"] = self.state
        d["detail"] = self.detail
        d["rid"] = self.rid
        d["near_end"] = self.near_end
        d["xoff"] = self._xoff
        d["last_status"] = list(self.last_status) if self.last_status else None
        d["model"] = _text(self._model) if self._model else None
        d["stuck"] = list(self._skip)
        return d

    async def run(self):
        """The driver task: forever. Cancel it to stop."""
        self._start()
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
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None

    async def reprint(self, rid):
        """Print an approved or printed refund again, always marked REPRINT; its state
        does not change. Returns {"ok": bool, "state": ..., "error": ...}."""
        e = self.ob.get(rid)
        if e is None:
            return {"ok": False, "state": self.state, "error": "unknown refund %s" % rid}
        if e["state"] != R.APPROVED and e["state"] != R.PRINTED:
            return {"ok": False, "state": self.state,
                    "error": "no receipt for a refund in state %s" % R.NAMES[e["state"]]}
        self._start()
        async with self._lock:
            ok = await self._job(receipt.refund(_rdict(e), self.cfg, True), rid)
        if ok:
            self.counts["reprints"] += 1
        return self._result(ok)

    async def queue_report(self):
        """Staff report of the live outbox entries."""
        self._start()
        async with self._lock:
            ok = await self._job(receipt.queue_report(_Live(self.ob), self.cfg, self.now()), None)
        if ok:
            self.counts["reports"] += 1
        return self._result(ok)

    def _result(self, ok):
        return {"ok": ok, "state": self.state, "error": None if ok else self.detail}

    # ---- the print loop ---------------------------------------------------------

    def _start(self):
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self._reader())

    async def _cycle(self):
        """One step: returns True when a job completed (look for the next at once)."""
        if not self._booted:
            # Whatever a previous run left in the printer (a receipt cut short by a
            # reset, half a command) is dropped: those refunds are still approved
            # with PRINTING set, so they come out again in full as REPRINTs.
            self._booted = True
            await self._clear()
        self._save_unsaved()
        job = self._next_job()
        if job is None:
            st = await self._check()
            self._set(st, self._why)
            return False
        kind, e = job
        return await self._print_entry(kind, e)

    def _next_job(self):
        e = self.ob.next_print(self._skip + self._unsaved)  # both short (<= _MAX_SKIP)
        if e is not None:
            return _REFUND, e
        for seq in self.ob.seqs(R.DECLINED):
            rid = self.ob.rid(seq)
            if rid in self._skip or rid in self._unsaved:
                continue
            e = self.ob.get(rid)
            if e is not None and e["state"] == R.DECLINED and not e["flags"] & R.F_SLIP:
                return _SLIP, e
        if self.cfg.get("pending_notice"):
            e = self._next_notice()
            if e is not None:
                return _NOTICE, e
        return None

    def _next_notice(self):
        # Newest first, from the index: only entries without the flag are read, and the
        # walk stops at the first one accepted too long ago.
        ob = self.ob
        ix = ob.ix
        now = self.now()
        down = self.host_up is not None and not self.host_up()
        i = ix.n - 1
        while i >= 0:
            if ix.state[i] == R.QUEUED and not ix.flags[i] & R.F_NOTICE:
                rid = ob.rid(ix.seq[i])
                e = ob.get(rid)
                if e is None or now - e["created"] > _NOTICE_RECENT_S:
                    return None
                if rid not in self._skip and rid not in self._noticed and \
                        (down or now - e["created"] >= _NOTICE_WAIT_S):
                    return e
            i -= 1
        return None

    async def _print_entry(self, kind, e):
        rid = e["rid"]
        again = bool(e["flags"] & R.F_PRINTING)  # a copy may already be on paper
        r = _rdict(e)
        try:
            if kind == _REFUND:
                gen = receipt.refund(r, self.cfg, again)
            elif kind == _SLIP:
                gen = receipt.decline(r, self.cfg)
            else:
                gen = receipt.pending(r, self.cfg)
            first = next(gen)  # the composer validates before its first chunk
        except Exception as ex:
            self._stuck(rid, "cannot compose: %r" % (ex,))
            return True
        st = await self._check()
        if st != READY:
            self._set(st, self._why)
            return False
        if kind == _NOTICE:
            # Not a receipt: no PRINTING mark; a notice cut short is simply not recorded.
            self.log("printer", "%s: printing pending notice" % rid)
            if not await self._job(gen, rid, first, False):
                return False
            self.counts["notices"] += 1
            evlog.event("notice", rid)
            try:
                self.ob.notice_printed(rid)
            except Exception as ex:  # answered or cancelled meanwhile, or flash trouble
                self.log("printer", "%s: notice not recorded: %r" % (rid, ex), level="WARN")
                if len(self._noticed) >= _MAX_SKIP:
                    self._noticed.pop(0)
                self._noticed.append(rid)  # not again this boot
            return True
        if not again:
            try:
                self.ob.print_begun(rid)  # durable before the first receipt byte
            except Exception as ex:
                self._set(ERROR, "outbox: %r" % (ex,))
                self.log("printer", "%s: print_begun failed: %r" % (rid, ex), level="ERROR")
                return False
        self.log("printer", "%s: printing %s%s" % (
            rid, "refund receipt" if kind == _REFUND else "decline slip",
            " (REPRINT)" if again and kind == _REFUND else ""))
        evlog.event("print_begun", rid, copy="slip" if kind != _REFUND else ("reprint" if again else "original"))
        if not await self._job(gen, rid, first, False):
            return False
        if kind == _REFUND:
            self.counts["printed"] += 1
            if again:
                self.counts["reprints"] += 1
        else:
            self.counts["slips"] += 1
        self._unsaved.append(rid)
        self._save_unsaved()
        return True

    def _save_unsaved(self):
        while self._unsaved:
            rid = self._unsaved[0]
            try:
                st = self.ob.state(rid)
                if st == R.APPROVED or st == R.DECLINED:
                    self.ob.printed(rid)
                    self.log("printer", "%s: printed" % rid)
                    evlog.event("printed", rid)
            except Exception as ex:
                # On paper but not recorded: retried every cycle, never printed again
                # for this reason (the RAM list keeps it out of the queue).
                self._set(ERROR, "outbox: %r" % (ex,))
                self.log("printer", "%s: printed() failed: %r" % (rid, ex), level="ERROR")
                return
            self._unsaved.pop(0)

    def _stuck(self, rid, why):
        self.counts["failed"] += 1
        self.log("printer", "%s: %s; skipped" % (rid, why), level="ERROR", ev=False)
        evlog.event("print_fault", rid, level="E", cause=why)
        if len(self._skip) >= _MAX_SKIP:
            self._skip.pop(0)
        self._skip.append(rid)

    async def _job(self, gen, rid, first=None, check=True):
        """Status check (unless done), stream, confirm. True only if confirmed."""
        if check:
            st = await self._check()
            if st != READY:
                self._set(st, self._why)
                return False
        self.rid = rid
        self._set(PRINTING, rid)
        self._kanji = False
        ok = False
        try:
            if self._model is None and self._ident_tries < _IDENT_TRIES:
                await self._ident()
            ok = await self._stream(gen, first) and await self._confirm()
        except Exception as ex:
            self._set(ERROR, "printing: %r" % (ex,))
            self.log("printer", "job failed: %r" % (ex,), level="ERROR")
        finally:
            self._want_gsr = False
            self._want_id = False
            self.rid = None
        if ok:
            self._set(READY, None)
        else:
            self.counts["aborted"] += 1
            self.log("printer", "%s: not confirmed (%s: %s); stays owed" % (
                rid, self.state, self.detail), level="WARN", ev=False)
            evlog.event("print_fault", rid, level="W", agg=True, cause="%s %s" % (self.state, self.detail))
            await self._clear()
        return ok

    async def _clear(self):
        """Drop what the printer still buffers (DLE ENQ 2), after the line settles."""
        await asyncio.sleep_ms(self.o["settle_ms"])
        await self._raw(P.RECOVER_CLEAR)
        self._xoff = False  # its buffer is empty: a lost XON must not stall us for good
        self._xon_ev.set()

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

    # ---- status ------------------------------------------------------------------

    async def _ask(self, req):
        """One real-time status request: the trusted reply byte, or -1."""
        self._rt = -1
        self._rt_ev.clear()
        self._want_rt = True
        try:
            await self._raw(req)
            await asyncio.wait_for_ms(self._rt_ev.wait(), self.o["status_ms"])
        except asyncio.TimeoutError:
            pass
        finally:
            self._want_rt = False
        return self._rt

    async def _check(self):
        """DLE EOT 1, 2, 4 -> READY / PAPER_OUT / COVER_OPEN / OFFLINE / ERROR / ABSENT."""
        u0 = self.counts["untrusted_status"]
        self._why = None
        b1 = await self._ask(P.STATUS_PRINTER)
        b2 = await self._ask(P.STATUS_OFFLINE) if b1 >= 0 else -1
        b4 = await self._ask(P.STATUS_PAPER) if b2 >= 0 else -1
        if b4 < 0:
            if self.counts["untrusted_status"] > u0:
                self._why = "status replies violate the fixed bits: not trusted"
                return ERROR
            self._why = "no status answer in %d ms" % self.o["status_ms"]
            return ABSENT
        self.last_status = (b1, b2, b4)
        self.near_end = (b4 & 0x0C) == 0x0C
        if b2 & 0x04:
            return COVER_OPEN
        if (b4 & 0x60) == 0x60 or b2 & 0x20:
            return PAPER_OUT
        if b2 & 0x40:
            self._why = "printer error (DLE EOT 2 = 0x%02x)" % b2
            return ERROR
        if b1 & 0x08:
            return OFFLINE
        return READY

    async def _confirm(self):
        """After the final cut: GS r 1 (paper sensor) and, if the printer identified
        itself, GS I 67 (its model name). Both are answered in-band, once everything
        before them is printed. The completion proof is the exact model frame
        "_<model>\0", which line noise cannot fake; a printer without GS I falls back
        to the one-byte GS r 1 answer (weaker: see the top of this file)."""
        model = self._model
        self._gsr = -1
        self._gsr_ev.clear()
        self._want_gsr = True
        self._id_ok = False
        self._id_bad = False
        self._prev_bad = None
        self._want_id = model is not None
        if not await self._put(P.PAPER_SENSOR):
            return False
        if model is not None and not await self._put(_ID_REQ):
            return False
        ev = self._id_ev if model is not None else self._gsr_ev
        ev.clear()
        t0 = time.ticks_ms()
        while not (self._id_ok if model is not None else self._gsr >= 0):
            try:
                await asyncio.wait_for_ms(ev.wait(), self.o["poll_ms"])
            except asyncio.TimeoutError:
                pass
            ev.clear()
            if self._id_ok if model is not None else self._gsr >= 0:
                break
            if self._id_bad:
                self._id_bad = False
                if self._idframe == self._prev_bad:
                    # The same other name twice: not noise but another printer (swapped
                    # by a technician). Its answer is a completion answer all the same.
                    self._model = self._idframe
                    self.log("printer", "printer model now %s" % _text(self._model), level="WARN")
                    break
                # A frame that was not the model name (noise got into it): ask again;
                # the printer answers once it has printed everything before.
                self._prev_bad = self._idframe
                if not await self._put(_ID_REQ):
                    return False
                continue
            st = await self._check()  # still printing, or stopped by a fault?
            if st != READY:
                self._set(st, self._why or "during printing")
                return False
            if time.ticks_diff(time.ticks_ms(), t0) > self.o["confirm_ms"]:
                self._set(ERROR, "no completion answer")
                return False
        # _want_id stays set through the last check: a second model frame (answer to
        # a repeated GS I) is then taken as a frame, never as status bytes.
        self._want_gsr = False
        if self._gsr >= 0 and self._gsr & 0x0C == 0x0C:
            self._set(PAPER_OUT, "paper sensor after the receipt")
            return False
        st = await self._check()
        if st != READY:
            self._set(st, self._why or "at the completion check")
            return False
        return True

    async def _ident(self):
        """GS I 67 twice: the model name, if both answers agree (noise cannot)."""
        self._ident_tries += 1
        a = await self._id_query()
        b = await self._id_query() if a else None
        if a and a == b:
            self._model = a
            self.log("printer", "printer model %s: completion check by GS I 67" % _text(a))
        elif self._ident_tries >= _IDENT_TRIES:
            self.log("printer", "printer does not identify itself (GS I 67): completion "
                     "check by GS r 1 only", level="WARN")

    async def _id_query(self):
        self._idframe = None
        self._id_ev.clear()
        self._want_id = True
        try:
            if await self._put(_ID_REQ):
                await asyncio.wait_for_ms(self._id_ev.wait(), self.o["status_ms"])
        except asyncio.TimeoutError:
            pass
        finally:
            self._want_id = False
        return self._idframe

    # ---- writing -------------------------------------------------------------------

    async def _stream(self, gen, first):
        if first is not None and not await self._put(first):
            return False
        for chunk in gen:
            if not await self._put(chunk):
                return False
        return True

    async def _pace(self):
        while True:
            d = time.ticks_diff(self._free_at, time.ticks_us())
            if d <= self._fifo_us:
                return
            await asyncio.sleep_ms((d - self._fifo_us) // 1000 + 1)

    def _sent(self, n):
        now = time.ticks_us()
        if time.ticks_diff(self._free_at, now) < 0:
            self._free_at = now
        self._free_at = time.ticks_add(self._free_at, n * self._ns_byte // 1000)
        self.counts["bytes"] += n

    def _write(self, data, off, n):
        if not self._mv_write:
            try:
                return self.s.write(data, off, n)
            except TypeError:
                self._mv_write = True
        return self.s.write(memoryview(data)[off:off + n])

    async def _raw(self, data):
        """A real-time command: sent even under XOFF (the printer takes these at once)."""
        off = 0
        n = len(data)
        while off < n:
            k = self._write(data, off, n - off)
            if not k:
                await asyncio.sleep_ms(2)
                continue
            off += k
            self._sent(k)

    async def _put(self, data):
        """In-band bytes: whole commands per write where possible, paced to the line
        rate, stopping on XOFF. False if the printer failed (state says why)."""
        n = len(data)
        off = 0
        while off < n:
            # Piece: whole commands up to `chunk` bytes (a longer command alone).
            end = off
            while end < n:
                k = self._cmd_len(data, end, n)
                if end > off and end + k - off > self._chunk:
                    break
                end += k
            pos = off
            while pos < end:  # inside one piece; only a long command has several writes
                if self._xoff and not await self._wait_xon(pos == off):
                    return False
                await self._pace()
                if self._xoff:
                    continue
                k = self._write(data, pos, min(self._chunk, end - pos))
                if not k:
                    await asyncio.sleep_ms(2)
                    continue
                pos += k
                self._sent(k)
            off = end
        return True

    def _cmd_len(self, b, i, n):
        """Length of the ESC/POS command or character at b[i] (within n)."""
        c = b[i]
        k = 1
        if c == _ESC:
            k = 2 if i + 1 < n and b[i + 1] in b"@2<im" else 3
            if k == 2 and b[i + 1] == 0x40:
                self._kanji = False
        elif c == _FS:
            if i + 1 < n and b[i + 1] == 0x26:
                self._kanji = True
                k = 2
            elif i + 1 < n and b[i + 1] == 0x2E:
                self._kanji = False
                k = 2
            else:
                k = 3
        elif c == _GS:
            m = b[i + 1] if i + 1 < n else 0
            if m == 0x28 and i + 4 < n:  # GS ( X pL pH data
                k = 5 + b[i + 3] + 256 * b[i + 4]
            elif m == 0x6B and i + 2 < n:  # GS k m ...
                if b[i + 2] >= 65:
                    k = 4 + (b[i + 3] if i + 3 < n else 0)
                else:
                    k = 3
                    while i + k < n and b[i + k]:
                        k += 1
                    k += 1
            elif m == 0x56 and i + 2 < n and b[i + 2] in b"ABabgh":
                k = 4
            elif m == 0x76 and i + 7 < n:  # GS v 0 m xL xH yL yH data
                k = 8 + (b[i + 4] + 256 * b[i + 5]) * (b[i + 6] + 256 * b[i + 7])
            else:
                k = 3
        elif c == _DLE:
            k = 3
        elif c >= 0x81 and self._kanji:
            k = 2
        return k if i + k <= n else n - i

    async def _wait_xon(self, safe):
        """Wait for XON. A full buffer drains at paper speed; if XOFF lasts
        xoff_check_ms, ask the printer why (only at a command boundary: `safe`), and
        again every xoff_check_ms: a fault ends the job; a ready printer is waited out
        up to xoff_max_ms. (Not at once: each request takes 3 bytes of a full buffer.)"""
        self.counts["xoff_count"] += 1
        t0 = time.ticks_ms()
        while self._xoff:
            try:
                await asyncio.wait_for_ms(self._xon_ev.wait(), self.o["xoff_check_ms"])
            except asyncio.TimeoutError:
                pass
            if not self._xoff:
                break
            if safe:
                st = await self._check()
                if st != READY:
                    self._set(st, self._why or "during printing")
                    return False
            if time.ticks_diff(time.ticks_ms(), t0) > self.o["xoff_max_ms"]:
                self._set(ERROR, "XOFF for %d ms" % self.o["xoff_max_ms"])
                return False
        return True

    # ---- reading -----------------------------------------------------------------

    async def _reader(self):
        buf = self._rbuf
        while True:
            try:
                n = await self._rs.readinto(buf)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.log("printer", "read failed: %r" % (e,), level="ERROR")
                await asyncio.sleep_ms(200)
                continue
            if not n:
                await asyncio.sleep_ms(10)
                continue
            for i in range(n):
                b = buf[i]
                if b == _XON:
                    self._xoff = False
                    self._xon_ev.set()
                    continue
                if b == _XOFF:
                    self._xoff = True
                    self._xon_ev.clear()
                    continue
                if self._idn >= 0 and (self._idn >= _ID_MAX or time.ticks_diff(
                        time.ticks_ms(), self._id_t0) >= _ID_GAP_MS):
                    self._idn = -1  # the "_" was not the start of a frame: this byte
                    self._noise(0x5F, "garbage")  # is looked at on its own below
                if self._idn >= 0:  # inside an identification frame
                    if b == 0:
                        self._id_end()
                    else:
                        self._idbuf[self._idn] = b
                        self._idn += 1
                elif self._want_id and b == 0x5F:
                    self._idn = 0
                    self._id_t0 = time.ticks_ms()
                elif self._want_rt and (b & 0x93) == 0x12:
                    self._rt = b
                    self._want_rt = False
                    self._rt_ev.set()
                elif self._want_gsr and (b & 0x90) == 0:
                    self._gsr = b
                    self._want_gsr = False
                    self._gsr_ev.set()
                elif self._want_rt:
                    self._noise(b, "untrusted_status")
                else:
                    self._noise(b, "garbage")

    def _id_end(self):
        n = self._idn
        self._idn = -1
        m = self._model
        if m is None:
            self._idframe = bytes(self._idbuf[:n])
            self._id_ev.set()
            return
        ok = n == len(m)
        i = 0
        while ok and i < n:
            ok = self._idbuf[i] == m[i]
            i += 1
        if ok:
            self._id_ok = True
        else:
            self._idframe = bytes(self._idbuf[:n])
            self._id_bad = True
            self.counts["garbage"] += 1
            self.log("printer", "answer %s to GS I 67 is not the model %s"
                     % (_text(self._idframe), _text(m)), level="WARN")
        self._id_ev.set()

    def _noise(self, b, what):
        c = self.counts
        c[what] += 1
        k = c[what]
        if k <= _NOISE_LOG or k % _NOISE_EVERY == 0:
            self.log("printer", "%s byte 0x%02x from the printer ignored (%d so far)"
                     % (what, b, k), level="WARN")


class _Live:
    """The live entries for the queue report, read from the outbox on each pass (a list
    of 500 dicts would not fit a board's heap)."""

    def __init__(self, ob):
        self.ob = ob

    def __iter__(self):
        for e in self.ob.entries():
            yield {"rid": e["rid"], "state": e["state_name"], "amount": e["amount"],
                   "currency": e["currency"], "ts": e["created"]}


def _rdict(e):
    """Composer input from an outbox entry (the composer names differ)."""
    return {"rid": e["rid"], "stan": e["stan"], "amount": e["amount"],
            "currency": e["currency"], "orrn": e["orrn"], "rrn": e["rrn"], "auth": e["auth"],
            "operator": e["op"], "ts": e["created"], "state": R.NAMES[e["state"]],
            "code": e["code"]}


def _text(b):
    try:
        return b.decode()
    except Exception:
        return repr(b)
