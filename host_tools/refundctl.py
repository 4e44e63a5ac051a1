"""refundctl: the terminal's ECR link, like a cash register (docs/ecr-link.md), and its USB
console, the technician's service link (docs/service-link.md; host_tools/svcctl.py).

  refundctl --port DEV refund --amount MINOR --orig-rrn RRN --operator ID --pin PIN
            [--supervisor ID --supervisor-pin PIN] [--currency 156] [--confirm-duplicate] [--json]
  refundctl --port DEV query RID [--json]
  refundctl --port DEV cancel RID --supervisor ID --supervisor-pin PIN [--json]
  refundctl --port DEV list [--json]
  refundctl --port DEV status [--json]
  refundctl --port DEV reprint RID --operator ID --pin PIN [--json]
  refundctl --port DEV report --operator ID --pin PIN [--json]
  refundctl --port DEV settle --supervisor ID --supervisor-pin PIN [--no-wait] [--json]

On the terminal's USB console (the service link, docs/service-link.md):
  refundctl --port CONSOLE info | status | outbox | metrics | config | explain RID [--json]
  refundctl --port CONSOLE logs [-o FILE.jsonl] [--since CURSOR] [--follow]
  refundctl --port CONSOLE bundle -o FILE.zip
  refundctl --port CONSOLE --tech-key HEX retry | reprint RID | report | settle | clock [--set UTC]
  refundctl --port DEV logs --via mpremote [-o FILE.jsonl]      # the application is down
status, reprint, report and settle (host_tools/settlectl.py) exist on both links: --link auto (default) first sends a
service `info` frame (harmless to the ECR parser) and uses the console if it answers.
refund/query/cancel/list are ECR commands: an ECR frame's ETX (0x03) is a Ctrl-C on a
console, so they are never sent there (--link auto checks the port first).

--port is a tty path or any pyserial URL (socket://HOST:PORT, rfc2217://, loop://).
Every request carries an ECR sequence number (--seq, default from the clock); when no
reply comes within --timeout the *same* frame (same seq) is sent again, up to --tries
times: the terminal recognises the resend and answers with the same rid.

Exit status: 0 answered, 1 refused (JSON {"error": text, "reason": code}), 2 usage,
3 no reply (no board, cannot open the port, timeout, bad CRC after retries); the reason
is one line on stderr.
"""
import argparse
import binascii
import json
import sys
import time

STX, ETX, FS = 0x02, 0x03, 0x1C
MAX_PAYLOAD = 1024
_OVER = 8
_INTS = ("seq", "amount", "currency", "total", "next", "created", "resend", "stale", "live",
         "pending", "oldest", "heap")

EXIT_OK, EXIT_REFUSED, EXIT_NO_REPLY = 0, 1, 3


# ---- framing (mirrors firmware/refund/ecr.py) ------------------------------------------

