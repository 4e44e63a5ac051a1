# What the printer prints next, and what it remembers in RAM about jobs that went wrong.
#
# The queue is the outbox: approved refunds first (approval order: a boot never prints
# a `printed` one again), then decline slips owed (F_SLIP not set), then pending notices
# (cfg pending_notice): for a refund still queued while the host is down or after
# _NOTICE_WAIT_S, accepted within _NOTICE_RECENT_S (the customer may still be at the
# counter; an outage backlog after a reboot gets none), printed once (F_NOTICE).
# RAM lists, at most _MAX_SKIP rids each, oldest dropped:
#   skip     entries that cannot be composed (logged): they never block the queue
#   unsaved  confirmed on paper but outbox.printed()/slip_printed() failed: retried, never printed again
#   noticed  no pending notice this boot (printed but F_NOTICE failed, or unreadable)
from micropython import const
from refund import record as R
from refund import receipt
from refund import evlog
from refund.escpos import ERROR

REFUND = const(1)
SLIP = const(2)
NOTICE = const(3)
_MAX_SKIP = const(16)
_NOTICE_WAIT_S = const(20)
_NOTICE_RECENT_S = const(300)


def next_print(ob, skip=()):
    """The outbox ob's approved entry owed a receipt first (approval order), rids in skip
    passed over; None when there is none. O(1) RAM whatever the queue length: an
    approved entry's latest record is its approval (index ver == aver) unless its
    printing has begun; only those few are read from flash."""
    ix = ob.ix
    best = -1
    key = 0
    for i in range(ix.n):
        if ix.state[i] != R.APPROVED:
            continue
        if ix.flags[i] & R.F_PRINTING:
            e = ob._load(i)
            k = e["aver"] if e else ix.ver[i]
        else:
            k = ix.ver[i]
        if (best < 0 or k < key) and (not skip or R.rid_of(ob.gen, ix.seq[i]) not in skip):
            best, key = i, k
    if best < 0:
        return None
    return ob.get(R.rid_of(ob.gen, ix.seq[best]))


def _keep(lst, rid):
    if len(lst) >= _MAX_SKIP:
        lst.pop(0)
    lst.append(rid)


class Queue:
    def __init__(self, outbox, cfg, log, now, counts, fault):
        """counts: the printer's counters; fault(state, detail): the outbox failed."""
        self.ob = outbox
        self.cfg = cfg
        self.log = log
        self.now = now
        self.counts = counts
        self.fault = fault
        self.skip = []
        self.unsaved = []
        self.noticed = []

    def next(self, host_down):
        """(kind, entry) to print next, or None."""
        ob = self.ob
        e = next_print(ob, self.skip + self.unsaved)  # both short (<= _MAX_SKIP)
        if e is not None:
            return REFUND, e
        for seq in ob.seqs(R.DECLINED):
            rid = ob.rid(seq)
            if rid in self.skip or rid in self.unsaved:
                continue
            e = ob.get(rid)
            if e is not None and e["state"] == R.DECLINED and not e["flags"] & R.F_SLIP:
                return SLIP, e
        if self.cfg.get("pending_notice"):
            e = self._next_notice(host_down)
            if e is not None:
                return NOTICE, e
        return None

    def _next_notice(self, down):
        # Newest first, from the index: only entries without the flag are read, and the
        # walk stops at the first one accepted too long ago. One that cannot be read is
        # passed over (no notice for it this boot): the older ones still get theirs.
        ob = self.ob
        ix = ob.ix
        now = self.now()
        i = ix.n - 1
        while i >= 0:
            if ix.state[i] == R.QUEUED and not ix.flags[i] & R.F_NOTICE:
                rid = ob.rid(ix.seq[i])
                if rid not in self.skip and rid not in self.noticed:
                    try:
                        e = ob.get(rid)
                    except Exception as ex:  # flash trouble: this entry only
                        e = None
                        self.log("printer", "%s: no pending notice, cannot read it: %r"
                                 % (rid, ex), level="WARN")
                    if e is None:
                        _keep(self.noticed, rid)
                    elif now - e["created"] > _NOTICE_RECENT_S:
                        return None
                    elif down or now - e["created"] >= _NOTICE_WAIT_S:
                        return e
            i -= 1
        return None

    def stuck(self, rid, why):
        """rid cannot be printed (composer refused it): skipped from now on."""
        self.counts["failed"] += 1
        self.log("printer", "%s: %s; skipped" % (rid, why), level="ERROR", ev=False)
        evlog.event("print_fault", rid, level="E", cause=why)
        _keep(self.skip, rid)

    def printed(self, rid):
        """A receipt or slip is confirmed on paper: record it."""
        self.unsaved.append(rid)
        self.save()

    def save(self):
        while self.unsaved:
            rid = self.unsaved[0]
            try:
                st = self.ob.state(rid)
                if st == R.APPROVED or st == R.DECLINED:
                    (self.ob.printed if st == R.APPROVED else self.ob.slip_printed)(rid)
                    self.log("printer", "%s: printed" % rid)
                    evlog.event("printed", rid)
            except Exception as ex:
                # On paper but not recorded: retried every cycle, never printed again
                # for this reason (the RAM list keeps it out of the queue).
                self.fault(ERROR, "outbox: %r" % (ex,))
                self.log("printer", "%s: recording it printed failed: %r" % (rid, ex), level="ERROR")
                return
            self.unsaved.pop(0)

    def notice_printed(self, rid):
        self.counts["notices"] += 1
        evlog.event("notice", rid)
        try:
            self.ob.notice_printed(rid)
        except Exception as ex:  # answered or cancelled meanwhile, or flash trouble
            self.log("printer", "%s: notice not recorded: %r" % (rid, ex), level="WARN")
            _keep(self.noticed, rid)  # not again this boot


class Live:
    """The live entries for the queue report, read from the outbox on each pass (a list
    of 500 dicts would not fit a board's heap)."""

    def __init__(self, ob):
        self.ob = ob

    def __iter__(self):
        for e in self.ob.entries():
            yield {"rid": e["rid"], "state": e["state_name"], "amount": e["amount"],
                   "currency": e["currency"], "ts": e["created"]}


def compose(kind, e, cfg, again):
    """The composer's chunks (a generator) for a job next() returned."""
    r = composer_input(e)
    if kind == REFUND:
        return receipt.refund(r, cfg, again)
    if kind == SLIP:
        return receipt.decline(r, cfg)
    return receipt.pending_notice(r, cfg)


def composer_input(e):
    """Composer input from an outbox entry (the composer names differ)."""
    return {"rid": e["rid"], "stan": e["stan"], "amount": e["amount"],
            "currency": e["currency"], "orrn": e["orrn"], "rrn": e["rrn"], "auth": e["auth"],
            "operator": e["op"], "ts": e["created"], "state": R.NAMES[e["state"]],
            "code": e["code"]}
