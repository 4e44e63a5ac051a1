# ECR command handling: REFUND, QUERY, CANCEL, LIST; SETTLE in refund.settlecmd (docs/ecr-link.md).
# Guards before anything is queued: request form, test credentials on a real board,
# amount cap, allowed currency, original RRN, operator PIN, supervisor above the
# threshold / for a confirmed duplicate / for CANCEL, the duplicate guard (same
# original RRN and amount within duplicate_window_s), then the outbox's own limits.
# An ECR resend (same ECR seq, same content) gets the same answer: the same rid and its
# current state, never a second refund. The ECR seq is kept in the entry's `ecr` field,
# so this holds across a power cut between the queued record and the reply.
# PINs are never logged, stored or echoed.
import os
import gc
import asyncio
import hashlib
from micropython import const
from refund import record as R
from refund import config, evlog, rules, settlecmd
from refund.chars import digits
from refund.recent import Recent, recent_cap
from refund.errors import Refused, BadTransition
from refund.staff import OPERATOR, SUPERVISOR

_CACHE_N = const(8)  # recent refusals kept so a resend gets the same answer
_CACHE_S = const(300)
_LIST_PAGE = const(32)
_AMOUNT_DIGITS = const(12)
# states in which an earlier refund makes a new one a possible duplicate
_DUP_STATES = (R.QUEUED, R.APPROVED, R.PRINTED)
_STAFF_CMDS = ("REFUND", "CANCEL", "REPRINT", "REPORT", "SETTLE")  # PINs: resends answered from the cache
_ONCE_CMDS = ("REPRINT", "REPORT", "SETTLE")  # a resend must not print (or settle) twice
_JOB_TRIES = const(3)
_JOB_WAIT_S = const(60)



def _field(req, k):
    v = req.get(k)
    if v is None:
        return ""
    return v if isinstance(v, str) else str(v)


def _ecr_num(s):
    return int(s) if digits(s) else 0


def _refuse(code, text):
    return {"err": code, "text": text}