def frame(payload):
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError("payload %d B > %d" % (n, MAX_PAYLOAD))
    body = bytes((n >> 8, n & 0xFF)) + bytes(payload)
    return bytes((STX,)) + body + (binascii.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big") + bytes((ETX,))


def encode(d):
    """dict -> payload: cmd, seq, then the other keys sorted; values printable ASCII."""
    parts = []
    keys = [k for k in ("cmd", "seq") if k in d] + sorted(k for k in d if k not in ("cmd", "seq"))
    for k in keys:
        v = d[k]
        if v is None:
            continue
        if v is True or v is False:
            v = int(v)
        v = str(v)
        if not all(" " <= c <= "~" for c in v):
            raise ValueError("field %s: printable ASCII only" % k)
        parts.append("%s=%s" % (k, v))
    return "\x1c".join(parts).encode()


def decode(payload):
    """payload -> dict (strings). Raises ValueError on a malformed payload."""
    d = {}
    for pair in bytes(payload).decode("ascii").split("\x1c"):
        k, sep, v = pair.partition("=")
        if not sep or not k:
            raise ValueError("field without key=value")
        if k in d:
            raise ValueError("field %s given twice" % k)
        d[k] = v
    return d


class Decoder:
    """Streaming frame parser: feed(bytes) -> payloads of valid frames; resynchronises
    on the next STX after garbage, bad CRC, bad framing or an oversized length."""

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.max = max_payload
        self.buf = bytearray()
        self.stats = {"frames": 0, "bad_crc": 0, "bad_frame": 0, "oversized": 0, "truncated": 0,
                      "garbage": 0}

    def feed(self, data):
        b = self.buf
        b += data
        out = []
        i = 0
        while i < len(b):
            if b[i] != STX:
                j = b.find(bytes((STX,)), i)
                j = len(b) if j < 0 else j
                self.stats["garbage"] += j - i
                i = j
                continue
            if len(b) - i < 3:
                break
            n = (b[i + 1] << 8) | b[i + 2]
            if n > self.max:
                self.stats["oversized"] += 1
                i += 1
                continue
            end = i + n + _OVER
            if len(b) < end:
                break
            if b[end - 1] != ETX:
                self.stats["bad_frame"] += 1
                i += 1
                continue
            if binascii.crc32(bytes(b[i + 1:end - 5])) & 0xFFFFFFFF != int.from_bytes(b[end - 5:end - 1], "big"):
                self.stats["bad_crc"] += 1
                i += 1
                continue
            out.append(bytes(b[i + 3:end - 5]))
            self.stats["frames"] += 1
            i = end
        del b[:i]
        return out

    def pending(self):
        return len(self.buf)

    def flush(self):
        """The line went quiet: the partial frame at the start is truncated. Drop its
        first byte and scan the rest again; returns payloads like feed()."""
        if not self.buf:
            return []
        self.stats["truncated" if self.buf[0] == STX else "garbage"] += 1
        del self.buf[:1]
        return self.feed(b"")


# ---- link -------------------------------------------------------------------------------

class NoReply(Exception):
    pass


def new_seq():
    # Milliseconds of the clock, 9 digits: a new request gets a new number (it wraps
    # every ~11.6 days, far outside the terminal's resend window of a day... almost:
    # give --seq explicitly to resend on purpose).
    return time.time_ns() // 1000000 % 999999999 + 1


class Link:
    def __init__(self, port, baud=115200, timeout=5.0, tries=3, log=None):
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self.tries = max(1, tries)
        self.dec = Decoder()
        self.log = log or (lambda msg: None)
        self.ser = self._open()

    def _open(self):
        import serial

        return serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.05)

    def close(self):
        if self.ser is not None:
            self.ser.close()

    def _exchange(self, raw, seq):
        if self.ser is None:
            self.ser = self._open()
            self.dec = Decoder()
        self.ser.write(raw)
        self.ser.flush()
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            data = self.ser.read(4096)
            if not data:
                continue
            for payload in self.dec.feed(data):
                try:
                    rep = decode(payload)
                except ValueError:
                    continue
                if rep.get("seq") == seq:
                    return rep
                # a late reply to an earlier request: not ours
        return None

    def request(self, req):
        """Send req (with "seq"); return the reply dict with the same seq. On a timeout
        (or a lost connection: reopened) the identical frame is sent again, tries in
        all; NoReply after the last."""
        import serial

        seq = str(req["seq"])
        raw = frame(encode(req))
        try:
            self.ser.reset_input_buffer()
        except Exception:
            pass
        why = "no reply within %.1f s" % self.timeout
        for attempt in range(self.tries):
            if attempt:
                self.log("seq %s: %s: resending (try %d of %d)" % (seq, why, attempt + 1, self.tries))
            try:
                rep = self._exchange(raw, seq)
                if rep is not None:
                    return rep
                why = "no reply within %.1f s" % self.timeout
            except (serial.SerialException, OSError) as e:
                why = "link lost (%s)" % e
                try:
                    self.close()
                except Exception:
                    pass
                self.ser = None
                time.sleep(min(self.timeout, 0.5))
        raise NoReply("no reply to seq %s after %d tries: %s" % (seq, self.tries, why))


def _typed(rep):
    out = {}
    for k, v in rep.items():
        if k in _INTS and v.lstrip("-").isdigit():
            v = int(v)
        out[k] = v
    return out


def result(rep):
    """Reply dict -> (exit status, JSON-able output)."""
    if "err" in rep:
        return EXIT_REFUSED, {"error": rep.get("text", ""), "reason": rep["err"], "seq": _typed(rep).get("seq")}
    out = _typed(rep)
    out.pop("cmd", None)
    if "items" in out:
        out["refunds"] = [dict(zip(("rid", "state"), it.split(":", 1))) for it in out.pop("items").split(",") if it]
    return EXIT_OK, out


