"""refundctl on the USB console: the technician's commands over the service link
(docs/service-link.md). refundctl.py parses the command line and calls run()."""
import json
import os
import sys
import time

from host_tools import evdecode, svclink
from host_tools.explain import timeline

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_REPLY = 0, 1, 2, 3
PRIVILEGED = ("retry", "reprint", "report", "clock", "settle")
LOGS_MAX = 32768


class Fail(Exception):
    """A one-line reason for the technician, and the exit status."""

    def __init__(self, text, code=EXIT_NO_REPLY, reason="error"):
        super().__init__(text)
        self.code = code
        self.reason = reason


def tech_key(a):
    k = getattr(a, "tech_key", None) or os.environ.get("REFUND_TECH_KEY")
    if not k:
        raise Fail("%s is privileged: give --tech-key HEX or set REFUND_TECH_KEY" % a.cmd, EXIT_USAGE, "usage")
    try:
        raw = bytes.fromhex(k)
    except ValueError:
        raise Fail("the technician key must be hex", EXIT_USAGE, "usage") from None
    if len(raw) < 16:
        raise Fail("the technician key must be at least 16 bytes (32 hex digits)", EXIT_USAGE, "usage")
    return k


def add_parsers(sub, common):
    """The console commands, for refundctl's argument parser."""
    for name, text in (("info", "firmware, board, uptime, reset reason, free flash and heap, log cursors"),
                       ("outbox", "every outbox entry"), ("metrics", "counters"),
                       ("config", "the config, redacted"),
                       ("retry", "privileged: every waiting refund is due now, the host is probed now")):
        sub.add_parser(name, parents=[common], help="console: " + text)
    e = sub.add_parser("explain", parents=[common], help="console: one refund's timeline")
    e.add_argument("rid")
    lg = sub.add_parser("logs", parents=[common], help="console: pull the event log as JSON Lines")
    lg.add_argument("-o", "--output", help="JSON Lines file: appended, a pull resumes after its last seq")
    lg.add_argument("--since", type=int, help="cursor: first seq wanted (default 0, or resume -o)")
    lg.add_argument("--follow", action="store_true", help="keep polling for new records")
    lg.add_argument("--via", choices=("service", "mpremote"), default="service",
                    help="mpremote: copy the segments over the raw REPL (the application is down)")
    lg.add_argument("--ev-dir", default="/flash/ev", help="with --via mpremote: the log directory")
    lg.add_argument("--force", action="store_true",
                    help="with --via mpremote: even if the application still answers (it is stopped)")
    lg.add_argument("--progress", action="store_true", default=None, help="progress bar even if not a tty")
    lg.add_argument("--no-progress", dest="progress", action="store_false")
    b = sub.add_parser("bundle", parents=[common], help="console: zip of logs, outbox, status... + report.html")
    b.add_argument("-o", "--output", required=True)
    c = sub.add_parser("clock", parents=[common], help="console, privileged: set the UTC clock")
    c.add_argument("--set", type=int, help="UTC seconds (default: this computer's clock)")


# ---- fetching -------------------------------------------------------------------------

def outbox_entries(c):
    entries, start = [], 0
    while True:
        nxt = None
        for hdr, _body in c.stream({"cmd": "outbox", "from": start, "max": 40}):
            if hdr.get("part", 0) == 0:
                page = []  # the reply (re)started
            page += hdr.get("entries", [])
            nxt = hdr.get("next")
        entries += page
        if nxt is None or nxt == start:
            return entries
        start = nxt


def explain_data(c, rid):
    entry, found, body = None, False, bytearray()
    for hdr, b in c.stream({"cmd": "explain", "rid": rid}):
        if hdr.get("part", 0) == 0:
            entry, found, body = hdr.get("entry"), hdr.get("found", False), bytearray()
        body += b
    return entry, found, evdecode.decode(body)


class Progress:
    """A one-line progress bar on stderr: records, bytes, rate and ETA."""

    def __init__(self, stream, on):
        self.f, self.on = stream, on
        self.t0 = time.monotonic()
        self.bytes = 0
        self.last = 0.0

    def update(self, got_recs, todo_recs, avg, force=False):
        if not self.on:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        total = got_recs + todo_recs
        frac = got_recs / total if total else 1.0
        el = max(now - self.t0, 1e-3)
        rate = self.bytes / el
        left = todo_recs * avg
        eta = left / rate if rate > 0 else 0
        bar = "#" * int(frac * 30)
        self.f.write("\r[%-30s] %3d%% %d/%d records %.1f/%.1f KB %.1f KB/s ETA %ds "
                     % (bar, frac * 100, got_recs, total, self.bytes / 1024.0,
                        (self.bytes + left) / 1024.0, rate / 1024.0, eta))
        self.f.flush()

    def done(self):
        if self.on:
            self.f.write("\n")
            self.f.flush()


