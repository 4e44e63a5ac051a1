# Host sender: moves queued refunds to a final answer and cancelling ones to
# cancelled, exactly once however the network behaves.
#
# Retry policy is per entry (exponential backoff with full jitter), so one stuck entry
# never blocks the others. Any attempt that may have reached the host makes every
# resend a 0201 (same STAN, same rid); a cancelled one gets 0420 then 0421 until a valid
# 0430. While the host cannot be reached, an 0800 echo probes it instead of refunds;
# when the echo answers the whole queue is woken at once.
#
# Entries are tracked by seq, the entry number (rid = generation-seq, refund.outbox):
# the retry schedule, the requests in flight and the scan cursor hold seqs; a rid is
# made only for the outbox calls, field 62 and the event log.
import asyncio
import gc
import random
import time
from micropython import const
from refund import record as R
from refund import settings, evlog
from refund.hostlink import CONNECT_MS, TIMEOUT
from refund.sched import Sched

DEFAULTS = {
    "window": 4,  # requests outstanding on the connection
    "suspect_window": 1,  # extra lane for entries whose last attempt timed out
    "connect_ms": CONNECT_MS,  # the link's connect timeout (set on it below)
    "response_ms": 5000,
    "backoff_base_ms": 500,
    "backoff_cap_ms": 60000,
    "backoff_factor": 2,
    "echo_base_ms": 1000,
    "echo_cap_ms": 30000,
    # Free heap needed to put one more request on the wire (its message, frame, task and
    # answer, and the journal writes it causes): below it the window narrows, never to 0.
    "request_heap": 6144,
}

_RETRY_CODES = ("91", "96")  # "not done": keep queued, repeat with 0201 later
_IDLE_MS = const(1000)
_SLOW_MIN_MS = const(200)


def _f7(t, localtime):
    tm = localtime(t)
    return "%02d%02d%02d%02d%02d" % (tm[1], tm[2], tm[3], tm[4], tm[5])