def _human(cmd, code, out):
    if code == EXIT_NO_REPLY:
        return "refundctl: %s" % out["error"]
    if code:
        return "refused (%s): %s" % (out["reason"], out["error"])
    if cmd == "list":
        lines = ["%d live refund(s)" % out.get("total", 0)]
        lines += ["  %s  %s" % (it["rid"], it["state"]) for it in out["refunds"]]
        return "\n".join(lines)
    if cmd == "status":
        return " ".join("%s=%s" % (k, out[k]) for k in sorted(out) if k != "seq")
    if cmd == "report":
        return "queue report printing (%s live)" % out.get("total", "?")
    parts = ["%s %s" % (out.get("rid", "?"), out.get("state", "?"))]
    for k in ("amount", "currency", "orrn", "op", "sup", "code", "rrn", "auth", "print"):
        if k in out:
            parts.append("%s=%s" % (k, out[k]))
    if out.get("resend"):
        parts.append("(resend recognised)")
    return " ".join(parts)


def _build(a, seq):
    if a.cmd == "refund":
        return {"cmd": "REFUND", "seq": seq, "amount": a.amount, "currency": a.currency,
                "orrn": a.orig_rrn, "op": a.operator, "pin": a.pin, "sup": a.supervisor,
                "spin": a.supervisor_pin, "dup": 1 if a.confirm_duplicate else None}
    if a.cmd == "query":
        return {"cmd": "QUERY", "seq": seq, "rid": a.rid}
    if a.cmd == "cancel":
        return {"cmd": "CANCEL", "seq": seq, "rid": a.rid, "sup": a.supervisor,
                "spin": a.supervisor_pin}
    if a.cmd == "reprint":
        return {"cmd": "REPRINT", "seq": seq, "rid": a.rid, "op": a.operator, "pin": a.pin}
    if a.cmd == "report":
        return {"cmd": "REPORT", "seq": seq, "op": a.operator, "pin": a.pin}
    if a.cmd == "status":
        return {"cmd": "STATUS", "seq": seq}
    return {"cmd": "LIST", "seq": seq}


