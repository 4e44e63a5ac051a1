# Durable outbox: the refund lifecycle on littlefs, safe at every power cut.
#
# On flash (root, e.g. /flash/ob; full layout in docs/outbox-format.md): the journal
# (refund.journal, one record a file), the snapshot of live entries (refund.snapshot)
# and the history of completed ones (refund.history). This module owns what they mean:
# recovery, counters (rid, STAN) leased before use, limits, transitions, compaction.
#
# RAM holds only an index of live entries (seq, state, flags, amount, version, where
# the latest record is) in arrays (refund.index). Entry details are read on demand.
import os
from micropython import const
from refund import record as R
from refund import batch, rules, settings, snapshot
from refund.chars import digits
from refund.errors import Refused, BadTransition
from refund.history import History
from refund.index import Index
from refund.journal import IN_J, Journal, remove

_LEASE_N = const(32)  # rid / STAN numbers reserved per lease record
_STAN_MOD = const(999999)
_GEN_LEN = const(4)  # rid = GGGG-NNNNNN: a generation of 4, "-", the entry number "%06d"
_NUM_MAX = const(10)  # digits of a u32 entry number (past 999999 "%06d" gives more)

DEFAULTS = {
    "max_live": 500,  # live entries
    "max_amount": 5000000,  # per refund, minor units
    "max_pending": 50000000,  # queued + cancelling total, minor units
    "low_water": 65536,  # free flash bytes needed to accept a refund
    "stale_s": 72 * 3600,
    "keep_n": 1000,  # completed entries kept for explain / reprint ...
    "keep_s": 30 * 86400,  # ... and for how long
    "compact_min": 64,  # journal files before compaction (scales with live count)
    "compact_max": 256,
}

