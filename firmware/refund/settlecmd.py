# Settlement on the ECR link (docs/ecr-link.md): SETTLE by a supervisor, and the fields
# STATUS gains while one runs. Kept apart from refund.intake: a terminal without
# settlement (no refund.settle) answers SETTLE "not available".
from refund.errors import Refused
from refund.staff import SUPERVISOR


def ecr_settle(intake, req):
    """SETTLE: sup + spin -> {"settle": "started" | "running", "batch": "NNNNNN"}."""
    st = intake.settle
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
