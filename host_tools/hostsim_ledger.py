"""The ledger of the host simulator (host_tools/hostsim.py): every refund it answered,
filed under the batch of its 0200, every money movement as a JSON line, and what
settlement found (docs/host-link.md, "Settlement").

Money movements (`Ledger.lines`, `HostSim.ledger`):
  {"time": "2026-11-05T10:00:00.123Z", "type": "refund" | "reversal", "tid": ...,
   "rid": ..., "amount": 1234 (minor units, positive), "delta": +1234 | -1234,
   "currency": "156", "rrn": ..., "auth": ..., "orrn": ..., "stan": ...,
   "batch": "000001" (field 62 `batch` of its 0200, "" without one)
   [, "fault": "extra" (a refund --settle-fault extra invented)]}
Settlement records (`Ledger.settle_lines`; no money moves):
  {"time", "type": "upload", "tid", "batch", "currency", "rid", "amount", "host": "ok" |
   "missing" | "amount:N"}                       the first 0320 of each rid
  {"time", "type": "difference", "tid", "batch", "currency", "rid", "kind": "missing" |
   "amount" | "extra", "terminal_amount": N | null, "host_amount": N | null}
  {"time", "type": "settlement", "tid", "batch", "currency", "count", "total",
   "host_count", "host_total", "after_upload": bool, "answer": {"15", "39", "62", "74",
   "86"}}                                        the 0510 `00` that closed a batch

An existing ledger file is read back first, so approvals and reversals (not declines),
uploads, differences and closed batches survive a restart of the simulator; new lines
are appended.
"""
import datetime
import json
import os
from dataclasses import dataclass


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


def _stamp():
    return now_utc().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
    batch: str = ""  # field 62 `batch` of its first 0200
    invented: bool = False  # made up by --settle-fault extra, never sent by the terminal


class Ledger:
    def __init__(self, path=None):
        self.path = path
        self.refunds = {}  # (tid, rid) -> Refund
        self.by_stan = {}  # (tid, stan) -> (tid, rid)
        self.lines = []  # the money movements as dicts
        self.settle_lines = []  # uploads, differences, closed batches (no money moves)
        self.settled = {}  # (tid, batch, currency) -> the answer that closed it
        self.uploads = {}  # (tid, batch, currency) -> {rid: (terminal amount, host view)}
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
        e = {"time": _stamp(), "type": kind,
             "tid": rec.tid, "rid": rec.rid, "amount": amount,
             "delta": amount if kind == "refund" else -amount, "currency": rec.currency,
             "rrn": rec.rrn, "auth": rec.auth, "orrn": rec.orrn, "stan": rec.stan,
             "batch": rec.batch}
        if rec.invented:
            e["fault"] = "extra"
        self.lines.append(e)
        self._write(e)

    def _write(self, e):
        if self._file:
            self._file.write(json.dumps(e, sort_keys=True) + "\n")
            self._file.flush()

    # ---- batches and settlement ----

    def batch(self, tid, batch, currency, lost=()):
        """The host's view of a batch: {rid: amount} of the refunds of terminal tid filed
        under batch in currency, approved and not reversed (rids in `lost` left out)."""
        return {r.rid: int(r.amount) for r in self.refunds.values()
                if r.tid == tid and r.batch == batch and r.currency == currency
                and r.rc == "00" and not r.reversed and r.rid not in lost}

    def record(self, rtype, key, **fields):
        """A settlement record (rtype 'upload' | 'difference' | 'settlement') for the
        batch key (tid, batch, currency); returns the line."""
        tid, batch, currency = key
        e = dict(fields, time=_stamp(), type=rtype, tid=tid, batch=batch, currency=currency)
        self._file_settle(e)
        self._write(e)
        return e

    def _file_settle(self, e):
        key = (e["tid"], e["batch"], e["currency"])
        if e["type"] == "upload":
            self.uploads.setdefault(key, {})[e["rid"]] = (e["amount"], e["host"])
        elif e["type"] == "settlement":
            self.settled[key] = e["answer"]
        elif e["type"] != "difference":
            raise ValueError("settlement record type %r" % e["type"])
        self.settle_lines.append(e)

    def differences(self, tid=None):
        """The differences settlement found: the 'difference' records, optionally of one tid."""
        return [e for e in self.settle_lines if e["type"] == "difference" and tid in (None, e["tid"])]

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
                    if e["type"] in ("upload", "difference", "settlement"):
                        self._file_settle(e)
                        continue
                    key = (e["tid"], e["rid"])
                    if e["type"] == "refund":
                        self.add(Refund(e["tid"], e["rid"], "%012d" % e["amount"], e["currency"],
                                        e["orrn"], e["stan"], "00", e["rrn"], e["auth"],
                                        batch=e.get("batch", ""), invented=e.get("fault") == "extra"))
                    elif e["type"] == "reversal" and key in self.refunds:
                        self.refunds[key].reversed = True
                    self.lines.append(e)
                except (ValueError, KeyError, TypeError) as x:
                    raise SystemExit("hostsim: ledger %s line %d unreadable: %s" % (path, n, x))
