# End-of-day settlement task (docs/host-link.md "Settlement", docs/settlement.md).
# Started by a supervisor (ECR SETTLE), a technician (service link `settle`) or the
# daily `settle_at`; one settlement at a time, resumed after a power cut:
#   1. cut the open batch (one durable 'B' record; new refunds join the next batch);
#   2. wait until no refund of the cut batch has an unknown outcome (the sender
#      resolves them; host down: "settlement waiting: host unreachable, N unresolved");
#   3. fix the totals per currency and take every STAN it will use, durably (state
#      file): a resumed settlement repeats the same STANs;
#   4. 0500 920000 per currency -> 00 (closed for it) or 95;
#   5. on 95: the upload list (every approved refund of the batch in those currencies)
#      written once to flash, 0320/0321 for each (several outstanding), 0330s name the
#      differences; then 0500 960000 -> 00, `extra=` names refunds only the host has;
#   6. every currency answered 00 (durably) -> the batch closes (outbox 'B' record);
#   7. the slip prints (begun durably first: a second copy says REPRINT), then the
#      state file is replaced by the last settlement's summary.
# The state file is rewritten whole (tmp + rename: littlefs renames atomically) at
# each step, a handful of writes per settlement whatever the batch size.
import asyncio
import gc
import json
import os
import time
from micropython import const
from refund import batch as B
from refund import evlog, settlemsg as S
from refund.hostlink import TIMEOUT
from refund.journal import exists, remove
from refund.receipt import civil
from refund.settlecmd import IDLE, last_summary, read_state

WAITING = "waiting"  # unknown outcomes in the cut batch, or the host unreachable
RECON = "reconciling"
UPLOAD = "uploading"
CLOSING = "closing"
SLIP = "slip"  # closed; the slip is owed (printer not ready)

_KEEP = const(40)  # differences kept by rid for the slip and status (all are events)
_RETRY_MS = const(1000)
_RETRY_CAP_MS = const(30000)
_POLL_MS = const(1000)


def _f7(t):
    y, mo, d, h, mi, s = civil(t)
    return "%02d%02d%02d%02d%02d" % (mo, d, h, mi, s)


