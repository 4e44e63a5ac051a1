"""The ISO 8583 service of the host simulator (host_tools/hostsim.py): the host duties of
docs/host-link.md, one handler per request MTI.

`Service.answer(doc, f62)` takes a request that passed hostsim_msg.check_request and its
MAC check, and returns the answer (a dict for hostsim_msg.encode). To serve a new request
type, add its rule to hostsim_msg.RULES and its handler to `Service.handlers`; a rule
without a handler (or the other way round) is refused when the service is made.
"""
import logging

from host_tools.hostsim_ledger import Refund, now_utc
from host_tools.hostsim_msg import RULES
from host_tools.hostsim_settle import Settle

log = logging.getLogger("hostsim")


class Service:
    def __init__(self, ledger, plan, sales, seed, count, elapsed):
        """ledger: hostsim_ledger.Ledger; plan: hostsim_faults.FaultPlan; sales: {orrn:
        amount} or None (every refund approved); count(name): a counter of HostSim.stats;
        elapsed(): seconds since the simulator started."""
        self.ledger = ledger
        self.plan = plan
        self.sales = sales
        self.seed = seed
        self._count = count
        self._elapsed = elapsed
        self._seq = len(ledger.refunds)  # RRNs given so far
        self.settle = Settle(ledger, plan, count, self.f7, self._new_rrn)
        self.handlers = {
            "0200": self.refund, "0201": self.refund,
            "0420": self.reverse, "0421": self.reverse,
            "0800": self.echo,
            "0500": self.settle.reconcile, "0501": self.settle.reconcile,
            "0320": self.settle.upload, "0321": self.settle.upload,
        }
        if set(self.handlers) != set(RULES):
            raise RuntimeError("hostsim: request rules and handlers differ: %s"
                               % sorted(set(self.handlers) ^ set(RULES)))

    def answer(self, doc, f62):
        return self.handlers[doc["t"]](doc, f62)

    def _new_rrn(self):
        self._seq += 1
        return "%06d%06d" % (self.seed % 1000000, self._seq % 1000000)

    @staticmethod
    def f7():
        """Field 7 of an answer: transmission date and time (UTC) MMDDhhmmss."""
        return now_utc().strftime("%m%d%H%M%S")

    # ---- 0800: network management ----

    def echo(self, doc, f62):
        return {"t": "0810", "7": self.f7(), "11": doc["11"], "39": "00", "41": doc["41"], "70": "301"}

    # ---- 0200/0201: refund ----

    def _answer0210(self, doc, rid, rc, rrn="", auth=""):
        a = {"t": "0210", "3": doc["3"], "4": doc["4"], "7": self.f7(), "11": doc["11"],
             "12": doc["12"], "13": doc["13"], "39": rc, "41": doc["41"], "42": doc["42"],
             "49": doc["49"], "62": "rid=" + rid}
        if rrn:
            a["37"] = rrn
        if auth:
            a["38"] = auth
        return a

    def refund(self, doc, f62):
        """The first answer for each (terminal id, rid) is kept; a repeat with the same
        amount, currency and orrn gets it again and moves no money, with others `94`."""
        tid, rid, orrn = doc["41"], f62["rid"], f62["orrn"]
        code = self.plan.unavailable(self._elapsed())
        if code:
            self._count("unavailable")
            return self._answer0210(doc, rid, code)
        rec = self.ledger.find(tid, rid)
        if rec is not None:
            if (rec.amount, rec.currency, rec.orrn) != (doc["4"], doc["49"], orrn):
                self._count("dup_mismatch")
                log.warning("%s rid %s: repeated with other amount/currency/orrn: 94", tid, rid)
                return self._answer0210(doc, rid, "94")
            self._count("repeats")
            return self._answer0210(doc, rid, rec.rc, rec.rrn, rec.auth)
        amount = int(doc["4"])
        rc = self._sale_check(orrn, amount)
        if rc == "00":
            rc = self.plan.decline(tid, rid) or rc
        if rc in ("91", "96"):
            return self._answer0210(doc, rid, rc)
        rrn = self._new_rrn()
        auth = ""
        if rc == "00":
            auth = "%06d" % int(self.plan.roll("auth", "%s|%s" % (tid, rid)) * 1e6)
        # filed under the batch of its first 0200 (repeats keep it, whatever they carry)
        rec = Refund(tid, rid, doc["4"], doc["49"], orrn, doc["11"], rc, rrn, auth,
                     batch=f62.get("batch", ""))
        self.ledger.add(rec)
        if rc == "00":
            self._count("approved")
            self.ledger.book("refund", rec)
        else:
            self._count("declined")
        log.info("%s rid %s amount %d: %s rrn %s", tid, rid, amount, rc, rrn)
        return self._answer0210(doc, rid, rc, rrn, auth)

    def _sale_check(self, orrn, amount):
        """`00`, or `25` (unknown sale) / `13` (more than the sale) with --sales."""
        if self.sales is None:
            return "00"
        sale = self.sales.get(orrn)
        if sale is None:
            return "25"
        if self.ledger.refunded(orrn) + amount > sale:
            return "13"
        return "00"

    # ---- 0420/0421: reversal ----

    def reverse(self, doc, f62):
        """The refund named by rid, or else by the original STAN in field 90, is reversed
        if it was approved and not reversed yet; the answer is `00` either way."""
        tid, rid = doc["41"], f62["rid"]
        rec = self.ledger.find(tid, rid, stan=doc["90"][4:10])
        if rec is not None and rec.rc == "00" and not rec.reversed:
            rec.reversed = True
            self._count("reversed")
            self.ledger.book("reversal", rec)
            log.info("%s rid %s reversed", tid, rec.rid)
        else:
            self._count("reversal_noop")
        return {"t": "0430", "3": doc["3"], "4": doc["4"], "7": self.f7(), "11": doc["11"],
                "39": "00", "41": tid, "42": doc["42"], "49": doc["49"], "62": "rid=" + rid}
