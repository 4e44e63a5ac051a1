# Baseline for the benchmarks only (not firmware): the obvious outbox that keeps every
# live entry in one JSON file and rewrites it (tmp + rename) on every change.
import json
import os


class NaiveOutbox:
    def __init__(self, path):
        self.path = path
        self.e = {}
        self.n = 0

    def _sync(self):
        with open(self.path + ".tmp", "w") as f:
            f.write(json.dumps(self.e))
        os.rename(self.path + ".tmp", self.path)

    def intake(self, amount, currency, orrn, op=""):
        self.n += 1
        rid = "NAIV-%06d" % self.n
        self.e[rid] = {"state": "queued", "flags": 0, "stan": self.n, "amount": amount,
                       "currency": currency, "orrn": orrn, "op": op, "rrn": "", "auth": "",
                       "created": 1790000000, "updated": 1790000000}
        self._sync()
        return rid

    def change(self, rid, state, **kw):
        e = self.e[rid]
        e["state"] = state
        for k in kw:
            e[k] = kw[k]
        if state in ("printed", "cancelled"):
            del self.e[rid]
        self._sync()
