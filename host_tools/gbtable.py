"""Build firmware/refund/gb18030.bin: the GB18030 table the firmware prints Chinese with.

  python -m host_tools.gbtable [--merchant NAME]... [--config CONFIG.json]... [--out PATH]
                               [--check]

MicroPython has no GB18030 codec, so this build step (CPython's codec) writes a table
of exactly the characters the firmware can print: every non-ASCII character in the
string constants of the receipt templates (TEMPLATES), the demo merchant name, and
every merchant name given with --merchant or found as "merchant_name" in a JSON
--config file. The format is documented at the top of firmware/refund/gbk.py.

Characters whose GB18030 code is not a 2-byte code (4-byte codes: "¥", emoji, CJK
extension B...) cannot be printed in the printer's double-byte mode (FS &): they are
left out and listed on stderr; the firmware prints a few symbols of them through the
single-byte code page and the rest as "?".

--check exits 1 when the file at --out differs from what would be generated (CI and
tests/test_receipt.py run it against the committed table).
"""
import argparse
import ast
import binascii
import json
import os
import struct
import sys

from host_tools import REPO

OUT = os.path.join(REPO, "firmware", "refund", "gb18030.bin")
TEMPLATES = (os.path.join(REPO, "firmware", "refund", "receipt.py"),)
# The demo terminal's merchant (boards' default config and the tests use it). A real
# deployment regenerates the table with its merchant name: --merchant / --config.
DEMO_MERCHANTS = ("深圳市示例便利店",)
MAGIC = b"GBT1"


def template_chars(paths=TEMPLATES):
    chars = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                chars.update(ch for ch in node.value if ord(ch) >= 0x80)
    return chars


def config_merchants(paths):
    names = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            cfg = json.load(f)
        if cfg.get("merchant_name"):
            names.append(cfg["merchant_name"])
    return names


def gb2(ch):
    """The 2-byte GB18030 code of ch, or None (ASCII, 4-byte code or not BMP)."""
    if ord(ch) < 0x80 or ord(ch) > 0xFFFF:
        return None
    try:
        b = ch.encode("gb18030")
    except UnicodeEncodeError:
        return None
    return b if len(b) == 2 else None


def build(chars):
    """(table bytes, characters left out)."""
    keep, skipped = [], []
    for ch in sorted(set(chars)):
        b = gb2(ch)
        if b is None:
            if ord(ch) >= 0x80:
                skipped.append(ch)
        else:
            keep.append((ord(ch), b))
    if len(keep) > 0xFFFF:
        raise SystemExit("too many characters for the table: %d" % len(keep))
    body = MAGIC + struct.pack("<HH", len(keep), 0)
    body += b"".join(struct.pack("<H", cp) for cp, _b in keep)
    body += b"".join(b for _cp, b in keep)
    return body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF), skipped


def lookup(table, ch):
    """Reference lookup (host side) used by the tests to cross-check the firmware."""
    n = struct.unpack_from("<H", table, 4)[0]
    cps = struct.unpack_from("<%dH" % n, table, 8)
    import bisect

    i = bisect.bisect_left(cps, ord(ch))
    if i < n and cps[i] == ord(ch):
        off = 8 + 2 * n + 2 * i
        return table[off:off + 2]
    return None


def generate(merchants=(), configs=(), templates=TEMPLATES):
    chars = template_chars(templates)
    for name in tuple(DEMO_MERCHANTS) + tuple(merchants) + tuple(config_merchants(configs)):
        chars.update(ch for ch in name if ord(ch) >= 0x80)
    return build(chars)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="gbtable", description=__doc__.split("\n\n")[0])
    ap.add_argument("--merchant", action="append", default=[], help="merchant name to include")
    ap.add_argument("--config", action="append", default=[], help="JSON config with merchant_name")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if --out is not up to date")
    a = ap.parse_args(argv)
    table, skipped = generate(a.merchant, a.config)
    n = struct.unpack_from("<H", table, 4)[0]
    if skipped:
        sys.stderr.write("gbtable: no 2-byte GB18030 code (single-byte fallback or '?'): %s\n"
                         % " ".join("U+%04X(%s)" % (ord(c), c) for c in skipped))
    if a.check:
        try:
            with open(a.out, "rb") as f:
                old = f.read()
        except OSError:
            old = None
        if old != table:
            sys.stderr.write("gbtable: %s is out of date: run python -m host_tools.gbtable\n" % a.out)
            return 1
        print("gbtable: %s up to date (%d characters, %d bytes)" % (a.out, n, len(table)))
        return 0
    with open(a.out, "wb") as f:
        f.write(table)
    print("gbtable: wrote %s (%d characters, %d bytes)" % (a.out, n, len(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