def last_seq(path):
    """The seq of the last whole line of a JSON Lines file (0 if none); a torn last line
    (an interrupted write) is cut off so the resumed pull appends cleanly."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        keep = len(data)
        lines = data.split(b"\n")
        if lines and lines[-1].strip():  # no final newline: the write was interrupted
            keep -= len(lines[-1])
        seq = 0
        for line in reversed(data[:keep].split(b"\n")):
            if line.strip():
                try:
                    seq = int(json.loads(line)["seq"])
                    break
                except (ValueError, KeyError, TypeError):
                    raise Fail("%s: last line is not a record: not resuming into it" % path,
                               EXIT_USAGE, "usage") from None
        f.truncate(keep)
    return seq


def pull_logs(c, since, write, progress=None, max_bytes=LOGS_MAX, tries=3, follow=False, stop=None):
    """Pull records with seq >= since, calling write(record) in order; resumes by cursor
    after a lost frame. Returns {"next", "head", "first", "lost", "records", "bytes"}."""
    cursor, info = since, {"records": 0, "bytes": 0, "lost": 0, "head": since, "first": since}
    fails, avg = 0, 60.0
    while True:
        before = cursor
        try:
            done = False
            for hdr, body in c.stream({"cmd": "logs", "since": cursor, "max": max_bytes}, tries=1):
                info["head"], info["first"] = hdr.get("head", info["head"]), hdr.get("first", info["first"])
                info["lost"] += hdr.get("lost", 0)
                for r in evdecode.decode(body):
                    if r["seq"] >= cursor:
                        write(r)
                        info["records"] += 1
                        cursor = r["seq"] + 1
                cursor = max(cursor, hdr.get("next", cursor))
                info["bytes"] += len(body)
                if info["records"]:
                    avg = max(16.0, info["bytes"] / info["records"])
                if progress:
                    progress.bytes = info["bytes"]
                    progress.update(info["records"], max(0, info["head"] - cursor), avg)
                fails = 0
                done = cursor >= info["head"]
        except svclink.LinkError as e:
            fails += 1
            if fails >= tries:
                raise Fail("%s (pulled up to seq %d: run the same command to resume)" % (e, cursor - 1),
                           EXIT_NO_REPLY, e.reason) from None
            time.sleep(0.5 * fails)  # a pulled cable, a rebooting board: give it a moment
            continue
        except svclink.ServiceError as e:
            raise Fail("board refused logs: %s (%s)" % (e, e.err), EXIT_REFUSED, e.err) from None
        info["next"] = cursor
        if not done and cursor == before:
            done = True  # a whole reply without a record: nothing more to read now
        if done and not follow:
            if progress:
                progress.update(info["records"], 0, avg, force=True)
            return info
        if done:
            if stop is not None and stop():
                return info
            time.sleep(1.0)


# ---- commands -------------------------------------------------------------------------

def _human_kv(d, indent=""):
    lines = []
    for k in sorted(d):
        v = d[k]
        if isinstance(v, dict):
            lines.append("%s%s:" % (indent, k))
            lines += _human_kv(v, indent + "  ")
        else:
            lines.append("%s%s: %s" % (indent, k, v))
    return lines


def _outbox_lines(entries):
    lines = ["%d entr%s" % (len(entries), "y" if len(entries) == 1 else "ies")]
    for e in entries:
        lines.append("  %-12s %-10s %8s %s op=%s rrn=%s auth=%s%s" % (
            e.get("rid"), e.get("state"), e.get("amount"), e.get("currency"), e.get("op"),
            e.get("rrn") or "-", e.get("auth") or "-", " STALE" if e.get("stale") else ""))
    return lines


def _app_answers(port, baud):
    c = svclink.Client(port, baud, timeout=0.6, tries=2)
    try:
        return c.probe(timeout=0.6, strict=True)
    finally:
        c.close()


def cmd_logs(a, c, out, err):
    since = a.since
    fh = None
    if a.output:
        if since is None:
            last = last_seq(a.output)
            since = last + 1 if last else 0  # resume after the file's last record
        fh = open(a.output, "a", encoding="utf-8")
    dest = fh or out

    def write(r):
        dest.write(json.dumps(r, sort_keys=True) + "\n")
        dest.flush()

    prog = Progress(err, a.progress if a.progress is not None else err.isatty())
    try:
        if a.via == "mpremote":
            from host_tools.mpfallback import pull_via_mpremote

            if not a.force and _app_answers(a.port, a.baud):
                raise Fail("the application is running and answers on %s: pull without --via mpremote "
                           "(mpremote's Ctrl-C would stop it; --force to do it anyway)" % a.port, EXIT_USAGE, "usage")
            info = pull_via_mpremote(a.port, a.ev_dir, since or 0, write)
        else:
            info = pull_logs(c, since or 0, write, prog, tries=a.tries, follow=a.follow)
    finally:
        prog.done()
        if fh:
            fh.close()
    if info.get("lost"):
        err.write("refundctl: %d record(s) had rotated away before this pull\n" % info["lost"])
    summary = dict(info, output=a.output)
    if a.json and a.output:
        out.write(json.dumps(summary, sort_keys=True) + "\n")
    elif a.output:
        out.write("%d record(s) -> %s (next %s)\n" % (info["records"], a.output, info.get("next")))
    return EXIT_OK


def run(a, c, out=None, err=None):
    """One service command on an open Client; returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    cmd = a.cmd
    if cmd == "logs":
        return cmd_logs(a, c, out, err)
    if cmd == "bundle":
        from host_tools.report import bundle

        res = bundle(c, a.output, log=lambda m: err.write("refundctl: %s\n" % m) if a.verbose else None)
        out.write((json.dumps(res, sort_keys=True) if a.json else
                   "bundle %s: %d records, %d entries" % (a.output, res["records"], res["entries"])) + "\n")
        return EXIT_OK
    if cmd == "explain":
        entry, found, events = explain_data(c, a.rid)
        lines = timeline(a.rid, entry, events)
        if a.json:
            out.write(json.dumps({"rid": a.rid, "found": found, "entry": entry, "events": events,
                                  "timeline": lines}, sort_keys=True) + "\n")
        else:
            out.write("\n".join(lines) + "\n")
        return EXIT_OK
    if cmd == "outbox":
        res = {"entries": outbox_entries(c)}
        text = _outbox_lines(res["entries"])
    elif cmd == "settle":
        from host_tools import settlectl

        code, res = settlectl.run_console(a, c, tech_key(a), out)
        if a.json:
            out.write(json.dumps(res, sort_keys=True) + "\n")
        return code
    elif cmd in PRIVILEGED:
        key = tech_key(a)
        if cmd == "reprint":
            res = c.privileged("reprint", key, "rid", a.rid)
        elif cmd == "clock":
            t = int(a.set if a.set is not None else time.time())
            res = c.privileged("clock", key, "t", t)
        else:
            res = c.privileged(cmd, key)
        text = _human_kv({k: v for k, v in res.items() if k not in ("id", "ok")})
    else:
        res = c.call(cmd)
        if cmd == "metrics":
            res = {"counters": res.get("counters", {})}
        text = _human_kv({k: v for k, v in res.items() if k not in ("id", "ok", "_body")})
    res = {k: v for k, v in res.items() if k not in ("id", "ok", "_body")}
    out.write((json.dumps(res, sort_keys=True) if a.json else "\n".join(text)) + "\n")
    return EXIT_OK


def main_service(a, out=None, err=None, client=None):
    """Open the link, run, turn every failure into one line on stderr and an exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    c = client
    try:
        if c is None and getattr(a, "via", None) != "mpremote":
            c = svclink.Client(a.port, a.baud, a.timeout, a.tries,
                               log=(lambda m: err.write("refundctl: %s\n" % m)) if a.verbose else None)
        return run(a, c, out, err)
    except Fail as e:
        return _fail(a, out, err, str(e), e.reason, e.code)
    except svclink.ServiceError as e:
        text = str(e)
        if e.err == "auth":
            text = "authentication refused: " + text
        return _fail(a, out, err, text, e.err, EXIT_REFUSED)
    except svclink.LinkError as e:
        return _fail(a, out, err, str(e), e.reason, EXIT_NO_REPLY)
    except KeyboardInterrupt:
        return _fail(a, out, err, "interrupted", "interrupted", 130)
    finally:
        if c is not None and client is None:
            c.close()


def _fail(a, out, err, text, reason, code):
    text = " ".join(str(text).split())  # one line
    err.write("refundctl: %s\n" % text)
    if getattr(a, "json", False):
        out.write(json.dumps({"error": text, "reason": reason}) + "\n")
    return code