def parser():
    p = argparse.ArgumentParser(prog="refundctl", description="ECR link and service link (USB console) client for the refund terminal",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--port", help="tty path or pyserial URL (socket://HOST:PORT)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply per try")
    p.add_argument("--tries", type=int, default=3, help="sends of the same frame before giving up")
    p.add_argument("--seq", type=int, help="ECR sequence number (default: from the clock)")
    p.add_argument("--verbose", "-v", action="store_true", help="log resends on stderr")
    p.add_argument("--link", choices=("auto", "console", "ecr"), default=None,
                   help="which port --port is (default: ECR commands ecr, service commands console, "
                        "status/reprint/report auto: probed with a service info frame)")
    p.add_argument("--tech-key", help="technician key (hex) for retry/reprint/report/clock on the "
                                      "console (default: env REFUND_TECH_KEY); never printed")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("--port", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--link", default=argparse.SUPPRESS, choices=("auto", "console", "ecr"),
                        help=argparse.SUPPRESS)
    common.add_argument("--tech-key", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refund", parents=[common], help="queue a refund")
    r.add_argument("--amount", required=True, help="minor units (e.g. 1250 = 12.50)")
    r.add_argument("--orig-rrn", required=True, help="RRN of the original purchase (12 characters)")
    r.add_argument("--operator", required=True)
    r.add_argument("--pin", required=True)
    r.add_argument("--supervisor")
    r.add_argument("--supervisor-pin")
    r.add_argument("--currency", default=None, help="ISO 4217 numeric (default: the terminal's)")
    r.add_argument("--confirm-duplicate", action="store_true",
                   help="a supervisor confirms a possible duplicate")
    q = sub.add_parser("query", parents=[common], help="state of one refund")
    q.add_argument("rid")
    c = sub.add_parser("cancel", parents=[common], help="cancel a refund (supervisor)")
    c.add_argument("rid")
    c.add_argument("--supervisor", required=True)
    c.add_argument("--supervisor-pin", required=True)
    sub.add_parser("list", parents=[common], help="live refunds and their states")
    sub.add_parser("status", parents=[common],
                   help="printer state, host link, live/pending/stale refunds, oldest age")
    rp = sub.add_parser("reprint", parents=[common], help="print a printed refund's receipt again (REPRINT)")
    rp.add_argument("rid")
    rp.add_argument("--operator", help="ECR link: operator id (console: --tech-key)")
    rp.add_argument("--pin", help="ECR link: the operator's PIN")
    rr = sub.add_parser("report", parents=[common], help="print the queue report for staff")
    rr.add_argument("--operator", help="ECR link: operator id (console: --tech-key)")
    rr.add_argument("--pin", help="ECR link: the operator's PIN")
    from host_tools import settlectl, svcctl

    settlectl.add_parser(sub, common)
    svcctl.add_parsers(sub, common)
    return p


SERVICE_ONLY = ("info", "outbox", "metrics", "config", "explain", "logs", "bundle", "retry", "clock")
BOTH = ("status", "reprint", "report", "settle")


def _which_link(a, err):
    """'console' or 'ecr' for this command (probing the port for --link auto)."""
    link = a.link or ("console" if a.cmd in SERVICE_ONLY else "auto" if a.cmd in BOTH else "ecr")
    if link != "auto":
        return link
    from host_tools import svclink

    c = svclink.Client(a.port, a.baud, timeout=0.6, tries=2)
    try:
        return "console" if c.probe(timeout=0.6) else "ecr"
    finally:
        c.close()


def run(a, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    if getattr(a, "via", None) != "mpremote":
        try:
            link = _which_link(a, err)
        except Exception as e:  # svclink.LinkError: the port does not open
            return _fail(a, out, err, str(e), "no_port", EXIT_NO_REPLY)
    else:
        link = "console"
    if link == "console":
        from host_tools import svcctl

        if a.cmd not in SERVICE_ONLY + BOTH:
            return _fail(a, out, err, "%s is an ECR command: the console does not take it (it would "
                         "stop the application)" % a.cmd, "usage", 2)
        return svcctl.main_service(a, out, err)
    if a.cmd in SERVICE_ONLY:
        return _fail(a, out, err, "%s is a console command (service link): not on the ECR link" % a.cmd, "usage", 2)
    if a.cmd in ("reprint", "report") and not (a.operator and a.pin):
        return _fail(a, out, err, "%s on the ECR link needs --operator and --pin (on the console: "
                     "--tech-key)" % a.cmd, "usage", 2)
    if a.cmd == "settle" and not (a.supervisor and a.supervisor_pin):
        return _fail(a, out, err, "settle on the ECR link needs --supervisor and --supervisor-pin "
                     "(on the console: --tech-key)", "usage", 2)
    return run_ecr(a, out, err)


def _fail(a, out, err, text, reason, code):
    print("refundctl: " + " ".join(str(text).split()), file=err)
    if getattr(a, "json", False):
        print(json.dumps({"error": text, "reason": reason}), file=out)
    return code


def run_ecr(a, out, err):
    log = (lambda m: print("refundctl: " + m, file=err)) if a.verbose else None
    seq = a.seq if a.seq is not None else new_seq()
    if not 1 <= seq <= 999999999:
        print("refundctl: --seq must be 1..999999999", file=err)
        return 2
    if a.cmd == "refund" and (a.supervisor is None) != (a.supervisor_pin is None):
        print("refundctl: --supervisor and --supervisor-pin go together", file=err)
        return 2
    try:
        link = Link(a.port, a.baud, a.timeout, a.tries, log)
    except Exception as e:  # serial.SerialException, ValueError for a bad URL
        res = {"error": "cannot open %s: %s" % (a.port, e), "reason": "no_port"}
        print(json.dumps(res) if a.json else "refundctl: " + res["error"], file=out if a.json else err)
        return EXIT_NO_REPLY
    try:
        code, res = EXIT_OK, None
        if a.cmd == "list":
            items, start, total = [], 0, 0
            while True:
                req = {"cmd": "LIST", "seq": seq}
                if start:
                    req["from"] = start
                code, page = result(link.request(req))
                if code:
                    res = page
                    break
                items += page.get("refunds", [])
                total = page.get("total", 0)
                if "next" not in page or page["next"] <= start:
                    res = {"total": total, "refunds": items}
                    break
                start = page["next"]
                seq = seq % 999999999 + 1
        elif a.cmd == "settle":
            from host_tools import settlectl

            code, res = settlectl.run_ecr(a, link, seq, out)
            if not code or res.get("batch"):  # watched: its lines are out already
                if a.json:
                    print(json.dumps(res, sort_keys=True), file=out)
                return code
        else:
            code, res = result(link.request(_build(a, seq)))
    except NoReply as e:
        code, res = EXIT_NO_REPLY, {"error": str(e), "reason": "no_reply", "seq": seq}
    finally:
        link.close()
    if a.json:
        print(json.dumps(res, sort_keys=True), file=out)
        if code:
            print("refundctl: " + " ".join(_human(a.cmd, code, res).split()), file=err)
    else:
        print(_human(a.cmd, code, res), file=err if code else out)
    return code


def main(argv=None):
    p = parser()
    a = p.parse_args(argv)
    if not a.port:
        p.error("--port DEV is required (a tty path or a pyserial URL)")
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
