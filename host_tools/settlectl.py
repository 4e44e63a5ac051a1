"""`refundctl settle`: start the end-of-day settlement and watch it to the end.

  refundctl --port ECR settle --supervisor 99 --supervisor-pin PIN [--no-wait] [--json]
  refundctl --port CONSOLE --tech-key HEX settle [--no-wait] [--json]

On the ECR link it sends SETTLE (a supervisor's id and PIN; an operator is refused) and
then polls STATUS; on the console (service link) it sends the privileged `settle` and
polls `status`. Each change of phase is one line on stdout ("waiting: settlement
waiting: host unreachable, 3 refunds unresolved", "uploading: ..."); at the end the
batch, its totals and the number of differences (each one: `refundctl explain RID`).
Exit status as refundctl: 0 the batch closed (also with differences: they are on the
slip and in the log), 1 refused, 3 no reply or --wait-s passed with the settlement
still running (it goes on in the terminal).
"""
import argparse
import json
import time

EXIT_OK, EXIT_REFUSED, EXIT_NO_REPLY = 0, 1, 3


def add_parser(sub, common):
    s = sub.add_parser("settle", parents=[common],
                       help="end-of-day settlement: start it (supervisor on the ECR link, "
                            "--tech-key on the console) and watch it")
    s.add_argument("--supervisor", help="ECR link: supervisor id")
    s.add_argument("--supervisor-pin", help="ECR link: the supervisor's PIN")
    s.add_argument("--no-wait", action="store_true", help="start it and return")
    s.add_argument("--wait-s", type=float, default=600.0, help="watch at most this long (default 600)")
    s.add_argument("--poll-s", type=float, default=0.5, help=argparse.SUPPRESS)


def _line(phase, detail):
    return "%s: %s" % (phase, detail) if detail else phase


def watch(a, started, poll, out):
    """started: {"batch": int, "settle": "started" | "running"}; poll() -> (phase,
    detail, last) with last = {"batch", "diff_n", "totals"} or None. Returns the exit
    status and the JSON result."""
    b = started["batch"]
    res = {"batch": b, "settle": started["settle"]}
    if not a.json:
        out.write("batch %06d: settlement %s\n" % (b, started["settle"]))
    if a.no_wait:
        return EXIT_OK, res
    seen = None
    end = time.monotonic() + a.wait_s
    while True:
        phase, detail, last = poll()
        if last is not None and last["batch"] >= b and phase == "idle":
            res.update(closed=True, diff_n=last["diff_n"], totals=last["totals"], date=last.get("date", ""))
            if not a.json:
                tot = ", ".join("%s: %d refunds, %d" % (c, n, t) for c, n, t in last["totals"]) or "no refunds"
                out.write("batch %06d closed (%s)%s\n" % (
                    b, tot, "; %d difference%s: see the slip and `refundctl explain RID`" % (last["diff_n"], "s" if last["diff_n"] > 1 else "")
                    if last["diff_n"] else "; totals agree"))
            return EXIT_OK, res
        if (phase, detail) != seen and phase != "idle":
            seen = (phase, detail)
            if not a.json:
                out.write(_line(phase, detail) + "\n")
                out.flush()
        if time.monotonic() > end:
            res.update(closed=False, phase=phase, detail=detail)
            if not a.json:
                out.write("still %s after %.0f s: the terminal goes on settling\n" % (phase, a.wait_s))
            return EXIT_NO_REPLY, res
        time.sleep(a.poll_s)


def run_ecr(a, link, seq, out):
    """SETTLE over an open refundctl.Link, then STATUS polls."""
    from host_tools.refundctl import result

    code, rep = result(link.request({"cmd": "SETTLE", "seq": seq, "sup": a.supervisor,
                                     "spin": a.supervisor_pin}))
    if code:
        return code, rep
    state = {"seq": seq}

    def poll():
        state["seq"] = state["seq"] % 999999999 + 1
        c, st = result(link.request({"cmd": "STATUS", "seq": state["seq"]}))
        if c:
            raise RuntimeError(st.get("error"))
        last = None
        if "lbatch" in st:
            last = {"batch": int(st["lbatch"]), "diff_n": int(st.get("ldiffs", 0)),
                    "date": st.get("ldate", "").strip("-"), "totals": [
                (k[7:], int(st[k]), int(st.get("ltotal_" + k[7:], 0))) for k in sorted(st)
                if k.startswith("lcount_")]}
        return st.get("settle", "idle"), st.get("sdetail", ""), last

    return watch(a, {"batch": int(rep["batch"]), "settle": rep["settle"]}, poll, out)


def run_console(a, client, key, out):
    rep = client.privileged("settle", key)

    def poll():
        s = client.call("status").get("settle") or {}
        return s.get("phase", "idle"), s.get("detail", ""), s.get("last")

    return watch(a, {"batch": rep["batch"], "settle": rep["settle"]}, poll, out)


def dumps(res):
    return json.dumps(res, sort_keys=True)
