# The resident part of settlement: ECR SETTLE (docs/ecr-link.md), the fields STATUS
# gains, and Gate, which loads refund.settle (the task) only while a settlement runs
# and unloads it afterwards: its modules, object and task hold ~2.5 KB of heap that a
# 96 KiB board needs for its queue the rest of the day; its task, too, exists only
# then. Gate.tick() (housekeeping, every 5 s) resumes one and starts the daily settle_at.
import asyncio
import gc
import json
import sys
from refund.config import settle_minutes
from refund.errors import Refused
from refund.journal import exists
from refund.receipt import civil
from refund.staff import SUPERVISOR

IDLE = "idle"
_MODULES = ("settle", "settlemsg", "settleslip")
gate = None  # the terminal's Gate (the intake's), None: SETTLE not available


def read_state(p):
    """A settlement state file (JSON with an int "b"), or None."""
    try:
        with open(p) as f:
            d = json.load(f)
        return d if isinstance(d, dict) and isinstance(d.get("b"), int) else None
    except (OSError, ValueError):
        return None


def last_summary(la):
    return {"batch": la["b"], "closed": la.get("closed", 0), "date": la.get("date", ""),
            "diff_n": la.get("diff_n", 0), "totals": la.get("totals", [])}


class Gate:
    def __init__(self, make, ob, cfg, log, now):
        """make(): a new refund.settle.Settlement (imports it)."""
        self._make = make
        self.ob = ob
        self.cfg = cfg
        self.log = log
        self.now = now
        self._path = ob.root + "/settle"
        self._at = settle_minutes(cfg.get("settle_at", ""))
        self._task = None
        self._look = True  # whether a state file may be on flash that no task runs
        self.obj = None
        self.last = read_state(self._path + ".last")

    def _load(self):
        if self.obj is None:
            self.obj = self._make()
        return self.obj

    def _unload(self):
        self.obj = None
        import refund

        for m in _MODULES:
            if "refund." + m in sys.modules:
                del sys.modules["refund." + m]
            try:
                delattr(refund, m)
            except (AttributeError, KeyError):  # KeyError: MicroPython's, not loaded
                pass
        gc.collect()

    def start(self, by, day=0):
        """-> (started, batch) as Settlement.start; MemoryError, OSError."""
        r = self._load().start(by, day)
        self._run()
        return r

    def _run(self):
        if self._task is None:
            self._task = asyncio.create_task(self._drive())

    async def _drive(self):
        # The task exists only while a settlement runs (no resident task on a small board).
        try:
            await self.obj.run()  # until it has ended
            self.last = self.obj.last
        except Exception as e:  # noqa: the state file stays; tick() resumes it
            self._look = True
            self.log("settle", "settlement task failed: %r; resuming" % (e,), level="ERROR")
        finally:
            self._task = None
            self._unload()

    def wake(self, *_):
        if self.obj is not None:
            self.obj.wake()

    def status(self):
        if self.obj is not None:
            return self.obj.status()
        d = {"phase": IDLE, "detail": ""}
        if self.last is not None:
            d["last"] = last_summary(self.last)
        return d

    def tick(self):
        """Housekeeping, every few seconds: resume a settlement left on flash (boot, a
        failed task), or start the daily one (settle_at)."""
        if self._task is not None:
            return
        # The flash is looked at once (boot, or after a task failed), not every tick:
        # otherwise only start() makes a state file, and it runs the task itself.
        left = self._look and exists(self._path)
        self._look = False
        if self.ob.bt.cut or left:
            try:
                self._load()
            except MemoryError:
                gc.collect()
                self._look = left
                return  # next tick
            self._run()
            return
        self._auto()

    def _auto(self):
        if self._at is None or self.obj is not None:
            return
        y, mo, d, h, mi, _s = civil(self.now() + 60 * self.cfg.get("tz_min", 0))
        day = y * 10000 + mo * 100 + d
        if h * 60 + mi >= self._at and day > (self.last.get("day", 0) if self.last else 0):
            try:
                self.start("settle_at", day)
            except (OSError, MemoryError) as e:
                self.log("settle", "settle_at: could not start: %r" % (e,), level="ERROR")


def ecr_settle(intake, req):
    """SETTLE: sup + spin -> {"settle": "started" | "running", "batch": "NNNNNN"}."""
    st = gate
    sup, spin = req.get("sup") or "", req.get("spin") or ""
    if not sup or not spin:
        return {"err": "supervisor_required", "text": "SETTLE needs a supervisor id and PIN"}
    try:
        intake.staff.check(sup, spin, SUPERVISOR)
    except Refused as r:
        return {"err": r.code, "text": r.text}
    if st is None:
        return {"err": "not_available", "text": "settlement is not available on this terminal"}
    try:
        started, b = st.start("supervisor " + sup)
    except OSError as e:
        return {"err": "flash_error", "text": "could not record the settlement start (%s)" % e}
    intake.log("intake", "SETTLE by supervisor %s: batch %06d %s" % (sup, b, "started" if started
                                                                       else "already settling"))
    return {"settle": "started" if started else "running", "batch": "%06d" % b}


def status_fields(rep, st):
    """STATUS: settle (phase), sbatch, sunresolved, sdiffs, sdetail; the last closed
    batch: lbatch, ldiffs, ldate (host MMDD), lcount_CCC / ltotal_CCC per currency."""
    if st is None:
        return
    s = st.status()
    rep["settle"] = s["phase"]
    if "batch" in s:
        rep["sbatch"] = "%06d" % s["batch"]
        rep["sunresolved"] = s["unresolved"]
        rep["sdiffs"] = s["diff_n"]
    if s["detail"]:
        rep["sdetail"] = s["detail"][:64]
    la = s.get("last")
    if la:
        rep["lbatch"] = "%06d" % la["batch"]
        rep["ldiffs"] = la["diff_n"]
        rep["ldate"] = la["date"] or "-"
        for c, n, t in la["totals"]:
            rep["lcount_" + c], rep["ltotal_" + c] = n, t
