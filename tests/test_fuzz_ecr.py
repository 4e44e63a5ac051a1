"""ECR frames fuzzed against the running terminal (issue 14, fuzz campaigns; the parser
alone is fuzzed by tests/test_ecr.py through tests/mp/ecr_fuzz.py): the whole virtual-board
terminal with the host simulator and the printer emulator (host_tools/shop.py) gets, on
its ECR tty, damaged frames (bit flips, cuts, inserted bytes, noise, oversized and bogus
headers, bad CRC) and well-framed requests that break the rules (unknown commands, bad
or missing seq, bad amounts, currencies, RRNs, operators, wrong PINs that lock an
operator out, supervisor needed, unknown and malformed rids, extra and repeated keys,
non-ASCII bytes, payloads at the size limit), interleaved with genuine REFUND requests
(a till's) and their resends.

Checked: every refund the terminal acknowledged with a rid is kept and ends printed,
the host ledger holds exactly those (once each), a resent genuine request gets the same
rid, the terminal never refused with `internal` and never logged an intake error or
restarted its ECR task, and the ECR task still answers STATUS.
REFUND_FUZZ_N cases (default 300; make soak 10,000), REFUND_FUZZ_SEED (default 4242)."""
import json
import os
import random
import threading
import time

import serial

from host_tools import refundctl, reliability
from host_tools.shop import Shop

N = int(os.environ.get("REFUND_FUZZ_N", "300"))
SEED = int(os.environ.get("REFUND_FUZZ_SEED", "4242"))
GENUINE_EVERY = 50  # one genuine REFUND per this many fuzz cases
# valid refunds among the fuzz (an unknown key is ignored, an empty currency is the
# terminal's): accepted, then kept like the genuine ones; any other fuzz REFUND accepted
# is a violation
MAY_ACCEPT = ("key_unknown", "currency_default")


def fr(d):
    return refundctl.frame(refundctl.encode(d))


def raw_frame(payload):
    return refundctl.frame(payload)


