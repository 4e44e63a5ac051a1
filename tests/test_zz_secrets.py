"""Runs last (file order): scans everything the test suite's shops and tools wrote — console
logs, refundctl replies, ledgers, receipts, bundles and reports, event logs on the flash
images — for the bench's secrets: MAC and technician keys, staff PIN hashes and salts,
PINs in any PIN-like field, and PAN-like digit runs (13-19 digits passing Luhn)."""
import json
import os
import re
import zipfile

CFG = os.path.join(os.path.dirname(__file__), "..", "boards", "unix", "bench-config.json")
SCANNED = (".log", ".jsonl", ".txt", ".html", ".zip", ".img")
PAN = re.compile(rb"(?<![0-9])[2-6][0-9]{12,18}(?![0-9])")
PIN_FIELD = re.compile(rb"(?i)\b(s?pin|supervisor[-_]pin|pin_?hash)\b[\"'=: ]+\"?(1234|2468|9999)\b")


def _luhn(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ch - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _secrets():
    with open(CFG) as f:
        cfg = json.load(f)
    out = []
    for k in ("mac_key", "tech_key"):
        out += [cfg[k].encode(), cfg[k].lower().encode()]
    for s in cfg["staff"]:
        out += [s["hash"].encode(), s["salt"].encode()]
    return out


def _shop_dirs(root):
    # A terminal's working directory: the host ledger sits beside what it produced.
    return {d for d, _, files in os.walk(root) if "ledger.jsonl" in files}


def _blobs(root):
    shops = _shop_dirs(root)
    for d, _, files in os.walk(root):
        # Everything a shop (terminal, tools) wrote, and every bundle or report anywhere;
        # not other tests' inputs (the codec fuzz writes random digit runs on purpose).
        in_shop = any(d == s or d.startswith(s + os.sep) for s in shops)
        for name in files:
            p = os.path.join(d, name)
            if name.endswith(".config.json") or not name.endswith(SCANNED):
                continue
            if not in_shop and not name.endswith((".zip", ".html")):
                continue
            if name.endswith(".zip"):
                with zipfile.ZipFile(p) as z:
                    for m in z.namelist():
                        yield "%s!%s" % (p, m), z.read(m)
            else:
                with open(p, "rb") as f:
                    yield p, f.read()


def test_nothing_the_suite_produced_holds_a_secret(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    secrets = _secrets()
    scanned, hits = 0, []
    kinds = set()
    for where, data in _blobs(root):
        scanned += 1
        kinds.add(os.path.splitext(where.split("!")[-1])[1])
        for s in secrets:
            if s in data:
                hits.append((where, "key/hash/salt %s..." % s[:6].decode()))
        m = PIN_FIELD.search(data)
        if m:
            hits.append((where, "PIN in %r" % m.group(0)[:20]))
        for m in PAN.finditer(data):
            if _luhn(m.group(0)):
                hits.append((where, "PAN-like %s...%s" % (m.group(0)[:2].decode(), m.group(0)[-2:].decode())))
    print("secret scan: %d files/members under %s (%s)" % (scanned, root, ", ".join(sorted(kinds))))
    assert not hits, hits[:20]
    # the scan must have seen the suite's output, or it proves nothing
    assert scanned >= 5 and {".log", ".img"} <= kinds, (scanned, kinds)