class Sender:
    def __init__(self, outbox, link, ident, cfg, log, now, localtime, heap_floor=0):
        """ident: {"tid", "mid"}; now(): UTC seconds; localtime(t) -> tuple;
        heap_floor: free heap the sender leaves to the others (the intake's headroom)."""
        self.cfg = settings(DEFAULTS, cfg, "host")
        self.heap_floor = heap_floor
        self.ob = outbox
        self.link = link
        link.connect_ms = self.cfg["connect_ms"]  # host_link settings are all the sender's
        self.tid = ident["tid"]
        self.mid = ident["mid"]
        self.log = log
        self.now = now
        self.localtime = localtime
        self._sched = Sched(outbox.cfg["max_live"])  # retry times of entries that failed
        self._busy = {}  # seq -> [suspect, launched ticks_ms] while its request is in flight
        self._wake = asyncio.Event()
        self._cursor = 0  # seq last launched (round-robin scan position)
        self._srtt = 0  # smoothed round trip of answered requests, ms
        self.host_up = True
        self._echo_attempts = 0
        self._kick = asyncio.Event()  # retry_now(): probe the host without waiting
        # sends: every 0200/0201/0420/0421; retries: the repeats among them; retry: 91/96
        self.stats = {"approved": 0, "declined": 0, "retry": 0, "unknown": 0, "reversed": 0,
                      "echo": 0, "mismatch": 0, "sends": 0, "retries": 0, "timeouts": 0,
                      "heap_waits": 0}

    def wake(self, *_):
        self._wake.set()

    def retry_now(self):
        """Technician: every waiting refund is due now, and the host is probed now."""
        self._sched.all_due(time.ticks_ms())
        self._echo_attempts = 0
        self._kick.set()
        self._wake.set()
        return self._sched.n

    def _sent(self, rid, mti, stan, seq):
        n = self._sched.attempts(seq) + 1
        self.stats["sends"] += 1
        if mti == "0201" or mti == "0421":
            self.stats["retries"] += 1
        evlog.event("send" if mti[1] == "2" else "reversal", rid, mti=mti, stan="%06d" % stan, attempt=n)
        return n

    def _failed(self, rid, seq, cause):
        evlog.event("send_fail", rid, level="W", cause=cause, attempt=self._sched.attempts(seq) + 1)

    def _backoff(self, attempts, base, cap):
        c = self.cfg
        top = min(cap, base * c["backoff_factor"] ** min(attempts, 30))
        return random.randint(0, top)  # full jitter

    def _later(self, seq):
        sc = self._sched
        i = sc.add(seq)
        if i < 0:
            return  # more failing entries than max_live cannot happen; retried at once if so
        if sc.att[i] < 255:
            sc.att[i] += 1
        c = self.cfg
        sc.due[i] = time.ticks_add(time.ticks_ms(), self._backoff(sc.att[i], c["backoff_base_ms"],
                                                                   c["backoff_cap_ms"]))

    def _due(self):
        """Seqs of live entries owed a host exchange whose retry time has come. Cancellations
        first; refunds round-robin from where the last scan stopped, so a scan costs
        O(launches), not O(queue), while the window is the limit."""
        now = time.ticks_ms()
        for seq in self.ob.seqs(R.CANCELLING):
            if self._ready(seq, now):
                yield seq
        start = self._cursor
        for after in (start, 0):
            for seq in self.ob.seqs(R.QUEUED, after):
                if after == 0 and start and seq > start:
                    break  # wrapped around to where this scan began
                if self._ready(seq, now):
                    self._cursor = seq
                    yield seq
            if not start:
                break
        self._cursor = 0

    def _ready(self, seq, now):
        if seq in self._busy:
            return False
        i = self._sched.index(seq)
        return i < 0 or time.ticks_diff(self._sched.due[i], now) <= 0

    def _forget(self):
        # Drop schedules of entries that left the queue: memory stays O(live).
        if self._sched.n > self.ob.live:
            ob = self.ob

            def waiting(seq):
                st = ob.state(ob.rid(seq))
                return st == R.QUEUED or st == R.CANCELLING

            self._sched.keep(waiting)

    def _next_wait(self):
        now = time.ticks_ms()
        w = _IDLE_MS
        sc = self._sched
        for i in range(sc.n):
            if sc.seq[i] not in self._busy:
                w = min(w, max(0, time.ticks_diff(sc.due[i], now)))
        slow = self._slow_ms()
        for v in self._busy.values():  # wake when a request turns slow: its slot frees
            if not v[0]:
                w = min(w, max(1, slow - time.ticks_diff(now, v[1]) + 1))
        return w

    def _slow_ms(self):
        # A request outstanding this long is treated as suspect even before it times out.
        return max(_SLOW_MIN_MS, 8 * self._srtt)

    def _lanes(self, now):
        """(healthy requests in flight, suspect ones)."""
        slow = self._slow_ms()
        n = s = 0
        for v in self._busy.values():
            if v[0] or time.ticks_diff(now, v[1]) > slow:
                s += 1
            else:
                n += 1
        return n, s

    def _launch(self):
        # A suspect (timed out before, or outstanding far longer than the usual round
        # trip, e.g. a refund the host never answers) only uses its own small lane, so it
        # cannot eat the window the healthy queue drains through.
        c = self.cfg
        now = time.ticks_ms()
        busy_n, busy_s = self._lanes(now)
        cap = c["window"] + c["suspect_window"]  # hard cap on requests at the host
        if len(self._busy) >= cap or (busy_n >= c["window"] and busy_s >= c["suspect_window"]):
            return
        launched = 0
        for seq in self._due():
            if len(self._busy) >= cap:
                break
            sus = self._sched.suspect(seq)
            if sus:
                if busy_s >= c["suspect_window"]:
                    continue
                busy_s += 1
            else:
                if busy_n >= c["window"]:
                    continue
                busy_n += 1
            # A task launched in this pass has not allocated yet: each one counts against
            # the free heap measured before it (launching 4 on 13 KB left 5 KB).
            if self._busy and not self._heap_ok(launched):
                self.stats["heap_waits"] += 1  # the window narrows; a completion re-launches
                break
            launched += 1
            self._busy[seq] = [sus, now]
            asyncio.create_task(self._one(seq))
            if not self.host_up or (busy_n >= c["window"] and busy_s >= c["suspect_window"]):
                break

    def _heap_ok(self, launched=0):
        # A board heap shared with the printer and the till: a drain of a full outbox
        # must not take all of it at once (a MemoryError there fails the others).
        need = self.heap_floor + self.cfg["request_heap"] * (launched + 1)
        if gc.mem_free() >= need:
            return True
        gc.collect()
        return gc.mem_free() >= need

    async def run(self):
        while True:
            if not self.host_up:
                await self._probe()
                continue
            self._launch()
            self._forget()
            self._wake.clear()
            try:
                await asyncio.wait_for_ms(self._wake.wait(), self._next_wait() or 10)
            except asyncio.TimeoutError:
                pass

    async def _probe(self):
        c = self.cfg
        self._echo_attempts += 1
        self._kick.clear()
        try:
            await asyncio.wait_for_ms(self._kick.wait(),
                                      self._backoff(self._echo_attempts, c["echo_base_ms"], c["echo_cap_ms"]))
        except asyncio.TimeoutError:
            pass
        msg = {"t": "0800", "7": _f7(self.now(), self.localtime), "11": "%06d" % self.ob.take_stan(),
               "41": self.tid, "70": "301"}
        try:
            r = await self.link.request(msg, c["response_ms"])
        except OSError as err:
            evlog.event("host_down", level="W", agg=True, cause=_why(err))
            return
        self.stats["echo"] += 1
        # TIMEOUT (a str) and None: no answer; the next probe follows the backoff
        if r is not None and r is not TIMEOUT and r.get("t") == "0810" and r.get("39") == "00":
            self.log("host", "echo answered: host is back, waking the queue")
            evlog.clear("host_down")
            evlog.event("host_up")
            self.host_up = True
            self._echo_attempts = 0
            self._sched.all_due(time.ticks_ms())
            self._sched.clear_suspects()  # the host was away: nobody is to blame
            self._wake.set()

    async def _one(self, seq):
        rid = self.ob.rid(seq)
        try:
            e = self.ob.get(rid)
            if e is None or e["state"] not in (R.QUEUED, R.CANCELLING):
                return
            if e["state"] == R.CANCELLING:
                await self._reverse(e)
            else:
                await self._refund(e)
        except OSError as err:
            # Host unreachable before anything was sent: probe with echo, not refunds.
            if self.host_up:
                self.log("host", "host unreachable (%s): probing with 0800" % err, level="WARN", ev=False)
                evlog.event("host_down", level="W", agg=True, cause=_why(err))
            self._failed(rid, seq, "unreachable " + _why(err))
            self.host_up = False
            self._later(seq)
        except Exception as err:  # noqa: a bad entry must not kill the sender
            self.log("host", "%s: %r" % (rid, err), level="ERROR")
            self._failed(rid, seq, "error")
            self._later(seq)
        finally:
            self._busy.pop(seq, None)
            self._wake.set()

    def _common(self, e):
        return {"3": "200000", "4": e["amount"], "11": "%06d" % e["stan"], "41": self.tid,
                "42": self.mid, "49": e["currency"]}

    async def _refund(self, e):
        rid = e["rid"]
        seq = e["seq"]
        await self.link.connect()  # unreachable -> OSError before anything is marked sent
        if not e["flags"] & R.F_SENT:
            e = self.ob.mark_sent(rid, e)  # durable before the first byte can leave
            mti, t7 = "0200", e["sent"]
        else:
            mti, t7 = "0201", self.now()
        ct = self.localtime(e["created"])
        msg = self._common(e)
        msg["t"] = mti
        msg["7"] = _f7(t7, self.localtime)
        msg["12"] = "%02d%02d%02d" % (ct[3], ct[4], ct[5])
        msg["13"] = "%02d%02d" % (ct[1], ct[2])
        f62 = "rid=%s;orrn=%s" % (rid, e["orrn"])
        if e["op"]:
            f62 += ";op=" + e["op"]
        if e["batch"]:  # batch 0: first sent before batches existed (repeats stay identical)
            f62 += ";batch=%06d" % e["batch"]
        msg["62"] = f62
        t0 = time.ticks_ms()
        self._sent(rid, mti, e["stan"], seq)
        r = await self.link.request(msg, self.cfg["response_ms"])
        if r is not None and r is not TIMEOUT:
            rtt = time.ticks_diff(time.ticks_ms(), t0)
            self._srtt = rtt if not self._srtt else (7 * self._srtt + rtt) // 8
        if r is None or r is TIMEOUT:
            self.stats["unknown"] += 1  # outcome unknown: same STAN and rid, as 0201, later
            if r is TIMEOUT:
                self.stats["timeouts"] += 1
                self._sched.set_suspect(seq, True)
            self._failed(rid, seq, "timeout" if r is TIMEOUT else "connection lost")
            self._later(seq)
            return
        self._sched.set_suspect(seq, False)
        if not self._matches(r, "0210", e):
            self.stats["mismatch"] += 1
            self.log("host", "%s: answer does not match the request: ignored" % rid, level="WARN", ev=False)
            self._failed(rid, seq, "mismatch")
            self._later(seq)
            return
        code = r["39"]
        evlog.event("answer", rid, mti="0210", rc=code, rrn=r.get("37"), auth=r.get("38"))
        if code in _RETRY_CODES:
            self.stats["retry"] += 1
            self._failed(rid, seq, "rc" + code)
            self._later(seq)
            return
        self._sched.remove(seq)
        if self.ob.state(rid) != R.QUEUED:
            # Cancelled while in flight: the reversal (0420) settles it either way.
            self.log("host", "%s: answer %s after cancel; reversal follows" % (rid, code))
            return
        if code == "00":
            self.ob.approve(rid, r["37"], r["38"], e)  # durable before any receipt byte
            self.stats["approved"] += 1
            self.log("host", "%s approved rrn %s" % (rid, r["37"]))
            evlog.event("approved", rid, rrn=r["37"], auth=r["38"])
        else:
            self.ob.decline(rid, code, e)
            self.stats["declined"] += 1
            self.log("host", "%s declined %s" % (rid, code))
            evlog.event("declined", rid, rc=code)

    def _matches(self, r, mti, e):
        if r.get("t") != mti or r.get("11") != "%06d" % (e["rstan"] if mti == "0430" else e["stan"]):
            return False
        if r.get("41") != self.tid:
            return False
        try:
            if "4" in r and int(r["4"]) != e["amount"]:
                return False
            if "49" in r and int(r["49"]) != e["currency"]:
                return False
        except ValueError:
            return False
        if mti == "0210" and ("4" not in r or "49" not in r):
            return False
        f62 = r.get("62") or ""
        return ("rid=" + e["rid"]) in f62.split(";")

    async def _reverse(self, e):
        rid = e["rid"]
        seq = e["seq"]
        await self.link.connect()
        if not e["flags"] & R.F_REV_SENT:
            e = self.ob.reversal_sent(rid, e)
            mti = "0420"
        else:
            mti = "0421"
        msg = self._common(e)
        msg["t"] = mti
        msg["11"] = "%06d" % e["rstan"]
        msg["7"] = _f7(self.now(), self.localtime)
        msg["62"] = "rid=%s" % rid
        msg["90"] = "0200%06d%s%s" % (e["stan"], _f7(e["sent"], self.localtime), "0" * 22)
        self._sent(rid, mti, e["rstan"], seq)
        r = await self.link.request(msg, self.cfg["response_ms"])
        if r is TIMEOUT:
            self.stats["timeouts"] += 1
            self._sched.set_suspect(seq, True)
            r = None
        if r is not None and self._matches(r, "0430", e) and r.get("39") == "00":
            self._sched.set_suspect(seq, False)
            self.ob.reversal_done(rid, e)
            self.stats["reversed"] += 1
            self._sched.remove(seq)
            self.log("host", "%s reversed" % rid)
            evlog.event("reversed", rid)
        else:
            self._failed(rid, seq, "no reversal answer" if r is None else "reversal refused")
            self._later(seq)


def _why(err):
    # "ECONNREFUSED" / "ETIMEDOUT" where the port knows the name, else the number
    import errno

    n = err.args[0] if err.args else 0
    return errno.errorcode.get(n, str(n)) if isinstance(n, int) else str(n)[:32]