class Fuzz:
    def __init__(self, seed):
        self.rnd = random.Random(seed)
        self.seq = 500000000  # fuzz seqs; genuine ones count from 1
        self.orrn = 0
        self.cat_of = {}  # seq -> the category of the case that used it

    def next_seq(self):
        self.seq += 1
        return self.seq

    def refund(self, **kw):
        self.orrn += 1
        d = {"cmd": "REFUND", "seq": self.next_seq(), "amount": self.rnd.randint(100, 999),
             "orrn": "FZE%09d" % self.orrn, "op": "01", "pin": "0000"}  # wrong PIN unless set
        d.update(kw)
        return {k: v for k, v in d.items() if v is not None}

    def case(self):
        """(category, bytes)."""
        first = self.seq
        cat, data = self._case()
        for s in range(first + 1, self.seq + 1):
            self.cat_of[s] = cat
        return cat, data

    def _case(self):
        rnd = self.rnd
        k = rnd.randrange(24)
        if k <= 5:  # damaged frames
            f = bytearray(fr(self.refund(pin="1234")))
            kind = ("flip", "cut", "insert", "noise", "big", "bad_crc")[k]
            if kind == "flip":
                i = rnd.randrange(len(f))
                f[i] ^= rnd.randint(1, 255)
            elif kind == "cut":
                f = f[:rnd.randrange(len(f))]
            elif kind == "insert":
                i = rnd.randint(1, len(f) - 1)
                f[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
            elif kind == "noise":
                f = bytearray(rnd.choice([0, 2, 3, 0x1C, 0x41, 0xFF, rnd.randrange(256)])
                              for _ in range(rnd.randint(1, 60)))
            elif kind == "big":
                n = rnd.randint(1025, 0xFFFF)
                f = bytearray((2, n >> 8, n & 0xFF)) + bytes(rnd.randrange(256) for _ in range(20))
            else:
                f[-2] ^= 0x5A
            # A damaged genuine-looking REFUND (correct PIN) must never be taken.
            return "frame_" + kind, bytes(f)
        if k == 6:
            return "unknown_cmd", fr({"cmd": rnd.choice(["FOO", "refund", "", "REFUNDX", "DELETE", "Q"]),
                                      "seq": self.next_seq()})
        if k == 7:  # seq missing, not digits, too long: dropped or refused
            d = self.refund(pin="1234")
            v = rnd.choice([None, "", "abc", "1234567890", "-1", "1.5", " 12", "0x10"])
            if v is None:
                d.pop("seq")
            else:
                d["seq"] = v
            return "bad_seq", fr(d)
        if k == 8:
            return "bad_amount", fr(self.refund(pin="1234", amount=rnd.choice(
                ["0", "-5", "12.50", "1e3", "", "99999999999999", "5000001", " 100", "abc", "0000"])))
        if k == 9:
            c = rnd.choice(["840", "ABC", "", "1566", "0", "-156", "15 6"])
            # an empty currency is the terminal's: a valid refund
            return "currency_default" if c == "" else "bad_currency", fr(self.refund(pin="1234", currency=c))
        if k == 10:
            return "bad_orrn", fr(self.refund(pin="1234", orrn=rnd.choice(
                ["", "SHORT", "X" * 13, "ABC-12345678", "abc def ghij", "\x7e" * 12])))
        if k == 11:
            return "bad_operator", fr(self.refund(pin="1234", op=rnd.choice(["77", "", "99", "0", "01 "])))
        if k == 12:  # wrong PINs for operator 02: locks 02 out (the till uses 01)
            return "wrong_pin", fr(self.refund(op="02", pin=rnd.choice(["0000", "2469", "", "24680", "abcd"])))
        if k == 13:
            d = self.refund(pin="1234")
            for f in rnd.sample(["amount", "orrn", "op", "pin", "cmd"], rnd.randint(1, 3)):
                d.pop(f)
            return "missing_fields", fr(d)
        if k == 14:  # above the supervisor threshold without a supervisor, or a bad one
            return "supervisor_needed", fr(self.refund(pin="1234", amount=rnd.randint(100001, 5000000),
                                                       sup=rnd.choice([None, "01", "99"]),
                                                       spin=rnd.choice([None, "0000", "1234"])))
        if k == 15:
            return "query_bad", fr({"cmd": "QUERY", "seq": self.next_seq(), "rid": rnd.choice(
                ["", "XXXX-000001", "0000-000000", "A" * 40, "K7Q2-00001\x7e", "-"])})
        if k == 16:
            return "cancel_bad", fr({"cmd": "CANCEL", "seq": self.next_seq(), "rid": rnd.choice(
                ["", "XXXX-000001", "A" * 40]), "sup": "99", "spin": rnd.choice(["0000", "", "99999"])})
        if k == 17:
            return "list_status", fr({"cmd": rnd.choice(["LIST", "STATUS"]), "seq": self.next_seq(),
                                      "from": rnd.choice(["", "0", "abc", "999999999", "-3"])})
        if k == 18:  # extra keys and a key given twice
            d = self.refund(pin="1234")
            extra = rnd.choice([b"\x1cx_1=1", b"\x1camount=5", b"\x1c=v", b"\x1cnokey", b"\x1c\x1c", b"\x1cseq=1"])
            cat = "key_unknown" if extra == b"\x1cx_1=1" else \
                "key_repeated" if b"=5" in extra or b"seq" in extra else "key_malformed"
            return cat, raw_frame(refundctl.encode(d) + extra)
        if k == 19:  # bytes outside printable ASCII in a value
            bad = bytes(rnd.choice([0x00, 0x07, 0x80, 0xC3, 0xFF, 0x1B]) for _ in range(rnd.randint(1, 4)))
            payload = refundctl.encode(self.refund(pin="1234")).replace(b"orrn=FZE", b"orrn=F" + bad)
            return "non_ascii", raw_frame(payload)
        if k == 20:  # payload at / near the size limit (operator 02's wrong PIN: refused)
            d = self.refund(op="02")
            d["x_pad"] = "P" * rnd.randint(900, 1000)
            p = refundctl.encode(d)[:1024]
            return "big_payload", raw_frame(p)
        if k == 21:  # a REPRINT / REPORT with a wrong PIN: refused, nothing printed
            return "print_cmd_wrong_pin", fr({"cmd": rnd.choice(["REPRINT", "REPORT"]), "seq": self.next_seq(),
                                              "rid": "XXXX-000001", "op": "02", "pin": "0000"})
        if k == 22:  # garbage then a frame glued to it
            return "glued", bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 30))) + \
                fr({"cmd": "QUERY", "seq": self.next_seq(), "rid": "XXXX-000002"})
        return "bogus_header_hiding_frame", bytes((2, 0x01, 0x00)) + \
            fr({"cmd": "LIST", "seq": self.next_seq()})


