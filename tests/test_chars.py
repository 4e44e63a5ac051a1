"""Character rules on MicroPython (firmware/refund/chars.py) and the promise behind them:
validating or printing external text never interns its characters as qstrs."""
import json
import random
import re

import pytest

from host_tools import gbtable

QSTRS = r"""
import micropython, json
from refund import receipt, chars, ecr, evlog
args = json.loads(%r)
r = args["refund"]
def work(name):
    c = dict(args["cfg"], merchant_name=name)
    receipt.render(receipt.refund(r, c, False))
    receipt.render(receipt.decline(dict(r, state="declined", code="05"), c))
    receipt.render(receipt.pending_notice(dict(r, state="queued"), c))
    receipt.wrap(name * 5, 32)
    chars.printable(name); chars.alnum(name); chars.digits(name); chars.clean(name, 40)
    ecr.decode(("cmd=refund\x1cseq=1\x1cref=" + name).encode())
    ecr.encode({"cmd": "status", "seq": "1", "text": name})
    evlog.event("probe", "R1", text=name)
work(args["warm"])
micropython.qstr_info()
work(args["novel"])
micropython.qstr_info()
"""


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_external_text_never_grows_the_qstr_pool(mp, interp):
    # Iterating a str makes each new character a qstr, in a pool that grows as one
    # contiguous block: on a fragmented heap that is a MemoryError in whatever runs next.
    # Characters never seen before (CJK outside the receipt table, Latin-1, kana, maths)
    # go through the composer, the validators, the ECR codec and the event log.
    args = {"refund": {"rid": "R00000042", "stan": 123, "amount": 1234, "currency": 156,
                       "orrn": "412345678901", "rrn": "512345678902", "auth": "A1B2C3",
                       "operator": "07", "ts": 1780000000, "state": "approved", "code": "00"},
            "cfg": {"merchant_name": gbtable.DEMO_MERCHANTS[0], "merchant_id": "123456789012345",
                    "terminal_id": "87654321", "printer_width": 58, "tz_min": 480},
            "warm": "预热 warm-up",
            "novel": "龘靐齉 ÄÖÜ ∑ 日本語のテキスト ÿ"}
    out = mp(QSTRS % json.dumps(args, ensure_ascii=False)).stdout
    n = [int(m) for m in re.findall(r"n_qstr=(\d+)", out)]
    assert len(n) == 2, out
    assert n[1] == n[0], "the qstr pool grew by %d on new characters:\n%s" % (n[1] - n[0], out)


RULES = r"""
import json
from refund import chars
for s in json.loads(%r):
    b = s.encode()
    cps = []
    i = 0
    while i < len(b):
        cps.append(chars.cp_at(b, i))
        i += chars.seqlen(b[i])
    print(json.dumps([chars.digits(s, 1, 9), chars.alnum(s), chars.alnum(s, 12),
                      chars.printable(s), chars.printable(s, 1, 8, b" ;="),
                      chars.clean(s, 6), cps]))
print(json.dumps([chars.digits(5), chars.alnum(None), chars.printable(b"ab"), chars.clean(12345, 3)]))
"""


def test_rules_on_ascii_and_beyond(mp):
    cases = ["", "0", "123456789", "1234567890", "12a", "ABCdef012345", "ABCdef01234",
             "a b", "a;b", "a=b", "~", "\x7f", "\t", "é", "退货", "ab€cd", "𝄞x", "ÿ" * 7]
    out = mp(RULES % json.dumps(cases, ensure_ascii=False)).stdout.splitlines()
    assert len(out) == len(cases) + 1, out
    for s, line in zip(cases, out):
        got = json.loads(line)
        pr = all(" " <= c <= "~" for c in s)
        want = [s.isdigit() and s.isascii() and 1 <= len(s) <= 9,
                s.isascii() and s.isalnum(),
                s.isascii() and s.isalnum() and len(s) == 12,
                pr,
                pr and 1 <= len(s.encode()) <= 8 and not set(" ;=") & set(s),
                "".join(c if " " <= c <= "~" else "?" for c in s[:6]),
                [ord(c) for c in s]]
        assert got == want, (s, got, want)
    assert json.loads(out[-1]) == [False, False, False, "123"]


WRAP = r"""
import json
from refund import receipt
for t, w in json.loads(%r):
    print(json.dumps(receipt.wrap(t, w)))
"""


def _wrap_model(text, width, cols):
    # The rule the composer documents, written the obvious way (one character at a time).
    out, line, w = [], "", 0
    for ch in text:
        cw = cols(ch)
        if w + cw > width and line:
            k = line.rfind(" ")
            if k > 0 and k >= len(line) // 2:
                out.append(line[:k])
                line = line[k + 1:]
            else:
                out.append(line)
                line = ""
            w = sum(cols(c) for c in line)
            if not line and ch == " ":
                continue
        line += ch
        w += cw
    if line or not out:
        out.append(line)
    return out


def test_wrap_walks_bytes_and_breaks_as_documented(mp):
    table, _ = gbtable.generate()
    known = [chr(int.from_bytes(table[8 + 2 * i:10 + 2 * i], "little"))
             for i in range(int.from_bytes(table[4:6], "little"))]
    alphabet = known[:40] + list("abcdefghij     ") + ["é", "€", "𝄞"]
    rnd = random.Random(7)
    cases = [("", 10), (" ", 1), ("abc def", 3), ("  lead", 4), ("退货 REFUND 金额", 5)]
    for _ in range(150):
        cases.append(("".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 70))),
                      rnd.randrange(2, 33)))
    out = mp(WRAP % json.dumps(cases, ensure_ascii=False), timeout=120).stdout.splitlines()
    assert len(out) == len(cases)
    cache = {}

    def cols(c):
        if c not in cache:
            cache[c] = 2 if ord(c) >= 0x80 and gbtable.lookup(table, c) else 1
        return cache[c]

    for (t, w), line in zip(cases, out):
        assert json.loads(line) == _wrap_model(t, w, cols), (t, w)
