"""`refundctl explain` wording (host_tools/explain.py): the issue's example timeline from
event records, repeats folded in, and the state line for every outbox state."""
from host_tools.explain import chain, next_step, timeline

T = 1767434531  # 2026-01-03 10:02:11 UTC


def ev(name, dt=None, **fields):
    return {"name": name, "wall": 0 if dt is None else T + dt, "up_ms": 5000, "fields": fields}


def test_the_issue_example():
    events = [ev("captured", 0, op="01"), ev("send"), ev("send_fail", cause="timeout"), ev("send"),
              ev("send_fail", cause="unreachable ECONNREFUSED"), ev("send"), ev("answer", rc="00"),
              ev("approved", 761, rrn="000001000001", auth="667311"), ev("print_begun", 762, copy="original"),
              ev("printed", 762)]
    assert " -> ".join(chain(events)) == (
        "captured 2026-01-03 10:02:11 UTC by operator 01 -> sent 3 times (timeout, connection refused, "
        "answered) -> host approved RRN 000001000001 auth 667311 at 10:14:52 -> printed 10:14:53")


def test_repeats_unset_clock_and_decline():
    events = [ev("captured", None, op="02", sup="99"), ev("send"), ev("send_fail", cause="timeout"),
              {"name": "repeat", "wall": 0, "up_ms": 9000, "fields": {"of": "send_fail", "n": 4}},
              ev("send"), ev("answer", rc="05"), ev("declined", None, rc="05")]
    text = " -> ".join(chain(events))
    assert "captured uptime 5.0s (clock not set) by operator 02 (supervisor 99)" in text
    assert "sent 2 times (timeout x5, answered 05)" in text and "host declined (response code 05)" in text


def test_state_lines():
    base = {"rid": "K7Q2-000001", "amount": 1234, "currency": 156, "orrn": "ORIG00000001", "op": "01",
            "created": T, "rrn": "", "auth": "", "code": "", "flags": 0, "stale": False}
    assert "nothing is stuck" in next_step(dict(base, state="printed"), [])
    assert next_step(dict(base, state="approved"), []).startswith("STUCK: the host approved it")
    assert "not sent yet" in next_step(dict(base, state="queued"), [])
    s = next_step(dict(base, state="queued", flags=1, stale=True), [ev("send"), ev("send")])
    assert s.startswith("STUCK (stale)") and "2 sends" in s
    assert "slip is still owed" in next_step(dict(base, state="declined", code="05"), [])
    assert "no money moved" in next_step(dict(base, state="cancelled"), [])
    assert "left the history" in next_step(None, [])
    lines = timeline("K7Q2-000001", dict(base, state="printed", rrn="000001000001", auth="667311"), [])
    assert lines[0] == ("refund K7Q2-000001: printed, 12.34 (currency 156), original RRN ORIG00000001, "
                        "host RRN 000001000001 auth 667311")
    assert "(event rotated away)" in lines[1]
