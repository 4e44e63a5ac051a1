"""Config files fuzzed through `refund.config.load` on MicroPython (issue 14, fuzz
campaigns): random mutations of the bench config (types, ranges, missing and unknown keys,
huge strings, values pasted under the wrong key, bad JSON, truncation, non-UTF-8 bytes).
Every case loads a config that validates or raises ConfigError with one "key: what" line
per problem; never another exception; no secret in any message; on the pinned 64-bit
interpreter and the 32-bit frozen build. REFUND_FUZZ_N cases
(default 400; make soak 10,000), REFUND_FUZZ_SEED (default 4217)."""
import copy
import json
import os
import random
import subprocess
import time

import pytest

from conftest import mp_env_path, mp_exe
from host_tools import REPO, reliability

N = int(os.environ.get("REFUND_FUZZ_N", "400"))
SEED = int(os.environ.get("REFUND_FUZZ_SEED", "4217"))
BENCH = os.path.join(REPO, "boards", "unix", "bench-config.json")


def bench():
    with open(BENCH) as f:
        return json.load(f)


def secrets(cfg):
    out = []
    for v in [cfg["mac_key"], cfg["tech_key"]] + [s[k] for s in cfg["staff"] for k in ("hash", "salt")]:
        out += [v, v.lower(), v.upper()]
    return out


WEIRD = [None, True, False, 0, -1, 1, 2 ** 31, 2 ** 63, -2 ** 40, 1.5, -0.0, 1e308, "", "x",
         "12", "00", "\u00e9\u4e2d", "\n", "a;b=c", [], [1], [156, 840], {}, {"a": 1},
         "0" * 64, "Z" * 64]


def rand_value(rnd, cfg):
    k = rnd.randrange(6)
    if k == 0:
        return rnd.choice(WEIRD)
    if k == 1:  # huge string
        return rnd.choice("AZ09\u00e9;") * rnd.randint(100, 20000)
    if k == 2:
        return rnd.randint(-10 ** rnd.randint(1, 20), 10 ** rnd.randint(1, 20))
    if k == 3:  # a secret pasted under the wrong key: must not come back in a message
        return rnd.choice(secrets(cfg))
    if k == 4:
        return [rnd.choice(WEIRD) for _ in range(rnd.randint(0, 4))]
    return "".join(chr(rnd.randint(1, 0x2FF)) for _ in range(rnd.randint(0, 30)))


def paths(d, pre=()):
    """Every (key path) in a nested config, dicts and lists."""
    out = []
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else ()
    for k, v in items:
        out.append(pre + (k,))
        out += paths(v, pre + (k,))
    return out


def _at(d, p):
    for k in p[:-1]:
        d = d[k]
    return d


def mutate_tree(rnd, cfg):
    c = json.loads(json.dumps(cfg))
    kinds = []
    for _ in range(rnd.randint(1, 4)):
        ps = paths(c)
        k = rnd.randrange(5)
        if not ps:
            k = 3
        if k == 0:  # wrong type or range
            p = rnd.choice(ps)
            _at(c, p)[p[-1]] = copy.deepcopy(rand_value(rnd, cfg))
            kinds.append("value")
        elif k == 1:  # missing key
            p = rnd.choice(ps)
            parent = _at(c, p)
            if isinstance(parent, dict):
                del parent[p[-1]]
            else:
                parent.pop(p[-1])
            kinds.append("missing")
        elif k == 2:  # swap two values (a key where the MAC key should be, ...)
            p, q = rnd.choice(ps), rnd.choice(ps)
            a, b = _at(c, p), _at(c, q)
            try:
                x, y = copy.deepcopy(a[p[-1]]), copy.deepcopy(b[q[-1]])
                a[p[-1]], b[q[-1]] = y, x
            except (KeyError, IndexError, TypeError):
                pass
            kinds.append("swap")
        elif k == 3:  # unknown key (top level or nested)
            tgt = rnd.choice([c] + [_at(c, p)[p[-1]] for p in ps if isinstance(_at(c, p)[p[-1]], dict)])
            name = rnd.choice(["x", "mac", "Terminal_id", "limits ", "_note", "\u00e9", "k" * 300, ""])
            tgt[name] = copy.deepcopy(rand_value(rnd, cfg))
            kinds.append("unknown")
        else:  # the whole value of a top-level key replaced by a weird one
            c[rnd.choice(list(c))] = copy.deepcopy(rnd.choice(WEIRD))
            kinds.append("type")
    return kinds, c


def case(rnd, cfg):
    """(category, file bytes)."""
    k = rnd.randrange(10)
    text = json.dumps(cfg).encode()
    if k <= 4:
        kinds, c = mutate_tree(rnd, cfg)
        return "tree_" + kinds[0], json.dumps(c, ensure_ascii=rnd.random() < 0.5).encode()
    if k == 5:  # truncated file
        return "truncated", text[:rnd.randint(0, len(text) - 1)]
    if k == 6:  # bytes flipped or inserted: mostly bad JSON
        b = bytearray(text)
        for _ in range(rnd.randint(1, 6)):
            i = rnd.randrange(len(b))
            if rnd.random() < 0.5:
                b[i] = rnd.randrange(256)
            else:
                b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        return "bytes_mutated", bytes(b)
    if k == 7:  # non-UTF-8 inside a string value
        bad = rnd.choice([b"\xff", b"\xc3", b"\xe4\xb8", b"\xed\xa0\x80", b"\x80\x80", b"\xf8\x88\x80\x80\x80"])
        return "non_utf8", text.replace(b'"Bench Shop"', b'"Bench' + bad + b'Shop"')
    if k == 8:  # not a JSON object / empty / garbage
        return "not_object", rnd.choice([b"", b"[]", b"null", b"42", b'"cfg"', b"{", b"{}}", b"\x00" * 8,
                                         bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 200))),
                                         b"[" * 200 + b"]" * 200, b'{"a":' * 50 + b"1" + b"}" * 50])
    # structure-valid JSON with extra whitespace, duplicate keys, comments keys: mostly loads
    c = dict(cfg, _comment2=rand_value(rnd, cfg))
    return "valid_variant", (b"\n" * rnd.randint(0, 3) + json.dumps(c, indent=rnd.randint(0, 3)).encode())


