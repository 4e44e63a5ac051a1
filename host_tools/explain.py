"""`refundctl explain RID`: one refund's outbox record and event records -> the human
timeline a merchant takes to the bank, and what (if anything) is stuck."""
import time

CAUSES = {"timeout": "timeout", "no_answer": "no answer", "mismatch": "mismatched answer",
          "rc91": "host unavailable (91)", "rc96": "host system error (96)",
          "error": "connection error", "ECONNREFUSED": "connection refused",
          "ETIMEDOUT": "connect timeout", "EHOSTUNREACH": "host unreachable"}
F_SENT, F_PRINTING, F_SLIP, F_NOTICE = 1, 2, 4, 16


def cause(c):
    """A send_fail cause as the sender writes it -> words."""
    c = str(c or "failed")
    if c.startswith("unreachable "):
        err = c.split(" ", 1)[1]
        return CAUSES.get(err, "host unreachable (%s)" % err)
    if c in CAUSES:
        return CAUSES[c]
    if c.startswith("rc") and len(c) == 4:
        return "host answered %s" % c[2:]
    return c


class Clock:
    """Event times as UTC; the date once, then times; uptime when the clock was unset."""

    def __init__(self):
        self.day = None

    def __call__(self, r):
        if not r.get("wall"):
            return "uptime %.1fs (clock not set)" % (r.get("up_ms", 0) / 1000.0)
        day = time.strftime("%Y-%m-%d", time.gmtime(r["wall"]))
        t = time.strftime("%H:%M:%S", time.gmtime(r["wall"]))
        if day != self.day:
            self.day = day
            return "%s %s UTC" % (day, t)
        return t


def _runs(labels):
    out = []
    for lab in labels:
        if out and out[-1][0] == lab:
            out[-1][1] += 1
        else:
            out.append([lab, 1])
    return ", ".join(lab if n == 1 else "%s x%d" % (lab, n) for lab, n in out)


def _money(entry):
    a = entry.get("amount")
    if not isinstance(a, int):
        return ""
    return "%d.%02d (currency %s)" % (a // 100, a % 100, entry.get("currency", "?"))


def chain(events):
    """Event records (dicts from evdecode) -> the steps, in order, as short phrases."""
    at = Clock()
    steps = []
    sends, outcomes = 0, []

    def flush_sends():
        nonlocal sends, outcomes
        if sends or outcomes:
            steps.append("sent %d time%s (%s)" % (sends, "" if sends == 1 else "s", _runs(outcomes) or "no answer yet"))
        sends, outcomes = 0, []

    for r in events:
        n, f = r["name"], r.get("fields", {})
        if n == "send":
            sends += 1
            continue
        if n == "send_fail":
            outcomes.append(cause(f.get("cause")))
            continue
        if n == "repeat" and f.get("of") == "send_fail" and outcomes:
            outcomes += [outcomes[-1]] * int(f.get("n", 0))
            continue
        if n == "answer":
            outcomes.append("answered" if f.get("rc") in ("00", None) else "answered %s" % f.get("rc"))
            continue
        flush_sends()
        if n == "captured":
            s = "captured %s by operator %s" % (at(r), f.get("op", "?"))
            if f.get("sup"):
                s += " (supervisor %s)" % f["sup"]
            steps.append(s)
        elif n == "approved":
            steps.append("host approved RRN %s auth %s at %s" % (f.get("rrn", "?"), f.get("auth", "?"), at(r)))
        elif n == "declined":
            steps.append("host declined (response code %s) at %s" % (f.get("rc", "?"), at(r)))
        elif n == "print_begun" and f.get("copy") == "reprint":
            steps.append("reprint started %s" % at(r))
        elif n == "printed":
            steps.append("printed %s" % at(r))
        elif n == "print_fault":
            steps.append("print fault (%s) %s" % (f.get("cause", "?"), at(r)))
        elif n == "notice":
            steps.append("pending notice printed %s" % at(r))
        elif n == "cancel":
            steps.append("cancel by supervisor %s at %s" % (f.get("by", "?"), at(r)))
        elif n == "reversal":
            steps.append("reversal sent (attempt %s)" % f.get("attempt", "?"))
        elif n == "reversed":
            steps.append("host reversed it at %s" % at(r))
    flush_sends()
    return steps


def next_step(entry, events):
    """What the state means and what to do: one line."""
    if entry is None:
        return ("record: the outbox entry has left the history (retention); the events above "
                "are what this terminal still has")
    st, flags = entry.get("state"), entry.get("flags", 0) or 0
    sends = sum(1 for r in events if r["name"] == "send")
    if st == "printed":
        return "complete: approved by the host and the receipt printed; nothing is stuck"
    if st == "approved":
        return ("STUCK: the host approved it (money moved) but the receipt is not printed: check the "
                "printer (paper, cover, cable); the terminal prints it by itself when the printer is ready")
    if st == "queued":
        s = "waiting for the host: not approved yet"
        s += " (%d send%s, outcome unknown: resent with the same STAN, never refunded twice)" % (
            sends, "" if sends == 1 else "s") if flags & F_SENT else " (not sent yet)"
        if entry.get("stale"):
            s = "STUCK (stale): " + s
        return s + "; the terminal retries by itself, `refundctl --tech-key ... retry` sends now"
    if st == "declined":
        return "declined by the host (code %s): no money moved%s" % (
            entry.get("code") or "?", "" if flags & F_SLIP else "; the decline slip is still owed")
    if st == "cancelling":
        return "being cancelled: the reversal is still going to the host (retried by itself)"
    if st == "cancelled":
        return "cancelled: no money moved (or the host reversed it)"
    return "state %s" % st


def timeline(rid, entry, events):
    """Lines for the technician: header, the step chain, the state line."""
    head = "refund %s" % rid
    if entry:
        head += ": %s, %s, original RRN %s" % (entry.get("state"), _money(entry), entry.get("orrn", "?"))
        if entry.get("rrn"):
            head += ", host RRN %s auth %s" % (entry["rrn"], entry.get("auth") or "-")
    steps = chain(events)
    if entry and not any(s.startswith("captured") for s in steps) and entry.get("created"):
        steps.insert(0, "captured %s by operator %s (event rotated away)"
                     % (Clock()({"wall": entry["created"]}), entry.get("op", "?")))
    lines = [head, " -> ".join(steps) if steps else "(no events for this refund on the log)"]
    lines.append(next_step(entry, events))
    lines += settlement_lines(events)
    return lines


_DIFF_TEXT = {"missing": "the host has no approved refund under this rid in that batch",
              "amount": "the host booked another amount (%s)",
              "extra": "only the host has this refund: the terminal never sent it in that batch"}


def settlement_lines(events):
    """One line per settlement difference found for this rid (settle_diff events)."""
    out = []
    for e in events:
        if e.get("name") != "settle_diff":
            continue
        f = e.get("fields", {})
        what = f.get("what", "?")
        text = _DIFF_TEXT.get(what, what)
        if "%s" in text:
            text %= f.get("host", "?")
        out.append("SETTLEMENT DIFFERENCE batch %s currency %s: %s (%s)" % (
            f.get("batch", "?"), f.get("cur", "?"), text, what))
    return out
