"""The whole-terminal soak (host_tools/soak.py, `make soak`) in short: 30 refunds and 5
power cuts on the 32-bit frozen build at 96 KiB with the host's and the printer's faults,
reconciled. Then the same reconciliation fed a doctored ledger and paper: each broken
invariant is a violation naming the rid and the seed, with the log lines that show it."""
import copy

import pytest

from host_tools.soak import Soak, render_soak

SEED = 14


@pytest.fixture(scope="module")
def run(tmp_path_factory, vboard32):
    s = Soak(refunds=30, cuts=5, seed=SEED, interp="32", heap="96k", settle_every=0,
             workdir=str(tmp_path_factory.mktemp("soak")), cancel_p=0.15, pace=0.1)
    return s, s.run()


def test_short_soak_reconciles(run):
    s, res = run
    assert res["ok"], render_soak(res) + "\n".join(
        "%s %s: %s\n  %s" % (v["kind"], v["rid"], v["what"], "\n  ".join(v["log"])) for v in res["violations"])
    assert res["refunds"] == 30 and res["power_cuts"] == 5 and res["boots"] >= 6
    assert sum(res["terminal_states"].values()) == 30
    assert res["ledger"]["refunds"] == res["terminal_states"].get("printed", 0) + res["ledger"]["reversals"]
    assert res["faults"]["host"]["delayed_answer_0_10ms"] > 0
    assert "PASS" in render_soak(res)


def test_broken_invariants_are_violations_with_rid_seed_and_log(run):
    s, res = run
    states, ledger, segs = copy.deepcopy(s.final)
    printed = sorted(r for r, st in states.items() if st == "printed")
    assert len(printed) >= 3
    a, b = printed[:2]
    c = next(r for r in printed[2:] if any(x["rid"] == r and x["kind"] == "merchant" and not x["reprint"]
                                           for x in segs))
    ledger.append(dict(next(e for e in ledger if e["rid"] == a and e["type"] == "refund")))  # booked twice
    ledger = [e for e in ledger if e["rid"] != b]  # printed, never booked
    twice = next(x for x in segs if x["rid"] == c and x["kind"] == "merchant" and not x["reprint"])
    segs.append(dict(twice))  # a second original
    states[sorted(states)[-1]] = "queued"  # not final after the drain
    s.violations = []
    s.judge(states, ledger, segs)
    got = {(v["kind"], v["rid"]) for v in s.violations}
    assert ("ledger_twice", a) in got and ("printed_not_booked", b) in got and ("printed_twice", c) in got
    assert ("missing", sorted(states)[-1]) in got
    for v in s.violations:
        assert v["seed"] == SEED and any(v["rid"] in ln for ln in v["log"]), v
