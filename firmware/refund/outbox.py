# Durable outbox: the refund lifecycle on littlefs, safe at every power cut.
#
# On flash (root, e.g. /flash/ob; full layout in docs/outbox-format.md):
#   snap      snapshot: head frame, then one entry frame per live entry (atomic rename)
#   j/GGGGGGG/NNNNNNNN journal: one frame per file, named by its version number N, in
#             subdirectory G = N >> 4 (16 a directory). A file of <= 128 B lives inline
#             in littlefs metadata, so appending a record costs one metadata commit
#             (~0.4 KB) instead of rewriting a 4 KB data block.
#   hist      completed entries (append at compaction, trimmed to the retention window)
#
# RAM holds only an index of live entries (seq, state, flags, amount, version, where
# the latest record is): 18 B each in arrays. Entry details are read on demand.
import os
from micropython import const
from refund import record as R
from refund import settings, zeros
from refund.chars import alnum, printable
from refund.index import Index

_LEASE_N = const(32)  # rid / STAN numbers reserved per lease record
_STAN_MOD = const(999999)
_JFAN = const(4)  # 2**4 journal files per subdirectory: littlefs walks a directory
# linearly, so one flat directory of ~250 inline records cost ~5x the reads per change
_S_IFDIR = const(0x4000)
_IN_J = const(-1)  # loc >= 0: offset in snap; _IN_J: latest record is journal file <ver>

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

_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class Refused(Exception):
    """Intake refusal: code is a stable reason code, text says why."""

    def __init__(self, code, text):
        super().__init__(code, text)
        self.code = code
        self.text = text


class BadTransition(Exception):
    pass


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _remove(p):
    try:
        os.remove(p)
    except OSError:
        pass


