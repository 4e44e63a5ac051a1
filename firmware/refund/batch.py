# Settlement batches of the outbox (docs/outbox-format.md, Batches): which batch is
# open, which one is cut (settling), and the per-currency count and total of approved
# refunds of both, kept as each approval is written so that settlement costs
# O(currencies), not a journal scan.
#
# The numbers change only by a 'B' journal record (cut, close); totals are derived from
# the entry records themselves (the record that approves a refund carries its batch),
# saved as 'T' frames in the snapshot and replayed from the journal at recovery.
from micropython import const
from refund import record as R
from refund.errors import BadTransition

BATCH_MAX = const(999999)


class Batches:
    def __init__(self):
        self.open = 1  # the batch a refund first sent now belongs to
        self.cut = 0  # the batch being settled (cut, not closed), 0 if none
        self.tot = {}  # batch -> {currency: [count, total]}: open and cut batches only
        self._seen = None  # recovery: seqs whose approval the journal replay counted
        self._maxb = 0  # recovery: highest batch named by a journal entry

    def load_head(self, h):
        self.open = h.get("batch_open", 1) or 1
        self.cut = h.get("batch_cut", 0)
        self.tot = {}

    def save_head(self, h):
        h["batch_open"] = self.open
        h["batch_cut"] = self.cut

    def frames(self):
        """The snapshot's 'T' frames, one per batch and currency."""
        for b in self.tot:
            t = self.tot[b]
            for cur in t:
                yield R.total(b, cur, t[cur][0], t[cur][1])

    def load_total(self, p):
        b, cur, n, amt = R.parse_total(p)
        self._add(b, cur, n, amt)

    def _add(self, b, cur, n, amt):
        if not b or (b != self.open and b != self.cut):
            return  # closed (or batch 0, sent before batches): nothing to settle
        t = self.tot.get(b)
        if t is None:
            t = self.tot[b] = {}
        c = t.get(cur)
        if c is None:
            t[cur] = [n, amt]
        else:
            c[0] += n
            c[1] += amt

    def approved(self, e, v):
        """Entry e was just written as journal record v: count it if v approved it."""
        if e["state"] == R.APPROVED and e.get("aver") == v:
            self._add(e.get("batch", 0), e["currency"], 1, e["amount"])

    # ---- recovery ---------------------------------------------------------------------

    def replay_start(self):
        self._seen = set()  # bounded by the journal (compaction keeps it <= compact_max)
        self._maxb = 0

    def replay_entry(self, p, seq, state, amount, base):
        """Journal entry record p: an approval written after the snapshot (aver > base)
        is counted once per refund (a later print record repeats aver; if the approving
        record itself was damaged the first later one counts)."""
        b, cur, aver = R.entry_batch(p)
        self._maxb = max(self._maxb, b)
        if state != R.APPROVED and state != R.PRINTED:
            return
        if aver > base and seq not in self._seen:
            self._seen.add(seq)
            self._add(b, cur, 1, amount)

    def replay_batch(self, p):
        _v, self.open, self.cut = R.parse_batch(p)
        for b in list(self.tot):
            if b != self.open and b != self.cut:
                del self.tot[b]

    def replay_end(self):
        self._seen = None
        if self._maxb > self.open:
            # Only a damaged snapshot head (bit flip) gets here: never reuse a number.
            self.open = self._maxb + 1
            self.cut = 0

    # ---- reading ----------------------------------------------------------------------

    def totals(self, b):
        """{currency: (count, total)} of batch b (open or cut; {} otherwise)."""
        t = self.tot.get(b) or {}
        return {cur: (t[cur][0], t[cur][1]) for cur in t}

    def kept(self, b):
        """Entries of batch b must stay in the history: b is not closed."""
        return b and (b == self.open or b == self.cut)


def cut(ob):
    """Cut the open batch (one durable record): refunds first sent from now on join the
    next one. Returns the cut batch; if one is cut already (a settlement resumed after
    a power cut) that one, unchanged."""
    bt = ob.bt
    if bt.cut:
        return bt.cut
    if bt.open >= BATCH_MAX:
        raise BadTransition("batch numbers exhausted (%d)" % BATCH_MAX)
    ob._append(R.batch(ob.ver + 1, bt.open + 1, bt.open))
    bt.cut = bt.open
    bt.open += 1
    return bt.cut


def close(ob, b):
    """Batch b (the cut one) is settled: closed durably, its totals dropped. True if this
    closed it, False if it was closed already; BadTransition if b is open or unknown."""
    bt = ob.bt
    if b and b == bt.cut:
        ob._append(R.batch(ob.ver + 1, bt.open, 0))
        bt.cut = 0
        bt.tot.pop(b, None)
        ob.hist.settled()
        return True
    if 0 < b < bt.open:
        return False
    raise BadTransition("batch %d is not cut" % b)


def unresolved(ob, b):
    """rids of batch b whose outcome is unknown (sent, no final answer) or whose reversal
    is in flight. Only those few candidates are read from flash."""
    ix = ob.ix
    out = []
    for i in range(ix.n):
        s = ix.state[i]
        if (s == R.QUEUED and ix.flags[i] & R.F_SENT) or s == R.CANCELLING:
            e = ob._load(i)
            if e["batch"] == b:
                out.append(e["rid"])
    return out


def _fields(e):
    return {"rid": R.rid_of(e["gen"], e["seq"]), "stan": e["stan"], "amount": e["amount"],
            "currency": e["currency"], "created": e["created"], "rrn": e["rrn"],
            "auth": e["auth"], "orrn": e["orrn"], "batch": e["batch"]}


def approved(ob, b, cur):
    """Approved refunds of batch b in currency cur, one dict at a time (batch upload):
    rid, stan, amount, currency, created, rrn, auth, orrn. Reads the history (kept until
    b closes), the journal and the live approved entries: each refund once."""
    hmax = 0
    for e in ob.hist.entries():
        # A cut compaction may append a run again: its repeats have lower versions.
        if e["ver"] > hmax:
            hmax = e["ver"]
            if e["state"] == R.PRINTED and e["batch"] == b and e["currency"] == cur:
                yield _fields(e)
    for e in ob.journal_entries():
        if e["state"] == R.PRINTED and e["ver"] > hmax and e["batch"] == b and e["currency"] == cur:
            yield _fields(e)
    for seq in ob.seqs(R.APPROVED):
        e = ob.get(ob.rid(seq))
        if e and e["batch"] == b and e["currency"] == cur:
            yield _fields(e)