class Reader(threading.Thread):
    def __init__(self, ser):
        super().__init__(daemon=True)
        self.ser = ser
        self.dec = refundctl.Decoder()
        self.replies = {}  # seq -> [reply, ...]
        self.bad = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stop.is_set():
            data = self.ser.read(65536)
            if not data:
                continue
            for p in self.dec.feed(data):
                try:
                    rep = refundctl.decode(p)
                except ValueError:
                    self.bad += 1
                    continue
                with self.lock:
                    self.replies.setdefault(rep.get("seq"), []).append(rep)

    def get(self, seq, timeout=5.0):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                r = self.replies.get(str(seq))
            if r:
                return r[-1]
            time.sleep(0.02)
        return None


class Console(threading.Thread):
    """Keeps the console drained (its ring drops lines otherwise) and what it said."""

    def __init__(self, board):
        super().__init__(daemon=True)
        self.board = board
        self.out = bytearray()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.out += self.board.console.read(65536)
            except Exception:
                return


def run_campaign(tmp_path, n, seed):
    shop = Shop(tmp_path, printer_kw={"font": "none", "lines_per_sec": None})
    con = Console(shop.board)
    con.start()
    ser = serial.serial_for_url(shop.board.ends["ecr"], timeout=0.05)
    rd = Reader(ser)
    rd.start()
    fz = Fuzz(seed)
    cats, violations = {}, []
    genuine = {}  # seq -> request dict
    t0 = time.time()
    gseq = 0
    checked = {}
    try:
        for i in range(n):
            cat, data = fz.case()
            cats[cat] = cats.get(cat, 0) + 1
            ser.write(data)
            if i % GENUINE_EVERY == 0:
                gseq += 1
                req = {"cmd": "REFUND", "seq": gseq, "amount": 100 + gseq, "orrn": "TILL%08d" % gseq,
                       "op": "01", "pin": "1234"}
                genuine[gseq] = req
                ser.write(fr(req))
            if i % 10 == 0:
                time.sleep(0.01)
            if i % 200 == 0 and genuine:  # the till resends one of its requests (same seq)
                s = fz.rnd.choice(list(genuine))
                ser.write(fr(genuine[s]))
                cats["genuine_resend"] = cats.get("genuine_resend", 0) + 1
        ser.write(b"\x02")  # close whatever the last case left open: the line goes quiet
        time.sleep(1.5)
        fuzz_s = time.time() - t0
        # The till resends what got no answer (a frame hidden behind a bogus length, ...)
        rids, resent = {}, 0
        for s, req in genuine.items():
            rep = rd.get(s, timeout=0.5)
            for _ in range(3):
                if rep is not None and ("rid" in rep or rep.get("err") not in (None, "memory", "busy")):
                    break
                resent += 1
                ser.write(fr(req))
                rep = rd.get(s, timeout=3)
            if rep is None or "rid" not in rep:
                violations.append("genuine seq %d not accepted: %r" % (s, rep))
                continue
            rids[rep["rid"]] = s
            with rd.lock:
                seen = {r.get("rid") for r in rd.replies.get(str(s), []) if "rid" in r}
            if len(seen) > 1:
                violations.append("seq %d answered with two rids %s" % (s, sorted(seen)))
        # Any other rid the terminal handed out is an accepted refund too.
        with rd.lock:
            all_replies = [r for rs in rd.replies.values() for r in rs]
        for r in all_replies:
            if r.get("err") == "internal":
                violations.append("internal error reply: %r" % r)
            if "rid" in r and r.get("cmd") == "REFUND" and r["rid"] not in rids:
                if int(r["seq"]) < 500000000:
                    continue
                cat = fz.cat_of.get(int(r["seq"]))
                if cat not in MAY_ACCEPT:
                    violations.append("a fuzz REFUND (%s) was accepted: %r" % (cat, r))
                rids[r["rid"]] = int(r["seq"])  # kept and printed like any other
        # The ECR task still answers, and every accepted refund ends printed.
        st_seq = 999999999
        ser.write(fr({"cmd": "STATUS", "seq": st_seq}))
        st = rd.get(st_seq, timeout=5)
        if st is None or "err" in st:
            violations.append("no STATUS answer after the fuzz: %r" % st)
        end = time.time() + 60 + len(rids)
        pending = set(rids)
        q = 900000000
        while pending and time.time() < end:
            for rid in sorted(pending):
                q += 1
                ser.write(fr({"cmd": "QUERY", "seq": q, "rid": rid}))
                rep = rd.get(q, timeout=3)
                if rep and rep.get("state") == "printed":
                    pending.discard(rid)
            if pending:
                time.sleep(0.5)
        for rid in sorted(pending):
            violations.append("%s accepted but not printed" % rid)
        net = shop.sim.net()
        lines = [l for l in shop.sim.ledger if l["type"] == "refund"]
        for rid in rids:
            if sum(1 for l in lines if l["rid"] == rid) != 1:
                violations.append("%s not in the ledger exactly once" % rid)
        for rid in net:
            if rid not in rids:
                violations.append("%s moved money but the ECR was never told" % rid)
        time.sleep(0.3)
        text = bytes(con.out).decode(errors="replace")
        for l in text.splitlines():
            if ("task ecr failed" in l or "ERROR intake" in l or "Traceback" in l
                    or ("failed:" in l and "restarting" in l)):
                violations.append("console: " + l[:300])
        checked = {"genuine_requests": len(genuine), "accepted_refunds": len(rids),
                   "accepted_fuzz_refunds": len(rids) - len(genuine), "resent_after_fuzz": resent,
                   "replies": len(all_replies), "console_lines": len(text.splitlines()), "refused": sum(1 for r in all_replies if "err" in r),
                   "reply_errors": json.dumps(_errs(all_replies), sort_keys=True)}
    finally:
        rd.stop.set()
        rd.join(2)
        ser.close()
        con.stop.set()
        shop.close()
        con.join(2)
    return cats, checked, violations, fuzz_s


def _errs(replies):
    out = {}
    for r in replies:
        if "err" in r:
            out[r["err"]] = out.get(r["err"], 0) + 1
    return out


def test_fuzzed_ecr_frames_keep_every_accepted_refund(tmp_path):
    cats, checked, violations, secs = run_campaign(tmp_path, N, SEED)
    print("ECR fuzz: %d cases, seed %d, %.0f s, categories %s, checked %s"
          % (N, SEED, secs, json.dumps(cats, sort_keys=True), checked))
    for v in violations[:20]:
        print("ECR fuzz violation (seed %d): %s" % (SEED, v))
    reliability.record("fuzz_ecr_frames", N, SEED, cats, violations, checked=checked, seconds=round(secs))
    assert not violations, "seed %d: %s" % (SEED, violations[:5])
    assert checked["console_lines"] > 0, "the console scan saw nothing"
    assert checked["accepted_refunds"] >= checked["genuine_requests"] and checked["refused"] > N // 3, checked