class Intake:
    """Intake(outbox, staff, cfg, log, now).handle(req) -> reply dict.
    req: field name -> value (strings as decoded from an ECR frame; ints are accepted)
    with "seq" and "cmd". The reply carries "state" (and "rid") or "err" + "text"."""

    def __init__(self, outbox, staff, cfg, log, now, recent_max=None, printer=None, host_up=None,
                 recent=None, settle=None):
        """printer: refund.printer.Printer (None: not wired); host_up(): bool, for STATUS;
        recent: a Recent made earlier (the app makes it before recovery, while the heap is
        whole), else one of recent_max (default recent_cap()) entries is made here;
        settle: refund.settlecmd.Gate (None: SETTLE is not available), kept by settlecmd
        (one attribute more would grow this object's dict by 256 B)."""
        self.ob = outbox
        settlecmd.gate = settle
        self.printer = printer
        self.host_up = host_up
        self.staff = staff
        self.cfg = cfg
        self.log = log
        self.now = now
        self.window = cfg.get("duplicate_window_s", 86400)
        self.currencies = cfg.get("currencies") or [cfg.get("currency", 156)]
        self.max_amount = cfg.get("limits", {}).get("max_amount", outbox.cfg["max_amount"])
        self.sup_above = cfg.get("supervisor_above", 0)
        self.refuse_all = False
        if not cfg.get("bench") and config.test_credentials(cfg):
            self.refuse_all = True
            log("intake", "TEST CREDENTIALS (bench staff 01/99) configured on a board that is "
                "not a bench: every refund is refused until the staff list is replaced",
                level="ERROR")
        self._salt = os.urandom(16)  # keys the refusal cache digests (they cover PINs)
        self._cache = []  # [seq, digest, time, reply] of recent refusals
        self.recent = recent or Recent(recent_max or recent_cap(outbox.cfg))  # 8 B each
        self._warned = False
        self.stats = {"refunds": 0, "refused": 0, "resends": 0, "duplicates": 0}
        self._load_recent()

    # ---- recent refunds (duplicate guard and resend recognition) ---------------------

    def _load_recent(self):
        # Straight into the arrays: no per-entry objects survive (a board's heap is small).
        since = self.now() - self.window
        for src in (self.ob.history(), self.ob.journal_entries(), self.ob.entries()):
            for e in src:
                if e["created"] >= since:
                    self.recent.add(e["created"], e["amount"], e["orrn"], e["seq"])

    def _heap_ok(self):
        # What is already accepted needs RAM to reach the host and the printer: a new
        # refund is refused while less than heap_headroom would be left after it.
        need = self.cfg.get("heap_headroom", 0)
        if gc.mem_free() >= need:
            return True
        gc.collect()
        if gc.mem_free() >= need:
            return True
        self.log("intake", "heap free %d below headroom %d: refund refused" % (gc.mem_free(), need),
                 level="WARN")
        return False

    def _candidates(self, amount, orrn, ecr=0):
        """Entries accepted within the window with this amount and original RRN (and
        ECR seq), confirmed on flash: full entry dicts, oldest first."""
        since = self.now() - self.window
        rc = self.recent
        # A refund accepted on flash whose intake did not finish (the heap ran out after
        # the durable write) is not in the RAM list yet: add the newest live entries it
        # has not seen, or its ECR resend would become a second refund.
        for s in self.ob.seqs(None, rc.top):
            e = self.ob.get(self.ob.rid(s))
            if e is not None:
                rc.add(e["created"], e["amount"], e["orrn"], s)
        rc.prune(since)
        seqs = rc.find(amount, orrn)
        if not seqs and rc.cut >= since:
            # Slow path: the RAM list had to drop refunds still inside the window.
            if not self._warned:
                self._warned = True
                self.log("intake", "more than %d refunds within the duplicate window: "
                         "duplicate and resend checks now read the flash" % rc.cap, level="WARN")
            got = {}
            for src in (self.ob.history(), self.ob.journal_entries(), self.ob.entries()):
                for e in src:
                    if e["created"] >= since and e["amount"] == amount and e["orrn"] == orrn:
                        got[e["seq"]] = 1
            seqs = sorted(got)
        out = []
        for seq in seqs:
            e = self.ob.get(self.ob.rid(seq))
            if e is not None and e["created"] >= since and e["amount"] == amount and \
                    e["orrn"] == orrn and (not ecr or _ecr_num(e["ecr"]) == ecr):
                out.append(e)
        return out

    # ---- refusal cache ---------------------------------------------------------------

    def _digest(self, req):
        h = hashlib.sha256(self._salt)
        for k in sorted(req):
            h.update(k + "=" + _field(req, k) + "\x1c")
        return h.digest()

    def _cached(self, seq, dg):
        now = self.now()
        for c in self._cache:
            if c[0] == seq and c[1] == dg and now - c[2] <= _CACHE_S:
                rep = dict(c[3])
                rep["resend"] = 1
                return rep
        return None

    def _cache_put(self, seq, dg, rep):
        self._cache.append([seq, dg, self.now(), rep])
        if len(self._cache) > _CACHE_N:
            self._cache.pop(0)

    # ---- commands --------------------------------------------------------------------

    def handle(self, req):
        """One ECR request -> reply dict. Never raises."""
        cmd = _field(req, "cmd")
        seq = _field(req, "seq")
        try:
            if not digits(seq):
                rep = _refuse("bad_request", "seq must be 1 to 9 digits")
            elif cmd in _STAFF_CMDS:
                dg = self._digest(req)
                rep = self._cached(seq, dg)
                if rep is None:
                    rep = self._staff_cmd(cmd, req, seq)
                    if "err" in rep or cmd in _ONCE_CMDS:
                        self._cache_put(seq, dg, rep)
                else:
                    self.stats["resends"] += 1
                    self.log("intake", "seq %s: resend of %s: same answer %s"
                             % (seq, cmd, rep.get("err", "as before")))
            elif cmd == "QUERY":
                rep = self._query(req)
            elif cmd == "LIST":
                rep = self._list(req)
            elif cmd == "STATUS":
                rep = self.summary()
            else:
                rep = _refuse("unknown_command", "unknown command (REFUND, QUERY, CANCEL, "
                              "LIST, STATUS, REPRINT, REPORT, SETTLE)")
        except MemoryError as e:
            # Not cached: the ECR's resend of this seq is handled afresh (and finds the
            # refund if it was accepted before the heap ran out).
            self.log("intake", "seq %s %s failed: %r" % (seq, cmd, e), level="ERROR")
            rep = _refuse("memory", "terminal memory low: request not processed, send it again")
        except Exception as e:
            self.log("intake", "seq %s %s failed: %r" % (seq, cmd, e), level="ERROR")
            rep = _refuse("internal", "terminal error: request not processed")
        if "err" in rep:
            self.stats["refused"] += 1
        rep["seq"] = seq
        if cmd:
            rep["cmd"] = cmd
        return rep

    def _staff_cmd(self, cmd, req, seq):
        if cmd == "REFUND":
            return self._refund(req, seq)
        if cmd == "CANCEL":
            return self._cancel(req)
        if cmd == "SETTLE":
            return settlecmd.ecr_settle(self, req)
        return self._print_cmd(cmd, req)

    # ---- printer and status (staff) --------------------------------------------------

    def _print_cmd(self, cmd, req):
        rid = _field(req, "rid")
        if cmd == "REPRINT" and not rid:
            return _refuse("bad_request", "rid is required")
        op = _field(req, "op")
        if not op or not _field(req, "pin"):
            return _refuse("bad_request", "operator id and PIN are required")
        try:
            self.staff.check(op, _field(req, "pin"), OPERATOR)
        except Refused as r:
            return _refuse(r.code, r.text)
        if self.printer is None:
            return _refuse("no_printer", "no printer is wired to this terminal")
        if cmd == "REPORT":
            asyncio.create_task(self.print_job(self.printer.queue_report, "queue report", op))
            return {"print": "started", "total": self.ob.live}
        e = self.ob.get(rid)
        if e is None:
            return _refuse("unknown_rid", "no refund %s" % rid[:16])
        if e["state"] != R.PRINTED:
            # An approved refund's receipt is still owed: the printer prints it (as an
            # original, or REPRINT if a try was cut short) without being asked.
            return _refuse("no_receipt", "refund %s is %s: no receipt to reprint"
                           % (rid, R.NAMES[e["state"]]))
        asyncio.create_task(self.print_job(lambda: self.printer.reprint(rid), "reprint " + rid, op))
        rep = self._reply_entry(e["state"], rid, e)
        rep["print"] = "started"
        return rep

    async def print_job(self, job, what, op):
        """job(): a coroutine printing it. A print a fault cut short (paper, cover, a
        full heap) is tried again when the printer is ready, up to _JOB_TRIES times:
        staff asked for it once."""
        self.log("intake", "%s requested by staff %s" % (what, op))
        for attempt in range(_JOB_TRIES):
            try:
                r = await job()
            except Exception as err:  # noqa: the printer task's own state already says why
                r = {"ok": False, "error": repr(err)}
            if r["ok"] or attempt == _JOB_TRIES - 1:
                break
            for _ in range(_JOB_WAIT_S):  # until the fault clears
                await asyncio.sleep_ms(1000)
                if self.printer.state == "ready":
                    break
        self.log("intake", "%s: %s" % (what, "printed" if r["ok"] else "failed: %s" % r["error"]),
                 level="INFO" if r["ok"] else "WARN")

    def summary(self):
        st = self.ob.stats()
        gc.collect()  # "heap" is what is really free, not what garbage happens to leave
        rep = {"live": st["live"], "pending": st["pending"], "stale": 0, "heap": gc.mem_free(),
               "host": "unknown" if self.host_up is None else ("up" if self.host_up() else "down")}
        bi = self.ob.batch_info()  # the open batch: number, count and total per currency
        rep["batch"] = "%06d" % bi["open"]
        t = bi["totals"].get(bi["open"]) or {}
        for cur in t:
            rep["bcount_%03d" % cur], rep["btotal_%03d" % cur] = t[cur]
        # Entry numbers grow with time: the live entries are walked oldest first.
        for e in self.ob.entries():
            if "oldest" not in rep:
                rep["oldest"] = max(0, self.now() - e["created"])
            if not e["stale"]:
                break
            rep["stale"] += 1
        settlecmd.status_fields(rep, settlecmd.gate)
        if self.printer is None:
            rep["printer"] = "none"
        else:
            p = self.printer.status()
            rep["printer"] = p["state"]
            if p["detail"]:
                rep["pdetail"] = str(p["detail"])[:64]  # ecr.encode makes it printable
            if p["rid"]:
                rep["prid"] = p["rid"]
        return rep

    def _reply_entry(self, state, rid, e=None):
        rep = {"state": R.NAMES[state], "rid": rid}
        if e:
            for k in ("amount", "currency", "orrn", "op", "sup"):
                if e.get(k) not in (None, ""):
                    rep[k] = e[k]
        return rep

    def _refund(self, req, seq):
        ecr_ref = str(int(seq))  # kept in the entry's ecr field (<= 16 characters)
        a = _field(req, "amount")
        if not digits(a, 1, _AMOUNT_DIGITS):
            return _refuse("bad_amount", "amount must be 1 to %d digits, minor units" % _AMOUNT_DIGITS)
        amount = int(a)
        c = _field(req, "currency")
        if c == "":
            currency = self.cfg.get("currency", 156)
        else:
            currency = int(c) if digits(c, 1, 3) else None
        try:
            rules.positive(amount)
            rules.currency(currency)
        except Refused as r:
            return _refuse(r.code, r.text)
        orrn = _field(req, "orrn")
        op = _field(req, "op")
        sup = _field(req, "sup")
        dup = _field(req, "dup")
        if dup not in ("", "0", "1"):
            return _refuse("bad_request", "dup must be 0 or 1")

        # An ECR resend of a refund already accepted: same rid, current state.
        for e in self._candidates(amount, orrn, int(seq)):
            if e["currency"] == currency and e["op"] == op:
                self.stats["resends"] += 1
                self.log("intake", "seq %s: ECR resend of %s (%s)" % (seq, e["rid"], e["state_name"]))
                rep = self._reply_entry(e["state"], e["rid"])
                rep["resend"] = 1
                return rep

        if not self._heap_ok():
            return _refuse("memory", "terminal memory low: new refunds refused, queued ones "
                           "keep going")
        if self.refuse_all:
            return _refuse("test_credentials", "test staff credentials are configured on a "
                           "real terminal: refunds are refused until they are replaced")
        try:
            rules.within(amount, self.max_amount)
            if currency not in self.currencies:
                raise Refused("bad_currency", "currency %d is not accepted here" % currency)
            rules.orrn(orrn)
        except Refused as r:
            return _refuse(r.code, r.text)
        if not op or not _field(req, "pin"):
            return _refuse("bad_request", "operator id and PIN are required")
        try:
            role = self.staff.check(op, _field(req, "pin"), OPERATOR)
            need_sup = amount > self.sup_above or dup == "1"
            if sup:
                self.staff.check(sup, _field(req, "spin"), SUPERVISOR)
            elif need_sup and role == SUPERVISOR:
                sup = op  # a supervisor at the till approves their own refund
            elif need_sup:
                if dup == "1":
                    return _refuse("supervisor_required", "a supervisor must confirm a duplicate")
                return _refuse("supervisor_required", "amount %d above %d needs a supervisor"
                               % (amount, self.sup_above))
        except Refused as r:
            return _refuse(r.code, r.text)

        for e in self._candidates(amount, orrn):
            if e["state"] in _DUP_STATES:
                rid = e["rid"]
                if dup == "1":
                    self.log("intake", "seq %s: possible duplicate of %s confirmed by supervisor %s"
                             % (seq, rid, sup))
                    break
                self.stats["duplicates"] += 1
                self.log("intake", "seq %s: possible duplicate of %s (%s) refused"
                         % (seq, rid, e["state_name"]), level="WARN")
                return _refuse("possible_duplicate", "refund %s for the same original RRN and "
                               "amount is %s; a supervisor must confirm" % (rid, e["state_name"]))
        try:
            e = self.ob.accept(amount, currency, orrn, op, sup, ecr_ref)
        except Refused as r:
            self.log("intake", "seq %s: refused by the outbox: %s" % (seq, r.code), level="WARN")
            return _refuse(r.code, r.text)
        self.recent.add(e["created"], amount, orrn, e["seq"])
        self.stats["refunds"] += 1
        self.log("intake", "seq %s: %s queued, %d (currency %d), op %s%s" % (
            seq, e["rid"], amount, currency, op, (", supervisor " + sup) if sup else ""))
        evlog.event("captured", e["rid"], op=op, sup=sup or None, amount=amount, cur=currency,
                    orrn=orrn, ecr=seq)
        return self._reply_entry(R.QUEUED, e["rid"], e)

    def _query(self, req):
        rid = _field(req, "rid")
        e = self.ob.get(rid) if rid else None
        if e is None:
            return _refuse("unknown_rid", "no refund %s" % rid[:16])
        rep = self._reply_entry(e["state"], e["rid"], e)
        for k in ("code", "rrn", "auth"):
            if e.get(k):
                rep[k] = e[k]
        rep["created"] = e["created"]
        if e.get("stale"):
            rep["stale"] = 1
        return rep

    def _cancel(self, req):
        rid = _field(req, "rid")
        sup = _field(req, "sup")
        if not rid:
            return _refuse("bad_request", "rid is required")
        if not sup or not _field(req, "spin"):
            return _refuse("supervisor_required", "CANCEL needs a supervisor id and PIN")
        try:
            self.staff.check(sup, _field(req, "spin"), SUPERVISOR)
        except Refused as r:
            return _refuse(r.code, r.text)
        try:
            e = self.ob.cancel(rid)
        except BadTransition:
            e = self.ob.get(rid)
            if e is None:
                return _refuse("unknown_rid", "no refund %s" % rid[:16])
            if e["state"] != R.CANCELLED:
                return _refuse("cannot_cancel", "refund %s is %s: it cannot be cancelled"
                               % (rid, R.NAMES[e["state"]]))
            return self._reply_entry(e["state"], rid, e)
        except OSError as err:
            return _refuse("flash_error", "could not record the cancel (%s)" % err)
        self.log("intake", "%s %s by supervisor %s" % (rid, R.NAMES[e["state"]], sup))
        evlog.event("cancel", rid, by=sup, to=R.NAMES[e["state"]])
        return self._reply_entry(e["state"], rid, e)

    def _list(self, req):
        f = _field(req, "from")
        if f and not digits(f, 1, 6):
            return _refuse("bad_request", "from must be a number")
        start = int(f) if f else 0
        ob = self.ob
        items = []
        total = 0
        for seq in ob.seqs(None):  # one page of strings, never a list of every rid
            if start <= total < start + _LIST_PAGE:
                rid = ob.rid(seq)
                items.append("%s:%s" % (rid, R.NAMES[ob.state(rid)]))
            total += 1
        rep = {"total": total, "items": ",".join(items)}
        if start + len(items) < total:
            rep["next"] = start + len(items)
        return rep