class Outbox:
    def __init__(self, root, clock, log, cfg=None):
        self.root = root
        self.clock = clock
        self.log = log
        self.cfg = settings(DEFAULTS, cfg, "outbox")
        self.j = Journal(root, log)
        self.hist = History(self.j, clock, self.cfg)
        self.on_change = None  # callback(seq, state) for the sender / printer tasks
        self._free = None  # last measured free flash bytes (see _free_ok)
        self._free_age = 0
        # Slots for every live entry and some tombstones, made now: at boot the heap is
        # still whole (growing later needs old + new arrays at once).
        self.ix = Index(self.cfg["max_live"] + 32)
        self.bt = batch.Batches()  # open / cut batch and their totals (refund.batch)
        # Set by recover(), which must run before anything else: the snapshot head,
        # the rid generation, the journal version and the leased counters.
        self.head = None
        self.gen = ""
        self.ver = 0
        self.seq_limit = self.next_seq = 1
        self.stan_limit = self.next_stan = 0

    @property
    def live(self):  # live entries (not yet complete)
        return self.ix.live

    @property
    def pending(self):  # money owed to customers: the queued + cancelling amounts
        return self.ix.pending

    # ---- recovery -----------------------------------------------------------------
    def recover(self):  # the index from snapshot + journal; returns recovery stats
        j = self.j
        j.prepare()
        self.ix.clear()
        bt = self.bt
        bt.load_head({})
        h = snapshot.load(j, self.ix, bt)
        if h is None:
            gen = self._journal_gen()
            if gen:
                j.damage("journal without snapshot: keeping rid generation %s" % gen)
            h = {"gen": gen or self._new_gen(), "base": 0, "seq_limit": 1, "stan_limit": 0,
                 "hist_ver": 0, "hist_count": 0, "hist_oldest": 0, "count": 0,
                 "batch_open": 1, "batch_cut": 0}
            bt.load_head(h)
            snapshot.write(j, self.ix, h, bt)  # persist the generation before any rid uses it
        self.head = h
        self.gen = h["gen"]
        seq_limit = h["seq_limit"]
        stan_limit = h["stan_limit"]
        ver = h["base"]
        n = 0
        files = j.versions()
        last = files[-1] if files else -1
        bt.replay_start()
        for v in files:
            if v <= h["base"]:
                j.drop(v)  # already in the snapshot: a compaction was cut
                continue
            ver = max(ver, v)
            try:
                typ, p = j.read(v)
                n += 1
                if typ == R.T_ENTRY:
                    hv, seq, state, flags, amt = R.entry_head(p)
                    if hv != v:
                        raise R.Corrupt("version %d in file %d" % (hv, v))
                    self.ix.upsert(seq, state, flags, amt, v, IN_J)
                    bt.replay_entry(p, seq, state, amt, h["base"])
                    seq_limit = max(seq_limit, seq + 1)
                elif typ == R.T_LEASE:
                    _v, sl, stl = R.parse_lease(p)
                    seq_limit = max(seq_limit, sl)
                    stan_limit = max(stan_limit, stl)
                elif typ == R.T_BATCH:
                    bt.replay_batch(p)
                else:
                    raise R.Corrupt("type %d" % typ)
            except (R.Corrupt, OSError, ValueError, IndexError) as e:
                if v == last and str(e) in ("short", "length", "crc"):
                    # Torn tail: littlefs creates the file before the data commits, so a
                    # cut between the two leaves it short. It was never acknowledged.
                    self.log("outbox", "torn tail record %d ignored" % v)
                    j.drop(v)
                else:
                    j.damage("journal record %d: %s" % (v, e))
        bt.replay_end()
        self.ver = ver
        j.rmdirs(-1, -1)
        # A crash may skip numbers, never reuse one: start after every lease.
        self.seq_limit = self.next_seq = seq_limit
        self.stan_limit = self.next_stan = stan_limit
        return {"live": self.live, "journal": n, "snapshot": h["count"], "damaged": j.damaged}

    def _journal_gen(self):
        for v in self.j.versions():
            try:
                typ, p = self.j.read(v)
                if typ == R.T_ENTRY:
                    return R.parse_entry(p)["gen"]
            except (R.Corrupt, OSError, ValueError, IndexError):
                pass
        return None

    def _new_gen(self):
        # Random rid prefix chosen when the outbox is created: a reformatted flash can
        # never hand out a rid the host has already seen.
        return bytes([b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[b % 36]
                      for b in os.urandom(_GEN_LEN)]).decode()

    # ---- reading ------------------------------------------------------------------
    def _load(self, i):
        typ, p = self.j.read_at(self.ix.loc[i], self.ix.ver[i])
        e = R.parse_entry(p)
        e["rid"] = R.rid_of(e["gen"], e["seq"])
        return e

    def rid(self, seq):
        return R.rid_of(self.gen, seq)

    def seq_of(self, rid):
        """rid's entry number, or None unless rid is exactly what rid() makes: this
        generation, "-", 6 digits or more past 999999 (int() takes "+00001", "1_0000")."""
        if not isinstance(rid, str) or len(rid) < _GEN_LEN + 7 or rid[:_GEN_LEN] != self.gen \
                or rid[_GEN_LEN:_GEN_LEN + 1] != "-":
            return None
        num = rid[_GEN_LEN + 1:]
        if not digits(num, 6, _NUM_MAX) or (len(num) > 6 and num[:1] == "0"):
            return None
        return int(num)

    def _slot(self, rid):
        seq = self.seq_of(rid)
        return self.ix.idx(seq) if seq is not None else -1

    def get(self, rid):
        """Full entry dict, live or completed (journal tail, then history); None if unknown."""
        seq = self.seq_of(rid)
        if seq is None:
            return None
        i = self.ix.idx(seq)
        if i >= 0:
            e = self._load(i)
        else:
            e = self._find_done(seq)
        if e is not None:
            e["state_name"] = R.NAMES[e["state"]]
            e["stale"] = not R.complete(e["state"], e["flags"]) and \
                self.clock() - e["created"] > self.cfg["stale_s"]
        return e

    def _find_done(self, seq):
        for v in range(self.ver, self.head["base"], -1):  # newest journal record first
            try:
                typ, p = self.j.read(v)
                if typ == R.T_ENTRY and R.entry_head(p)[1] == seq:
                    e = R.parse_entry(p)
                    e["rid"] = R.rid_of(e["gen"], seq)
                    return e
            except (R.Corrupt, OSError, ValueError):
                pass
        return self.hist.find(seq)

    def history(self):
        """Completed entries in the history file (oldest first), read from flash."""
        return self.hist.entries()

    def journal_entries(self):
        """Every entry record in the journal since the last compaction (oldest first,
        several per refund): completed refunds not yet in the history are only there."""
        return self.j.records(self.head["base"] + 1, self.ver)

    def seqs(self, state, after=0):
        """Live entry numbers in `state` (None: any live state) above `after`, oldest
        first, without allocating rid strings or a list."""
        ix = self.ix
        i = ix.find(after + 1) if after else 0
        while i < ix.n:  # re-read n: the index may change while the caller awaits
            s = ix.state[i]
            if s == state or (state is None and s):
                seq = ix.seq[i]
                yield seq
                if i >= ix.n or ix.seq[i] != seq:
                    i = ix.find(seq)  # compaction moved the slots: find our place again
                    if i < ix.n and ix.seq[i] == seq:
                        i += 1
                    continue
            i += 1

    def entries(self, state=None):
        """Live entries as dicts, one at a time (a list of them would not fit a board)."""
        for seq in self.seqs(state):
            e = self.get(R.rid_of(self.gen, seq))
            if e:
                yield e

    def state(self, rid):
        i = self._slot(rid)
        return self.ix.state[i] if i >= 0 else None

    # ---- writing ------------------------------------------------------------------
    def _append(self, frame):  # the next journal record, durable when this returns
        v = self.ver + 1
        self.j.append(v, frame)
        self.ver = v
        return v

    def _reserve(self, seqs, stans):
        # Counters are leased _LEASE_N at a time and the lease is durable before use.
        if self.next_seq + seqs > self.seq_limit or self.next_stan + stans > self.stan_limit:
            seq_limit = max(self.seq_limit, self.next_seq + _LEASE_N)
            stan_limit = max(self.stan_limit, self.next_stan + _LEASE_N)
            self._append(R.lease(self.ver + 1, seq_limit, stan_limit))
            self.seq_limit = seq_limit
            self.stan_limit = stan_limit

    def take_stan(self):
        """A new STAN (000001-999999), persisted before use: never reused after a crash."""
        self._reserve(0, 1)
        n = self.next_stan
        self.next_stan += 1
        return n % _STAN_MOD + 1

    def _write(self, e):
        """Persist a new version of entry e, then update the index."""
        e["ver"] = self.ver + 1
        e["updated"] = self.clock()
        v = self._append(R.entry(e))
        self.ix.upsert(e["seq"], e["state"], e["flags"], e["amount"], v, IN_J)
        self.bt.approved(e, v)  # before compaction snapshots the totals
        if self.on_change:
            self.on_change(e["seq"], e["state"])
        try:
            self.maybe_compact()
        except (OSError, MemoryError) as err:
            # The change above is durable (the caller must not see it fail); compaction is
            # retried on the next write.
            remove(self.root + "/snap.tmp")
            self.log("outbox", "compaction failed: %r" % (err,), level="ERROR")
        return e

    def _free_ok(self):
        # statvfs walks the whole littlefs tree (every block of every file): measure
        # only every 16 intakes, or every time once free space nears the mark.
        lw = self.cfg["low_water"]
        if self._free is None or self._free_age >= 16 or self._free < 4 * lw:
            st = os.statvfs(self.root)
            self._free = st[0] * st[3]
            self._free_age = 0
        self._free_age += 1
        self._free -= 1024  # a record and its share of compaction, pessimistically
        return self._free + 1024 >= lw

    def accept(self, amount, currency, orrn, op="", sup="", ecr=""):
        """Accept a refund: returns the entry once its queued record is durable.
        Raises Refused (rules, then limits) having written nothing."""
        c = self.cfg
        rules.positive(amount)
        rules.within(amount, c["max_amount"])
        rules.currency(currency)
        rules.orrn(orrn)
        rules.field("op", op)
        rules.field("sup", sup)
        rules.field("ecr", ecr)
        if self.live >= c["max_live"]:
            raise Refused("outbox_full", "%d refunds already waiting (limit %d)"
                          % (self.live, c["max_live"]))
        if self.pending + amount > c["max_pending"]:
            raise Refused("pending_limit", "pending total would exceed %d" % c["max_pending"])
        if not self._free_ok():
            raise Refused("flash_low", "flash below its low-water mark")
        try:
            self.ix.reserve(self.ix.n + 1)  # RAM first: never a durable record RAM can't index
        except MemoryError:
            raise Refused("memory", "no RAM to index another refund")
        try:
            self._reserve(1, 1)
            seq = self.next_seq
            self.next_seq += 1
            stan = self.take_stan()
            now = self.clock()
            e = {"seq": seq, "gen": self.gen, "state": R.QUEUED, "flags": 0, "stan": stan,
                 "rstan": 0, "amount": amount, "currency": currency, "created": now,
                 "aver": 0, "code": "", "orrn": orrn, "rrn": "", "auth": "", "op": op,
                 "sup": sup, "ecr": ecr, "batch": 0}
            e = self._write(e)
        except OSError as err:
            raise Refused("flash_error", "could not record the refund (%s)" % err)
        e["rid"] = R.rid_of(self.gen, seq)
        return e

    def _change(self, rid, state, set_flags=0, need=0, e=None, **kw):
        """Write rid's next version in `state`; `need` = the state it must be in now.
        `e`: the caller's copy of the entry, used instead of a flash read if current."""
        seq = self.seq_of(rid)
        i = self.ix.idx(seq) if seq is not None else -1
        if i < 0:
            raise BadTransition("%s is not a live refund" % rid)
        if e is None or e.get("ver") != self.ix.ver[i] or e.get("seq") != seq:
            e = self._load(i)
        else:
            e = dict(e)
        if (need and e["state"] != need) or not R.can_move(e["state"], state):
            raise BadTransition("%s: %s -> %s not allowed" % (rid, R.NAMES[e["state"]], R.NAMES[state]))
        e["state"] = state
        e["flags"] |= set_flags
        for k in kw:
            e[k] = kw[k]
        e = self._write(e)
        e["rid"] = rid
        return e

    def mark_sent(self, rid, e=None):
        """Call before the first 0200 leaves: from then on the host may know it. The
        refund joins the open batch here, in the same record (its field 62 `batch`)."""
        i = self._slot(rid)
        if i >= 0 and self.ix.state[i] == R.QUEUED and self.ix.flags[i] & R.F_SENT:
            return self._load(i)  # already durable: keep the first send time (field 90)
        return self._change(rid, R.QUEUED, R.F_SENT, R.QUEUED, e, sent=self.clock(),
                            batch=self.bt.open)

    def approve(self, rid, rrn, auth, e=None):
        return self._change(rid, R.APPROVED, 0, R.QUEUED, e, rrn=rrn, auth=auth, code="00", aver=self.ver + 1)

    def decline(self, rid, code, e=None):
        return self._change(rid, R.DECLINED, 0, R.QUEUED, e, code=code)

    def print_begun(self, rid):
        """Call before the first receipt or slip byte: any later copy is then a REPRINT."""
        st = self.state(rid)
        if st != R.APPROVED and st != R.DECLINED:
            raise BadTransition("%s: nothing to print in state %s" % (rid, R.NAMES[st or 0] or "unknown"))
        return self._change(rid, st, R.F_PRINTING)

    def printed(self, rid):
        """The approved refund's receipt is confirmed on paper: printed (complete)."""
        return self._change(rid, R.PRINTED, 0, R.APPROVED)

    def slip_printed(self, rid):
        """The declined refund's slip is confirmed on paper: it stays declined, now
        complete (flag SLIP)."""
        return self._change(rid, R.DECLINED, R.F_SLIP, R.DECLINED)

    def notice_printed(self, rid):
        """A pending notice is on paper for this queued refund (never printed twice)."""
        return self._change(rid, R.QUEUED, R.F_NOTICE, R.QUEUED)

    def cancel(self, rid):
        """Staff cancel: cancelled if never sent, cancelling (reversal owed) otherwise."""
        i = self._slot(rid)
        if i < 0:
            raise BadTransition("%s is not a live refund" % rid)
        st = self.ix.state[i]
        if st == R.CANCELLING:
            return self._load(i)
        if st != R.QUEUED:
            raise BadTransition("%s is %s: cannot cancel" % (rid, R.NAMES[st]))
        if self.ix.flags[i] & R.F_SENT:
            return self._change(rid, R.CANCELLING, rstan=self.take_stan())
        return self._change(rid, R.CANCELLED)

    def reversal_sent(self, rid, e=None):
        """Call before the first 0420 leaves."""
        return self._change(rid, R.CANCELLING, R.F_REV_SENT, R.CANCELLING, e)

    def reversal_done(self, rid, e=None):
        """The host confirmed the reversal (0430 00): cancelled."""
        return self._change(rid, R.CANCELLED, 0, R.CANCELLING, e)

    # ---- batches (settlement; refund.batch) ---------------------------------------------
    def cut(self):
        """Cut the open batch durably; the cut batch number (refund.batch.cut)."""
        return batch.cut(self)

    def close(self, b):
        """Close cut batch b durably; False if closed already (refund.batch.close)."""
        return batch.close(self, b)

    def batch_info(self):
        """{"open", "cut", "totals": {batch: {currency: (count, total)}}} (RAM only)."""
        bt = self.bt
        return {"open": bt.open, "cut": bt.cut, "totals": {b: bt.totals(b) for b in bt.tot}}

    # ---- compaction -----------------------------------------------------------------
    def maybe_compact(self):
        c = self.cfg
        limit = min(c["compact_max"], max(c["compact_min"], self.live // 2))
        if self.ver - self.head["base"] >= limit:
            self.compact()

    def compact(self):
        """Completed entries -> hist; live entries -> snap.tmp -> rename; drop journal.
        Streams record by record: RAM stays at one frame plus one offset per entry."""
        h = dict(self.head)
        self.bt.save_head(h)  # the history keeps entries of batches not closed
        old_base = h["base"]
        self.hist.add(old_base + 1, self.ver, h, self.ix)
        h["base"] = self.ver
        h["seq_limit"] = self.seq_limit
        h["stan_limit"] = self.stan_limit
        locs = snapshot.write(self.j, self.ix, h, self.bt)
        self.head = h
        for v in range(old_base + 1, h["base"] + 1):
            self.j.drop(v)
        self.j.rmdirs(old_base + 1, h["base"])
        self.ix.squeeze(locs)  # completed tombstones leave RAM

    def stats(self):
        return {"live": self.live, "pending": self.pending, "journal": self.ver - self.head["base"],
                "history": self.head["hist_count"], "damaged": self.j.damaged, "gen": self.gen,
                "next_seq": self.next_seq}