class Settlement:
    def __init__(self, ob, link, sender, cfg, log, now, printer=None):
        """ob: the Outbox (its root holds the state files); link: hostlink.Link;
        sender: the Sender (host_up, its cfg and heap gate); cfg: terminal config."""
        self.ob = ob
        self.link = link
        self.sender = sender
        self.cfg = cfg
        self.log = log
        self.now = now
        self.printer = printer
        self._path = ob.root + "/settle"
        self._up = ob.root + "/settle.up"
        self._wake = asyncio.Event()
        self.phase = IDLE
        self.detail = ""
        self.unresolved = 0
        self.uploaded = 0
        self.took = {}  # ms of the last collect pass and upload (bench, status)
        self.st = read_state(self._path)  # the running settlement, None if none
        self.last = read_state(self._path + ".last")  # summary of the last one closed
        if self.st is not None and self.last is not None and self.last["b"] == self.st["b"]:
            self._drop()  # it ended: the power went before its state file was removed
        self._resumed = self.st is not None
        if self.st is None and ob.bt.cut:
            # Cut, but the state file never landed (power cut between the two writes).
            self._begin(ob.bt.cut, "resumed", 0)
            self._resumed = True
        if self.st is not None:
            log("settle", "batch %06d: settlement resumes" % self.st["b"])

    # ---- durable state ----------------------------------------------------------------

    def _save(self, d=None, p=None):
        p = p or self._path
        with open(p + ".tmp", "w") as f:
            json.dump(self.st if d is None else d, f)
        os.rename(p + ".tmp", p)

    def _begin(self, b, by, day):
        self.st = {"b": b, "by": by, "t0": self.now(), "day": day, "diffs": [], "diff_n": 0}
        self._save()

    # ---- starting ---------------------------------------------------------------------

    def start(self, by, day=0):
        """Start settling the open batch -> (started: bool, batch). A settlement already
        running is not started again: (False, its batch). OSError: flash."""
        if self.st is not None:
            return False, self.st["b"]
        b = self.ob.cut()  # durable first: refunds first sent from now on join the next batch
        self._begin(b, by, day)
        self._resumed = False
        self.log("settle", "batch %06d: settlement started by %s" % (b, by))
        evlog.event("settle_start", batch="%06d" % b, by=by)
        self._wake.set()
        return True, b

    def wake(self, *_):
        self._wake.set()

    def status(self):
        """For STATUS and the service link: phase, batch, detail, progress."""
        d = {"phase": self.phase, "detail": self.detail}
        st = self.st
        if st is not None:
            d["batch"] = st["b"]
            d["unresolved"] = self.unresolved
            d["uploaded"] = self.uploaded
            d["diff_n"] = st["diff_n"]
        if self.last is not None:
            d["last"] = last_summary(self.last)
        return d

    # ---- the task ---------------------------------------------------------------------

    async def run(self):
        """Until no settlement is left (refund.settlecmd.Gate then unloads this module)."""
        while self.st is not None:
            try:
                await self._settle()
            except MemoryError:
                gc.collect()
                self.detail = "terminal memory low: settlement continues shortly"
                self.log("settle", self.detail, level="WARN")
                await asyncio.sleep_ms(_RETRY_MS)
            except OSError as e:
                self.detail = "flash error: %s" % e
                self.log("settle", self.detail, level="ERROR")
                await asyncio.sleep_ms(_RETRY_CAP_MS)

    async def _settle(self):
        st = self.st
        b = st["b"]
        if "cur" not in st:
            await self._resolve(b)
            self._fix(b)
        curs = sorted(st["cur"])
        for c in curs:
            r = st["cur"][c]
            if r["r1"] is None:
                res = await self._recon(b, c, r, S.FIRST)
                r["r1"] = res["code"]
                if res["code"] == "00":
                    r["date"] = res["date"]
                self._save()
        if not st.get("up") and any(st["cur"][c]["r1"] == "95" for c in curs):
            await self._upload(b, [c for c in curs if st["cur"][c]["r1"] == "95"])
        for c in curs:
            r = st["cur"][c]
            if r["r1"] == "95" and r.get("r2") is None:
                res = await self._recon(b, c, r, S.AFTER_UPLOAD)
                for rid in res["extra"]:
                    self._diff(b, rid, "extra", None, int(c))
                st["diff_n"] += res["extra_n"] - len(res["extra"])
                r["r2"], r["date"] = "00", res["date"]
                self._save()
        if not st.get("closed"):
            self.phase, self.detail = CLOSING, ""
            self.ob.close(b)  # False: closed already (a power cut right after)
            st["closed"] = self.now()
            self._save()
            self.log("settle", "batch %06d closed: %s" % (b, self._totals_text()))
            evlog.event("settle_closed", batch="%06d" % b, diffs=st["diff_n"])
        await self._slip(b)
        self._finish(b)

    def _totals_text(self):
        cur = self.st["cur"]
        return ", ".join("%s %d for %d" % (c, cur[c]["n"], cur[c]["t"]) for c in sorted(cur))

    async def _resolve(self, b):
        """Until no refund of batch b has an unknown outcome."""
        kicked = False
        while True:
            n = len(B.unresolved(self.ob, b))
            self.unresolved = n
            if not n:
                return
            self.phase = WAITING
            why = "host unreachable, " if not self.sender.host_up else ""
            d = "settlement waiting: %s%d refunds unresolved" % (why, n)
            if d != self.detail:
                self.detail = d
                self.log("settle", "batch %06d: %s" % (b, d), level="WARN" if why else "INFO")
            if not kicked:
                self.sender.retry_now()  # resolve them now, not at their backoff
                kicked = True
            self._wake.clear()
            try:
                await asyncio.wait_for_ms(self._wake.wait(), _POLL_MS)
            except asyncio.TimeoutError:
                pass

    def _fix(self, b):
        """The batch's totals are final (nothing unresolved): fix them and the STANs."""
        tot = self.ob.batch_info()["totals"].get(b) or {}
        if not tot:  # no refund approved: still settle, the host may have some
            tot = {self.cfg.get("currency", 156): (0, 0)}
        cur = {}
        for c in tot:
            n, t = tot[c]
            cur["%03d" % c] = {"n": n, "t": t, "s1": self.ob.take_stan(), "s2": self.ob.take_stan(),
                               "r1": None}
        self.st["cur"] = cur
        self._save()

    async def _wait_retry(self, attempt, why):
        # The sender's backoff base (host_link.backoff_base_ms), doubling, at most 30 s.
        self.detail = "settlement waiting: %s" % why
        ms = min(_RETRY_CAP_MS, self.sender.cfg["backoff_base_ms"] << min(attempt, 6))
        await asyncio.sleep_ms(ms)

    async def _ask(self, req, what, attempt):
        """One request -> the answer, or None after waiting (repeat it)."""
        try:
            ans = await self.link.request(req, self.sender.cfg["response_ms"])
        except OSError:
            await self._wait_retry(attempt, "host unreachable")
            return None
        if ans is None or ans == TIMEOUT:
            evlog.event("settle_retry", level="W", agg=True, what=what,
                        cause="timeout" if ans == TIMEOUT else "connection lost")
            await self._wait_retry(attempt, "no answer to %s" % what)
            return None
        return ans

    async def _until(self, build, check, rid=""):
        """build(repeat) -> request; sent until check(request, answer) takes an answer
        (its result). Refused answers are no answer: logged, repeated later."""
        repeat = self._resumed
        attempt = 0
        while True:
            req = build(repeat)
            repeat = True
            ans = await self._ask(req, req["t"], attempt)
            attempt += 1
            if ans is None:
                continue
            try:
                return check(req, ans)
            except S.NoAnswer as e:
                self.log("settle", "answer to %s %s not taken: %s; repeating" % (req["t"], rid, e.reason),
                         level="WARN", ev=False)
                evlog.event("settle_noanswer", rid, level="W", mti=req["t"], reason=e.reason)
                await self._wait_retry(attempt, "host answer not taken (%s)" % e.reason)

    async def _recon(self, b, c, r, phase):
        first = phase == S.FIRST
        stan = r["s1"] if first else r["s2"]
        self.phase = RECON
        self.detail = "batch %06d currency %s: %s" % (b, c, "reconciling" if first else "after upload")
        t = self.sender
        res = await self._until(lambda rep: S.build_0500(t.tid, t.mid, int(c), b, r["n"], r["t"], stan,
                                                         _f7(self.now()), phase, rep), S.check_0510)
        evlog.event("settle_answer", batch="%06d" % b, cur=c, phase=phase, code=res["code"])
        return res

    # ---- upload -----------------------------------------------------------------------

    def _collect(self, b, curs):
        # One pass without awaiting, so no other task changes the outbox under it; the
        # list lives on flash (a 500-refund batch would not fit the heap).
        n = 0
        with open(self._up + ".tmp", "w") as f:
            for c in curs:
                for e in B.approved(self.ob, b, int(c)):
                    f.write(json.dumps([e["rid"], e["orrn"], e["amount"], e["currency"], e["stan"],
                                        e["created"], e["rrn"], e["auth"]]))
                    f.write("\n")
                    n += 1
        os.rename(self._up + ".tmp", self._up)
        return n

    async def _upload(self, b, curs):
        st = self.st
        self.phase = UPLOAD
        t0 = time.ticks_ms()
        if not exists(self._up):
            n = self._collect(b, curs)
            self.took["collect_ms"] = time.ticks_diff(time.ticks_ms(), t0)
            want = sum(st["cur"][c]["n"] for c in curs)
            self.log("settle", "batch %06d: uploading %d refunds (list made in %d ms)%s"
                     % (b, n, self.took["collect_ms"], "" if n == want else
                        ": the totals count %d, the host will name the rest" % want),
                     level="INFO" if n == want else "ERROR")
            t0 = time.ticks_ms()
        st["diffs"], st["diff_n"] = [], 0  # an upload cut short is made again in full
        self.uploaded = 0
        gc.collect()
        t = self.sender
        spare = gc.mem_free() - t.heap_floor
        w = max(1, min(t.cfg["window"], spare // t.cfg["request_heap"]))
        self._bad = None
        with open(self._up) as f:
            await asyncio.gather(*[self._worker(b, f) for _ in range(w)])
        if self._bad is not None:
            # Never close on a partial upload (the host would call the rest "extra"):
            # make the list again and upload it again, 0321 repeats being harmless.
            remove(self._up)
            raise OSError("upload list unreadable: %r" % (self._bad,))
        self.took["upload_ms"] = time.ticks_diff(time.ticks_ms(), t0)
        self.took["window"] = w
        st["up"] = 1
        self._save()
        evlog.flush()
        self.log("settle", "batch %06d: upload done, %d differences" % (b, st["diff_n"]))

    async def _worker(self, b, f):
        # Never raises (but for cancellation): the other workers share the file.
        while True:
            try:
                line = f.readline()
                if not line:
                    return
                a = json.loads(line)
                e = {"rid": a[0], "orrn": a[1], "amount": a[2], "currency": a[3], "stan": a[4],
                     "created": a[5], "rrn": a[6], "auth": a[7]}
            except (OSError, ValueError, IndexError) as x:
                self._bad = x
                return
            while True:
                try:
                    await self._up_one(b, e)
                    break
                except MemoryError:
                    gc.collect()
                    await asyncio.sleep_ms(_RETRY_MS)
            self.uploaded += 1
            self.detail = "batch %06d: %d refunds uploaded" % (b, self.uploaded)

    async def _up_one(self, b, e):
        t = self.sender
        v = await self._until(lambda rep: S.build_0320(t.tid, t.mid, b, e, _f7(self.now()), t.localtime, rep),
                              S.check_0330, e["rid"])
        if v["host"] != "ok":
            self._diff(b, e["rid"], v["host"], v["amount"], e["currency"])

    def _diff(self, b, rid, what, amount, cur):
        st = self.st
        st["diff_n"] += 1
        if len(st["diffs"]) < _KEEP:
            st["diffs"].append([rid, what, amount, cur])
        evlog.event("settle_diff", rid, level="W", batch="%06d" % b, what=what,
                    host="" if amount is None else amount, cur="%03d" % cur)
        self.log("settle", "batch %06d: difference %s %s" % (b, rid, what), level="WARN", ev=False)

    # ---- slip and end -----------------------------------------------------------------

    def slip_input(self):
        st = self.st
        cur = st["cur"]
        dates = [cur[c].get("date") or "" for c in sorted(cur)]
        return {"batch": st["b"], "ts": st.get("closed", 0), "date": max(dates) if dates else "",
                "totals": [(int(c), cur[c]["n"], cur[c]["t"]) for c in sorted(cur)],
                "diffs": [tuple(d) for d in st["diffs"]], "diff_n": st["diff_n"]}

    async def _slip(self, b):
        p = self.printer
        if p is None:
            self.log("settle", "batch %06d: no printer wired, no settlement slip" % b, level="WARN")
            return
        from refund import settleslip

        while True:
            si = self.slip_input()
            si["again"] = bool(self.st.get("slip"))
            if not si["again"]:
                self.st["slip"] = 1  # durable before the first byte: any later copy says REPRINT
                self._save()
            r = await p.slip(settleslip.settlement(si, self.cfg))
            if r["ok"]:
                self.log("settle", "batch %06d: settlement slip printed" % b)
                return
            self.phase = SLIP
            self.detail = "settlement slip waiting: printer %s" % r["state"]
            while p.state != "ready":
                await asyncio.sleep_ms(_POLL_MS)
                p.wake()

    def _finish(self, b):
        st = self.st
        cur = st["cur"]
        si = self.slip_input()
        last = {"b": b, "closed": st["closed"], "date": si["date"], "diff_n": st["diff_n"],
                "by": st["by"], "day": max(st.get("day", 0), self.last.get("day", 0) if self.last else 0),
                "totals": [[c, cur[c]["n"], cur[c]["t"]] for c in sorted(cur)]}
        self._save(last, self._path + ".last")
        self.last = last
        self._drop()

    def _drop(self):
        remove(self._path)
        remove(self._up)
        self.st = None
        self._resumed = False
        self.unresolved = self.uploaded = 0
        self.phase, self.detail = IDLE, ""
