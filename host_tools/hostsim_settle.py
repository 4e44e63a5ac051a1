"""End-of-day settlement, host side (docs/host-link.md, "Settlement"), for the host
simulator (host_tools/hostsim.py): 0500/0501 reconciliation -> 0510, 0320/0321 batch
upload -> 0330. The ledger (hostsim_ledger) files each approved refund under the batch of
its 0200 and keeps the uploads, the differences and the closed batches.

- 0500/0501 `920000`: the host's count and total for (terminal, batch, currency),
  approved and not reversed, against fields 74 and 86. Equal: `00` with field 15 (the
  host's UTC date MMDD), the batch closes. Else `95` with `diff=N` (N = the difference
  of the counts, at least 1: all the host can tell from totals).
- 0320/0321: answered 0330 `00` with `host=ok` (approved in this batch with this amount),
  `host=missing` (no approved refund of that rid in this batch: never approved,
  reversed, filed under another batch, or lost by the fault) or `host=amount:N`. The
  first upload of a rid is recorded; anything but ok is a difference. No money moves.
- 0500/0501 `960000`: `00` with field 15, the batch closes; `extra=RID,...` names the
  refunds of the host's batch the terminal did not upload (sorted, as many as fit in
  field 62's 999 characters) and `extra_n=N` their count; each is a difference.
- Idempotent: the same 0500/0501 (terminal, batch, currency, field 3) gets the same
  answer (its STAN and field 7 are the request's); any 0500 for a closed batch gets the
  answer that closed it; a repeated 0320 gets the first view of that rid.
"""
import logging

from host_tools.hostsim_ledger import Refund, now_utc

log = logging.getLogger("hostsim")

F62_MAX = 999


class Settle:
    def __init__(self, ledger, plan, count, f7, new_rrn):
        """ledger: hostsim_ledger.Ledger; plan: hostsim_faults.FaultPlan; count(name): a
        counter of HostSim.stats; f7(): field 7 of an answer; new_rrn(): an RRN."""
        self.ledger = ledger
        self.plan = plan
        self._count = count
        self._f7 = f7
        self._rrn = new_rrn
        self._answers = {}  # (tid, batch, currency, field 3) -> core of its 0510

    # ---- 0500/0501 ----

    def reconcile(self, doc, f62):
        key = (doc["41"], f62["batch"], doc["49"])
        closed = self.ledger.settled.get(key)
        if closed is not None:
            self._count("settle_closed_repeats")
            return self._answer510(doc, closed)
        akey = key + (doc["3"],)
        core = self._answers.get(akey)
        if core is not None:
            self._count("settle_repeats")
            return self._answer510(doc, core)
        if self.plan.faults.settle_extra:
            self._invent(key)
        view = self.ledger.batch(*key, lost=self.plan.settle_lost())
        count, total = int(doc["74"]), int(doc["86"])
        hcount, htotal = len(view), sum(view.values())
        if doc["3"] == "920000":
            if (hcount, htotal) == (count, total):
                core = self._close(key, doc, hcount, htotal, "batch=" + key[1], False)
            else:
                self._count("settle_mismatch")
                log.info("%s batch %s %s: terminal %d/%d, host %d/%d: 95", *key, count, total,
                         hcount, htotal)
                core = {"39": "95", "62": "batch=%s;diff=%d" % (key[1], max(abs(hcount - count), 1)),
                        "74": doc["74"], "86": doc["86"]}
        else:
            uploaded = self.ledger.uploads.get(key, {})
            extra = sorted(rid for rid in view if rid not in uploaded)
            for rid in extra:
                self._difference(key, rid, "extra", None, view[rid])
            core = self._close(key, doc, hcount, htotal, _f62_extra(key[1], extra), True)
        self._answers[akey] = core
        return self._answer510(doc, core)

    def _close(self, key, doc, hcount, htotal, f62, after_upload):
        core = {"15": now_utc().strftime("%m%d"), "39": "00", "62": f62, "74": doc["74"], "86": doc["86"]}
        self.ledger.record("settlement", key, count=int(doc["74"]), total=int(doc["86"]),
                           host_count=hcount, host_total=htotal, after_upload=after_upload,
                           answer=core)
        self._count("settled")
        log.info("%s batch %s %s closed (%s)", *key, "after upload" if after_upload else "agreed")
        return core

    def _answer510(self, doc, core):
        a = {"t": "0510", "3": doc["3"], "7": self._f7(), "11": doc["11"], "41": doc["41"],
             "42": doc["42"], "49": doc["49"]}
        a.update(core)
        return a

    def _invent(self, key):
        """--settle-fault extra: one approved refund in this batch and currency that the
        terminal never sent, made once (its rid: XTRA-<batch>-<currency>)."""
        tid, batch, currency = key
        rid = "XTRA-%s-%s" % (batch, currency)
        if self.ledger.find(tid, rid) is not None:
            return
        amount = 100 + int(self.plan.roll("settle_extra", "%s|%s|%s" % key) * 9900)
        rec = Refund(tid, rid, "%012d" % amount, currency, "XTRA%s00" % batch, "000000", "00",
                     self._rrn(), "000000", batch=batch, invented=True)
        self.ledger.add(rec)
        self.ledger.book("refund", rec)
        self._count("settle_invented")
        log.info("%s batch %s %s: invented refund %s amount %d (fault)", *key, rid, amount)

    def _difference(self, key, rid, kind, terminal_amount, host_amount):
        self.ledger.record("difference", key, rid=rid, kind=kind, terminal_amount=terminal_amount,
                           host_amount=host_amount)
        self._count("differences")
        log.info("%s batch %s %s: difference %s %s (terminal %s, host %s)", *key, rid, kind,
                 terminal_amount, host_amount)

    # ---- 0320/0321 ----

    def upload(self, doc, f62):
        key = (doc["41"], f62["batch"], doc["49"])
        rid = f62["rid"]
        amount = int(doc["4"])
        seen = self.ledger.uploads.get(key, {}).get(rid)
        if seen is not None:
            self._count("upload_repeats")
            host = seen[1]
        else:
            view = self.ledger.batch(*key, lost=self.plan.settle_lost())
            have = view.get(rid)
            host = "missing" if have is None else "ok" if have == amount else "amount:%d" % have
            if key in self.ledger.settled:
                self._count("uploads_after_close")  # answered, nothing recorded
            else:
                self._count("uploads")
                self.ledger.record("upload", key, rid=rid, amount=amount, host=host)
                if host != "ok":
                    self._difference(key, rid, "missing" if have is None else "amount", amount, have)
        return {"t": "0330", "3": doc["3"], "4": doc["4"], "7": self._f7(), "11": doc["11"],
                "39": "00", "41": doc["41"], "42": doc["42"], "49": doc["49"],
                "62": "rid=%s;batch=%s;host=%s" % (rid, key[1], host)}


def _f62_extra(batch, extra):
    """'batch=B;extra=R1,R2;extra_n=N' with as many rids as fit in field 62."""
    head = "batch=" + batch
    tail = ";extra_n=%d" % len(extra)
    room = F62_MAX - len(head) - len(tail) - len(";extra=")
    names = []
    used = 0
    for rid in extra:
        need = len(rid) + (1 if names else 0)
        if used + need > room:
            break
        names.append(rid)
        used += need
    return head + (";extra=" + ",".join(names) if names else "") + tail