LINE_OK = ("config", "terminal_id", "merchant_id", "merchant_name", "mac_key", "host", "currency",
           "currencies", "printer_width", "tz_min", "pending_notice", "bench", "limits",
           "supervisor_above", "staff", "lockout_tries", "lockout_s", "duplicate_window_s",
           "host_link", "tech_key", "printer_baud", "printer", "evlog_cap", "evlog_segments")


def check_case(res, data, cfg, tmp):
    """The violations of one case (empty list when it behaved)."""
    if "exception" in res:
        return ["not ConfigError: " + res["exception"]]
    v = []
    if res.get("ok"):
        if res["again"]:
            v.append("loaded but invalid: %s" % res["again"])
        return v
    errs = res["errors"]
    if not errs or not isinstance(errs, list):
        v.append("ConfigError without lines")
    for e in errs:
        key, sep, what = e.partition(": ")
        if not (sep and what and (key or what == "unknown key")):  # "" is a key too
            v.append("not 'key: what': %r" % e[:200])
        elif not key.startswith(LINE_OK) and not what.startswith("unknown key"):
            v.append("names no key: %r" % e[:200])
    text = res["msg"] + "\n".join(errs)
    for s in secrets(cfg):
        if s in text:
            v.append("secret in message: %r" % text.replace(s, "<SECRET>")[:300])
            break
    return v


class Worker:
    def __init__(self, heap="256k", interp="64"):
        env = dict(os.environ, MICROPYPATH=mp_env_path(interp))
        self.p = subprocess.Popen([mp_exe(interp), "-X", "heapsize=" + heap,
                                   os.path.join(REPO, "tests", "mp", "config_fuzz.py")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, text=True, cwd=REPO)

    def load(self, path):
        self.p.stdin.write(path + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            self.p.wait(5)
            return {"exception": "worker died (exit %s): %s" % (self.p.returncode, self.p.stderr.read()[-500:])}
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


def run_campaign(n, seed, tmp_path, interp="64"):
    cfg = bench()
    rnd = random.Random(seed)
    w = Worker(interp=interp)
    cats, outcomes, violations = {}, {"loaded": 0, "config_error": 0}, []
    path = str(tmp_path / "config.json")
    t0 = time.time()
    try:
        for i in range(n):
            cat, data = case(rnd, cfg)
            cats[cat] = cats.get(cat, 0) + 1
            with open(path, "wb") as f:
                f.write(data)
            res = w.load(path)
            bad = check_case(res, data, cfg, tmp_path)
            if "ok" in res:
                outcomes["loaded"] += 1
            elif "errors" in res:
                outcomes["config_error"] += 1
            if bad:
                violations.append("case %d (%s): %s" % (i, cat, bad[0]))
                print("config fuzz violation, seed %d case %d (%s): %s\n  file: %r"
                      % (seed, i, cat, bad, data[:400]))
                if "worker died" in bad[0]:
                    w = Worker(interp=interp)
    finally:
        w.close()
    return cats, outcomes, violations, time.time() - t0


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_fuzzed_config_files_load_or_raise_config_error(tmp_path, interp):
    cats, outcomes, violations, secs = run_campaign(N, SEED, tmp_path, interp)
    print("config fuzz (%s-bit): %d cases, seed %d, categories %s, outcomes %s" % (interp, N, SEED, cats, outcomes))
    if interp == "64":  # the document's figures: the 32-bit run is the same cases
        reliability.record("fuzz_config", N, SEED, cats, violations, checked=outcomes, seconds=round(secs))
    assert not violations, "seed %d: %s" % (SEED, violations[:5])
    assert outcomes["loaded"] > 0 and outcomes["config_error"] > N // 2, outcomes


def test_a_secret_pasted_under_another_key_is_not_echoed(tmp_path):
    # The MAC key pasted into currencies (a slip when editing the file): the error names
    # the key and what is wrong, never the value.
    cfg = bench()
    cfg["currencies"] = [cfg["mac_key"]]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    w = Worker()
    try:
        res = w.load(str(path))
    finally:
        w.close()
    assert res["errors"] and res["errors"][0].startswith("currencies: ")
    assert not check_case(res, b"", cfg, tmp_path), res


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_non_utf8_and_too_big_files_are_config_errors(tmp_path, interp):
    # Found by the fuzz: a stray non-UTF-8 byte raised UnicodeError out of config.load (the
    # boot catches ConfigError only), and a file too big for the heap raised MemoryError.
    text = json.dumps(bench())
    bad = tmp_path / "bad.json"
    bad.write_bytes(text.replace('"Bench Shop"', '"Bench\xffShop"').encode("latin-1"))
    big = tmp_path / "big.json"
    big.write_text(text[:-1] + ', "merchant_name": "%s"}' % ("A" * 200000))
    w = Worker(heap="256k", interp=interp)
    try:
        r1, r2 = w.load(str(bad)), w.load(str(big))
    finally:
        w.close()
    assert r1.get("errors") == ["config: %s is not UTF-8 text" % bad], r1
    assert r2.get("errors") and r2["errors"][0].startswith("config: %s is too large" % big), r2