class Outbox:
    def __init__(self, root, clock, log, cfg=None):
        self.root = root
        self.jdir = root + "/j"
        self._jmade = -1  # journal subdirectory known to exist
        self.clock = clock
        self.log = log
        self.cfg = settings(DEFAULTS, cfg, "outbox")
        self._buf = bytearray(R.MAX_FRAME + 128)  # one read buffer for every frame
        self.damaged = 0
        self.on_change = None  # callback(seq, state) for the sender / printer tasks
        self._free = None  # last measured free flash bytes (see _free_ok)
        self._free_age = 0
        # Slots for every live entry and some tombstones, made now: at boot the heap is
        # still whole (growing later needs old + new arrays at once).
        self.ix = Index(self.cfg["max_live"] + 32)

    # ---- recovery -----------------------------------------------------------------

    def _reset_index(self):
        self.ix.clear()

    @property
    def live(self):
        return self.ix.live

    @property
    def pending(self):
        return self.ix.pending

    def recover(self):
        """Rebuild the index from snapshot + journal. Returns recovery stats."""
        for d in (self.root, self.jdir):
            if not _exists(d):
                os.mkdir(d)
        _remove(self.root + "/snap.tmp")  # a compaction that never finished
        _remove(self.root + "/hist.tmp")
        self._reset_index()
        self.damaged = 0
        h = self._read_snap()
        if h is None:
            gen = self._journal_gen()
            if gen:
                self._damage("journal without snapshot: keeping rid generation %s" % gen)
            h = {"gen": gen or self._new_gen(), "base": 0, "seq_limit": 1, "stan_limit": 0,
                 "hist_ver": 0, "hist_count": 0, "hist_oldest": 0, "count": 0}
            self._write_snap(h)  # persist the generation before any rid uses it
        self.head = h
        self.gen = h["gen"]
        seq_limit = h["seq_limit"]
        stan_limit = h["stan_limit"]
        ver = h["base"]
        n = 0
        files = self._jfiles()
        last = files[-1] if files else -1
        for v in files:
            if v <= h["base"]:
                _remove(self._jpath(v))  # already in the snapshot: a compaction was cut
                continue
            ver = max(ver, v)
            try:
                typ, p = self._read_j(v)
                n += 1
                if typ == R.T_ENTRY:
                    hv, seq, state, flags, amt = R.entry_head(p)
                    if hv != v:
                        raise R.Corrupt("version %d in file %d" % (hv, v))
                    self._upsert(seq, state, flags, amt, v, _IN_J)
                    seq_limit = max(seq_limit, seq + 1)
                elif typ == R.T_LEASE:
                    _v, sl, stl = R.parse_lease(p)
                    seq_limit = max(seq_limit, sl)
                    stan_limit = max(stan_limit, stl)
                else:
                    raise R.Corrupt("type %d" % typ)
            except (R.Corrupt, OSError, ValueError, IndexError) as e:
                if v == last and str(e) in ("short", "length", "crc"):
                    # Torn tail: littlefs creates the file before the data commits, so a
                    # cut between the two leaves it short. It was never acknowledged.
                    self.log("outbox", "torn tail record %d ignored" % v)
                    _remove(self._jpath(v))
                else:
                    self._damage("journal record %d: %s" % (v, e))
        self.ver = ver
        self._rmdirs()
        # A crash may skip numbers, never reuse one: start after every lease.
        self.seq_limit = self.next_seq = seq_limit
        self.stan_limit = self.next_stan = stan_limit
        return {"live": self.live, "journal": n, "snapshot": h["count"], "damaged": self.damaged}

    def _damage(self, what):
        self.damaged += 1
        self.log("outbox", "DAMAGE " + what, level="ERROR")

    def _journal_gen(self):
        for v in self._jfiles():
            try:
                typ, p = self._read_j(v)
                if typ == R.T_ENTRY:
                    return R.parse_entry(p)["gen"]
            except (R.Corrupt, OSError, ValueError, IndexError):
                pass
        return None

    def _new_gen(self):
        # Random rid prefix chosen when the outbox is created: a reformatted flash can
        # never hand out a rid the host has already seen.
        return bytes([_ALNUM[b % 36] for b in os.urandom(4)]).decode()

    def _jpath(self, v):
        return "%s/%07d/%08d" % (self.jdir, v >> _JFAN, v)

    def _jfiles(self):
        vs = []
        for d in os.ilistdir(self.jdir):
            sub = self.jdir + "/" + d[0]
            if d[1] != _S_IFDIR:
                _remove(sub)  # not ours (e.g. an interrupted temp)
                continue
            for t in os.ilistdir(sub):
                try:
                    vs.append(int(t[0]))
                except ValueError:
                    _remove(sub + "/" + t[0])
        vs.sort()
        return vs

    def _rmdirs(self):
        # Journal subdirectories emptied by compaction (or left empty by a power cut
        # between mkdir and the record) go; a non-empty one refuses rmdir.
        for d in list(os.ilistdir(self.jdir)):
            if d[1] == _S_IFDIR:
                try:
                    os.rmdir(self.jdir + "/" + d[0])
                except OSError:
                    pass
        self._jmade = -1

    def _read_j(self, v):
        with open(self._jpath(v), "rb") as f:
            n = f.readinto(self._buf)
        return R.check(memoryview(self._buf)[:n])

    def _read_snap(self):
        """Load the snapshot into the index; None if there is none."""
        try:
            f = open(self.root + "/snap", "rb")
        except OSError:
            return None
        with f:
            try:
                typ, p = self._next_frame(f)
                if typ != R.T_HEAD:
                    raise R.Corrupt("no head")
                h = R.parse_head(p)
            except (R.Corrupt, ValueError, IndexError) as e:
                self._damage("snapshot head: %s" % e)
                return None
            n = 0
            for off, typ, p in self._frames(f, f.tell(), "snapshot"):
                try:
                    ver, seq, state, flags, amt = R.entry_head(p)
                    self._upsert(seq, state, flags, amt, ver, off)
                    n += 1
                except (R.Corrupt, ValueError) as e:
                    self._damage("snapshot record at %d: %s" % (off, e))
                if n == h["count"]:
                    break
        return h

    def _frames(self, f, off, what):
        """Yield (offset, type, payload) of each valid frame from off to the end of f.
        A damaged frame is reported once and skipped by re-synchronising on the next
        offset whose frame CRC holds, so records after the damage are still recovered."""
        end = f.seek(0, 2)
        bad = -1
        while off < end:
            f.seek(off)
            try:
                typ, p = self._next_frame(f)
            except R.Corrupt as e:
                if bad < 0:
                    bad = off
                    if str(e) != "truncated" or off + 1 < end:
                        self._damage("%s record at %d: %s" % (what, off, e))
                off += 1
                continue
            bad = -1
            yield off, typ, p
            off += self._buf[0]

    def _next_frame(self, f):
        b = self._buf
        if f.readinto(memoryview(b)[:1]) != 1:
            raise R.Corrupt("truncated")
        n = b[0]
        if n < 6:
            raise R.Corrupt("length")
        if f.readinto(memoryview(b)[1:n]) != n - 1:
            raise R.Corrupt("truncated")
        return R.check(memoryview(b)[:n])

    def _idx(self, seq):
        return self.ix.idx(seq)

    def _upsert(self, seq, state, flags, amt, ver, loc):
        self.ix.upsert(seq, state, flags, amt, ver, loc)

    # ---- reading ------------------------------------------------------------------

    def _load(self, i):
        loc = self.ix.loc[i]
        if loc == _IN_J:
            typ, p = self._read_j(self.ix.ver[i])
        else:
            with open(self.root + "/snap", "rb") as f:
                f.seek(loc)
                typ, p = self._next_frame(f)
        e = R.parse_entry(p)
        e["rid"] = R.rid_of(e["gen"], e["seq"])
        return e

    def seq_of(self, rid):
        if not isinstance(rid, str) or len(rid) < 6 or rid[-7:-6] != "-":
            return None
        try:
            return int(rid[-6:]) if rid[:-7] == self.gen else None
        except ValueError:
            return None

    def get(self, rid):
        """Full entry dict, live or completed (journal tail, then history); None if unknown."""
        seq = self.seq_of(rid)
        if seq is None:
            return None
        i = self._idx(seq)
        if i >= 0:
            e = self._load(i)
        else:
            e = self._find_done(seq)
        if e is not None:
            e["state_name"] = R.NAMES[e["state"]]
            e["stale"] = self._stale(e)
        return e

    def _stale(self, e):
        return not R.complete(e["state"], e["flags"]) and \
            self.clock() - e["created"] > self.cfg["stale_s"]

    def _find_done(self, seq):
        for v in range(self.ver, self.head["base"], -1):  # newest journal record first
            try:
                typ, p = self._read_j(v)
                if typ == R.T_ENTRY and R.entry_head(p)[1] == seq:
                    e = R.parse_entry(p)
                    e["rid"] = R.rid_of(e["gen"], seq)
                    return e
            except (R.Corrupt, OSError, ValueError):
                pass
        best = None
        for e in self.history():
            if e["seq"] == seq and (best is None or e["ver"] > best["ver"]):
                best = e
        return best

    def history(self):
        """Completed entries in the history file (oldest first), read from flash."""
        try:
            f = open(self.root + "/hist", "rb")
        except OSError:
            return
        with f:
            for _off, typ, p in self._frames(f, 0, "history"):
                if typ == R.T_ENTRY:
                    e = R.parse_entry(p)
                    e["rid"] = R.rid_of(e["gen"], e["seq"])
                    yield e

    def rids(self, state=None):
        """Live rids (in intake order), optionally only those in `state`. Builds a list:
        for tests and tools; the application iterates seqs() / entries()."""
        ix = self.ix
        out = []
        for i in range(ix.n):
            s = ix.state[i]
            if s and (state is None or s == state):
                out.append(R.rid_of(self.gen, ix.seq[i]))
        return out

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

    def rid(self, seq):
        return R.rid_of(self.gen, seq)

    def entries(self, state=None):
        """Live entries as dicts, one at a time (a list of them would not fit a board)."""
        for seq in self.seqs(state):
            e = self.get(R.rid_of(self.gen, seq))
            if e:
                yield e

    def state(self, rid):
        seq = self.seq_of(rid)
        i = self._idx(seq) if seq is not None else -1
        return self.ix.state[i] if i >= 0 else None

    def next_print(self, skip=()):
        """The approved entry owed a receipt first (approval order), rids in skip
        passed over; None when there is none. O(1) RAM whatever the queue length: an
        approved entry's latest record is its approval (index ver == aver) unless its
        printing has begun; only those few are read from flash."""
        ix = self.ix
        best = -1
        key = 0
        for i in range(ix.n):
            if ix.state[i] != R.APPROVED:
                continue
            if ix.flags[i] & R.F_PRINTING:
                e = self._load(i)
                k = e["aver"] if e else ix.ver[i]
            else:
                k = ix.ver[i]
            if (best < 0 or k < key) and (not skip or R.rid_of(self.gen, ix.seq[i]) not in skip):
                best, key = i, k
        if best < 0:
            return None
        return self.get(R.rid_of(self.gen, ix.seq[best]))

    # ---- writing ------------------------------------------------------------------

    def _append(self, frame):
        """Write one journal record as its own file; durable when this returns."""
        v = self.ver + 1
        p = self._jpath(v)
        try:
            if v >> _JFAN != self._jmade:
                try:
                    os.mkdir(p[: p.rindex("/")])
                except OSError:
                    pass  # exists (a full flash makes the open below fail instead)
            with open(p, "wb") as f:
                f.write(frame)
        except OSError:
            self._jmade = -1
            _remove(p)  # never leave a half-made record behind (e.g. flash full)
            raise
        self._jmade = v >> _JFAN
        self.ver = v
        return v

    def _lease(self, seq_limit, stan_limit):
        v = self.ver + 1
        self._append(R.lease(v, seq_limit, stan_limit))
        self.seq_limit = seq_limit
        self.stan_limit = stan_limit

    def _reserve(self, seqs, stans):
        # Counters are leased _LEASE_N at a time and the lease is durable before use.
        if self.next_seq + seqs > self.seq_limit or self.next_stan + stans > self.stan_limit:
            self._lease(max(self.seq_limit, self.next_seq + _LEASE_N),
                        max(self.stan_limit, self.next_stan + _LEASE_N))

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
        self._upsert(e["seq"], e["state"], e["flags"], e["amount"], v, _IN_J)
        if self.on_change:
            self.on_change(e["seq"], e["state"])
        try:
            self.maybe_compact()
        except (OSError, MemoryError) as err:
            # The change above is durable (the caller must not see it fail); compaction is
            # retried on the next write.
            _remove(self.root + "/snap.tmp")
            self.log("outbox", "compaction failed: %r" % (err,), level="ERROR")
        return e

    def free_bytes(self):
        st = os.statvfs(self.root)
        return st[0] * st[3]

    def _free_ok(self):
        # statvfs walks the whole littlefs tree (every block of every file): measure
        # only every 16 intakes, or every time once free space nears the mark.
        lw = self.cfg["low_water"]
        if self._free is None or self._free_age >= 16 or self._free < 4 * lw:
            self._free = self.free_bytes()
            self._free_age = 0
        self._free_age += 1
        self._free -= 1024  # a record and its share of compaction, pessimistically
        return self._free + 1024 >= lw

    def intake(self, amount, currency, orrn, op="", sup="", ecr=""):
        """Accept a refund: returns the entry once its queued record is durable."""
        c = self.cfg
        if not isinstance(amount, int) or amount <= 0:
            raise Refused("bad_amount", "amount must be a positive integer in minor units")
        if amount > c["max_amount"]:
            raise Refused("amount_limit", "amount %d above the per-refund limit %d"
                          % (amount, c["max_amount"]))
        if not isinstance(currency, int) or not 0 < currency < 1000:
            raise Refused("bad_currency", "currency must be an ISO 4217 numeric code")
        if not alnum(orrn, 12):
            raise Refused("bad_orrn", "original RRN must be 12 letters or digits")
        for k, v in (("op", op), ("sup", sup), ("ecr", ecr)):
            if not printable(v, 0, R.STR_MAX[k], b";="):
                raise Refused("bad_" + k, "%s must be at most %d printable characters"
                              % (k, R.STR_MAX[k]))
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
                 "sup": sup, "ecr": ecr}
            e = self._write(e)
        except OSError as err:
            raise Refused("flash_error", "could not record the refund (%s)" % err)
        e["rid"] = R.rid_of(self.gen, seq)
        return e

    def _change(self, rid, state, set_flags=0, need=0, e=None, **kw):
        """Write rid's next version in `state`; `need` = the state it must be in now.
        `e`: the caller's copy of the entry, used instead of a flash read if current."""
        seq = self.seq_of(rid)
        i = self._idx(seq) if seq is not None else -1
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
        """Call before the first 0200 leaves: from then on the host may know it."""
        seq = self.seq_of(rid)
        i = self._idx(seq) if seq is not None else -1
        if i >= 0 and self.ix.state[i] == R.QUEUED and self.ix.flags[i] & R.F_SENT:
            return self._load(i)  # already durable: keep the first send time (field 90)
        return self._change(rid, R.QUEUED, R.F_SENT, R.QUEUED, e, sent=self.clock())

    def approve(self, rid, rrn, auth, e=None):
        return self._change(rid, R.APPROVED, 0, R.QUEUED, e, rrn=rrn, auth=auth, code="00", aver=self.ver + 1)

    def decline(self, rid, code, e=None):
        return self._change(rid, R.DECLINED, 0, R.QUEUED, e, code=code)

    def print_begun(self, rid):
        """Call before the first receipt byte: any later copy is then a REPRINT."""
        st = self.state(rid)
        if st != R.APPROVED and st != R.DECLINED:
            raise BadTransition("%s: nothing to print in state %s" % (rid, R.NAMES[st or 0] or "unknown"))
        return self._change(rid, st, R.F_PRINTING)

    def printed(self, rid):
        st = self.state(rid)
        if st == R.DECLINED:
            return self._change(rid, R.DECLINED, R.F_SLIP)
        return self._change(rid, R.PRINTED, 0, R.APPROVED)

    def notice_printed(self, rid):
        """A pending notice is on paper for this queued refund (never printed twice)."""
        return self._change(rid, R.QUEUED, R.F_NOTICE, R.QUEUED)

    def cancel(self, rid):
        """Staff cancel: cancelled if never sent, cancelling (reversal owed) otherwise."""
        seq = self.seq_of(rid)
        i = self._idx(seq) if seq is not None else -1
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

    def reversed(self, rid, e=None):
        return self._change(rid, R.CANCELLED, 0, R.CANCELLING, e)

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
        old_base = h["base"]
        n_done = 0
        with open(self.root + "/hist", "ab") as hist:
            # Journal versions are consecutive since the last compaction (recovery removes
            # older leftovers): a range, not a list of up to compact_max file names.
            for v in range(old_base + 1, self.ver + 1):
                try:
                    typ, p = self._read_j(v)
                    if typ == R.T_ENTRY:
                        ver, seq, state, flags, _a = R.entry_head(p)
                        if R.complete(state, flags) and ver > h["hist_ver"]:
                            hist.write(memoryview(self._buf)[: self._buf[0]])
                            n_done += 1
                except (R.Corrupt, OSError, ValueError):
                    pass
        if n_done:
            h["hist_count"] += n_done
            h["hist_ver"] = self.ver
            if not h["hist_oldest"]:
                h["hist_oldest"] = self.clock()
        c = self.cfg
        if h["hist_count"] > c["keep_n"] + c["keep_n"] // 4 or \
                (h["hist_oldest"] and self.clock() - h["hist_oldest"] > c["keep_s"] + 86400):
            self._trim_hist(h)
        h["base"] = self.ver
        h["seq_limit"] = self.seq_limit
        h["stan_limit"] = self.stan_limit
        locs = self._write_snap(h)
        self.head = h
        for v in range(old_base + 1, h["base"] + 1):
            _remove(self._jpath(v))
        self._rmdirs()
        self.ix.squeeze(locs)  # completed tombstones leave RAM

    def _write_snap(self, h):
        """Write every live entry to snap.tmp and rename it over snap. Returns an array
        of the new offsets, parallel to the index (-1 for tombstones)."""
        h["count"] = self.live
        ix = self.ix
        n = ix.n
        locs = ix.tmp  # preallocated: 2 KB made here mid-drain failed on a fragmented heap
        tmp = self.root + "/snap.tmp"
        old = None  # the current snapshot, opened once and read forward (offsets ascend)
        buf = self._buf
        try:
            with open(tmp, "wb") as f:
                f.write(R.head(h))
                for i in range(n):
                    if not ix.state[i]:
                        continue
                    if ix.loc[i] == _IN_J:
                        self._read_j(ix.ver[i])
                    else:
                        if old is None:
                            old = open(self.root + "/snap", "rb")
                        old.seek(ix.loc[i])
                        self._next_frame(old)
                    # The latest frame, CRC checked, copied as it is: no parse, no encode.
                    locs[i] = f.tell()
                    f.write(memoryview(buf)[: buf[0]])
        finally:
            if old is not None:
                old.close()
        os.rename(tmp, self.root + "/snap")
        return locs

    def _trim_hist(self, h):
        """Keep the keep_n most recently completed entries (the file is in completion
        order) updated within keep_s. Two streaming passes, O(1) RAM: sorting the
        history by seq took ~13 B an entry (16 KB at the default keep_n), more than a
        96 KiB board has free once its queue is full."""
        c = self.cfg
        cutoff = self.clock() - c["keep_s"]
        m = 0
        for _e in self.history():
            m += 1
        skip = m - c["keep_n"]
        kept = oldest = 0
        tmp = self.root + "/hist.tmp"
        with open(tmp, "wb") as f:
            for e in self.history():
                skip -= 1
                if skip < 0 and e["updated"] >= cutoff:
                    f.write(R.entry(e))
                    kept += 1
                    if not oldest or e["updated"] < oldest:
                        oldest = e["updated"]
        os.rename(tmp, self.root + "/hist")
        h["hist_count"] = kept
        h["hist_oldest"] = oldest

    def stats(self):
        return {"live": self.live, "pending": self.pending, "journal": self.ver - self.head["base"],
                "history": self.head["hist_count"], "damaged": self.damaged, "gen": self.gen,
                "next_seq": self.next_seq}



