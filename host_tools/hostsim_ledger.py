"""The ledger of the host simulator (host_tools/hostsim.py): every refund it answered, and
every money movement as a JSON line.

  {"time": "2026-11-05T10:00:00.123Z", "type": "refund" | "reversal", "tid": ...,
   "rid": ..., "amount": 1234 (minor units, positive), "delta": +1234 | -1234,
   "currency": "156", "rrn": ..., "auth": ..., "orrn": ..., "stan": ...}

An existing ledger file is read back first, so approvals and reversals (not declines)
survive a restart of the simulator; new lines are appended.
"""
import datetime
import json
import os
from dataclasses import dataclass


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass
class Refund:
    tid: str
    rid: str
    amount: str
    currency: str
    orrn: str
    stan: str
    rc: str
    rrn: str = ""
    auth: str = ""
    reversed: bool = False


class Ledger:
    def __init__(self, path=None):
        self.path = path
        self.refunds = {}  # (tid, rid) -> Refund
        self.by_stan = {}  # (tid, stan) -> (tid, rid)
        self.lines = []  # the ledger lines as dicts
        self._file = None
        if path and os.path.exists(path):
            self._reload(path)

    def open(self):
        """Append new lines to the file from now on (if there is one)."""
        if self.path:
            self._file = open(self.path, "a", encoding="utf-8")

    def close(self):
        if self._file:
            self._file.close()
            self._file = None

    def add(self, rec):
        """A refund answered with a final code (approved or declined)."""
        key = (rec.tid, rec.rid)
        self.refunds[key] = rec
        self.by_stan[(rec.tid, rec.stan)] = key

    def find(self, tid, rid, stan=None):
        """The refund of (tid, rid), or else of (tid, stan of its first request)."""
        rec = self.refunds.get((tid, rid))
        if rec is None and stan is not None:
            key = self.by_stan.get((tid, stan))
            rec = self.refunds.get(key) if key else None
        return rec

    def refunded(self, orrn):
        """Amount refunded (approved, not reversed) against the sale orrn."""
        return sum(int(r.amount) for r in self.refunds.values()
                   if r.orrn == orrn and r.rc == "00" and not r.reversed)

    def book(self, kind, rec):
        """A money movement: kind 'refund' (rec approved) or 'reversal'."""
        amount = int(rec.amount)
        e = {"time": now_utc().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "type": kind,
             "tid": rec.tid, "rid": rec.rid, "amount": amount,
             "delta": amount if kind == "refund" else -amount, "currency": rec.currency,
             "rrn": rec.rrn, "auth": rec.auth, "orrn": rec.orrn, "stan": rec.stan}
        self.lines.append(e)
        if self._file:
            self._file.write(json.dumps(e, sort_keys=True) + "\n")
            self._file.flush()

    def net(self, tid=None):
        """Sum of ledger deltas per rid (approved minus reversed), optionally for one tid."""
        out = {}
        for e in self.lines:
            if tid is None or e["tid"] == tid:
                out[e["rid"]] = out.get(e["rid"], 0) + e["delta"]
        return out

    def _reload(self, path):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    e = json.loads(line)
                    key = (e["tid"], e["rid"])
                    if e["type"] == "refund":
                        self.add(Refund(e["tid"], e["rid"], "%012d" % e["amount"], e["currency"],
                                        e["orrn"], e["stan"], "00", e["rrn"], e["auth"]))
                    elif e["type"] == "reversal" and key in self.refunds:
                        self.refunds[key].reversed = True
                    self.lines.append(e)
                except (ValueError, KeyError, TypeError) as x:
                    raise SystemExit("hostsim: ledger %s line %d unreadable: %s" % (path, n, x))
