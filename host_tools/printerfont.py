"""Build host_tools/data/printer_font.bin: the printer emulator's own bitmap font.

  python -m host_tools.printerfont [--font PATH] [--out PATH] [--check]

The receipt PNGs (host_tools/printer_render.py) are drawn with a system CJK font when
there is one; on a machine without any this font is used, so `make demo` writes PNGs on
every machine. It holds exactly what the printer can ever receive from the firmware:
printable ASCII, every character of the firmware's GB18030 table
(firmware/refund/gb18030_tab.py, written by host_tools/gbtable.py) and the few symbols
refund/gbk.py sends through the single-byte code page (_SBCS). Anything else prints as
'?' from the firmware, and printer_render draws a box for it.

Glyphs are rasterized from a CJK font the way printer_render draws with a system font
(`truetype_glyph`: ASCII at 22 px into a 12x24-dot cell, 2-column characters at 24 px
into 24x24; font A of a 58/80 mm printer), then made 1 bit per dot (ink where the
antialiased coverage is >= THRESHOLD), as a thermal head prints them. Bold, underline
and double width/height are drawn from these glyphs by printer_render, as the printer
does.

File format (all integers little-endian):

  offset  size    content
  0       T       UTF-8 text: the first line "REFUND PRINTER BITMAP FONT 1", then
                  "key: value" lines (source font, its sha256, license, FreeType and
                  Pillow versions, ...), ended by one NUL byte (T counts it)
  T       4       magic b"RPF1"
  T+4     2       N, number of glyphs
  T+6     1       H, glyph height in dots (24)
  T+7     1       reserved, 0
  T+8     4N      index, code points ascending: code point (uint16, BMP only),
                  width in dots (uint8: 12 or 24), reserved (uint8, 0)
  T+8+4N  ...     bitmaps in index order, each ceil(width*H/8) bytes: rows top to
                  bottom, each row `width` bits, most significant bit first, 1 = ink;
                  rows run on without padding (a 12x24 glyph is 36 bytes)
  end-4   4       CRC-32 of every byte before it

The source font's license travels with the glyphs: the default source, WenQuanYi
Micro Hei (Debian fonts-wqy-microhei), is dual licensed Apache-2.0 / GPLv3 with the
font exception; the project redistributes the rasterized glyphs under Apache-2.0
(host_tools/data/NOTICE, host_tools/data/LICENSE-Apache-2.0.txt). A font of another
family needs --license TEXT.

--check exits 1 when the committed file's character set is not ASCII + the table +
the fallbacks (the table changed: regenerate). When the source font is present with
the same sha256, FreeType and Pillow as the file's header says, every bit is compared
too; otherwise it says that the pixels were not compared (a different font build
rasterizes differently without the file being stale).
"""
import argparse
import ast
import binascii
import hashlib
import os
import struct
import sys

from host_tools import REPO
from host_tools.gbtable import read_module

OUT = os.path.join(REPO, "host_tools", "data", "printer_font.bin")
SOURCE_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
GBK = os.path.join(REPO, "firmware", "refund", "gbk.py")
TITLE = "REFUND PRINTER BITMAP FONT 1"
MAGIC = b"RPF1"
HEIGHT = 24
CELL = 12  # dots per column of font A (384 dots / 32 columns, 576 / 48)
THRESHOLD = 96  # of 255: thin strokes stay whole at 24 dots, no bleeding (128 broke them)
LICENSES = {
    "WenQuanYi Micro Hei": (
        "Apache-2.0 (the font is dual licensed Apache-2.0 / GPL-3.0-or-later with the font "
        "exception; these glyphs are redistributed under Apache-2.0: "
        "host_tools/data/NOTICE, host_tools/data/LICENSE-Apache-2.0.txt)"),
}
COPYRIGHT = {
    "WenQuanYi Micro Hei": (
        "2008-2009 The WenQuanYi Project Board of Trustees, Qianqian Fang, mozbug; "
        "based on Droid Sans Fallback 2006-2008 Google Corporation"),
}


# ---- the character set -----------------------------------------------------------------

def table_chars(path=None):
    """Characters of the firmware's GB18030 table (the committed module)."""
    table = read_module(path) if path else read_module()
    n = struct.unpack_from("<H", table, 4)[0]
    return [chr(cp) for cp in struct.unpack_from("<%dH" % n, table, 8)]


def sbcs_chars(path=GBK):
    """The symbols refund/gbk.py sends through the single-byte code page (_SBCS keys)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_SBCS":
            return [chr(cp) for cp in ast.literal_eval(node.value)]
    raise ValueError("%s has no _SBCS" % path)


def wanted_chars(table_path=None):
    chars = {chr(c) for c in range(0x20, 0x7F)}
    chars.update(table_chars(table_path))
    chars.update(sbcs_chars())
    return sorted(chars)


# ---- reading ---------------------------------------------------------------------------

def parse(data):
    """(header dict, {char: (width, bitmap bytes)}); ValueError on a damaged file."""
    if len(data) < 12 or binascii.crc32(data[:-4]) & 0xFFFFFFFF != struct.unpack_from("<I", data, len(data) - 4)[0]:
        raise ValueError("printer font: bad CRC or truncated")
    t = data.index(b"\0") + 1
    text = data[:t - 1].decode("utf-8").splitlines()
    if not text or text[0] != TITLE or data[t:t + 4] != MAGIC:
        raise ValueError("printer font: not a %r file" % TITLE)
    header = dict(line.split(": ", 1) for line in text[1:] if ": " in line)
    header["lines"] = text
    n, h = struct.unpack_from("<HB", data, t + 4)
    off = t + 8 + 4 * n
    glyphs = {}
    for i in range(n):
        cp, w = struct.unpack_from("<HB", data, t + 8 + 4 * i)
        size = (w * h + 7) // 8
        glyphs[chr(cp)] = (w, bytes(data[off:off + size]))
        off += size
    if off != len(data) - 4:
        raise ValueError("printer font: index and bitmaps disagree")
    header["height"] = h
    return header, glyphs


_loaded = {}


def load(path=OUT):
    """The parsed font at path (cached)."""
    if path not in _loaded:
        with open(path, "rb") as f:
            _loaded[path] = parse(f.read())
    return _loaded[path]


def rows(width, bits, height=HEIGHT):
    """The glyph as `height` rows of bytes, each row padded to whole bytes (PIL mode "1")."""
    v = int.from_bytes(bits, "big") >> (len(bits) * 8 - width * height)
    rb = (width + 7) // 8
    out = bytearray()
    mask = (1 << width) - 1
    for y in range(height):
        r = (v >> (width * (height - 1 - y))) & mask
        out += (r << (rb * 8 - width)).to_bytes(rb, "big")
    return bytes(out)


# ---- generating ------------------------------------------------------------------------

def rasterize(font_path, chars):
    """[(char, width, packed bits)] drawn as printer_render draws with a system font."""
    from host_tools.printer_paper import char_cols
    from host_tools.printer_render import truetype_glyph

    out = []
    for ch in chars:
        gw = char_cols(ch) * CELL
        g = truetype_glyph(ch, font_path)
        v = 0
        for px in g.tobytes():
            v = (v << 1) | (px >= THRESHOLD)
        nbytes = (gw * HEIGHT + 7) // 8
        out.append((ch, gw, (v << (nbytes * 8 - gw * HEIGHT)).to_bytes(nbytes, "big")))
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_info(font_path):
    import PIL
    from PIL import ImageFont, features

    family, style = ImageFont.truetype(font_path, HEIGHT).getname()
    return {"family": family, "style": style, "file": os.path.basename(font_path),
            "sha256": sha256(font_path), "freetype": features.version("freetype2"),
            "pillow": PIL.__version__}


def build(font_path, chars, license_text=None):
    info = source_info(font_path)
    lic = license_text or LICENSES.get(info["family"])
    if not lic:
        raise SystemExit("printerfont: no license known for %r: give --license TEXT" % info["family"])
    glyphs = rasterize(font_path, chars)
    text = [TITLE,
            "generator: python -m host_tools.printerfont (format: its docstring)",
            "glyphs: printable ASCII + firmware/refund/gb18030_tab.py + refund/gbk.py _SBCS",
            "source font: %s %s (%s)" % (info["family"], info["style"], info["file"]),
            "source sha256: %s" % info["sha256"],
            "copyright: %s" % COPYRIGHT.get(info["family"], "see the source font"),
            "license: %s" % lic,
            "rasterized: 1 bit per dot, coverage >= %d of 255, FreeType %s, Pillow %s"
            % (THRESHOLD, info["freetype"], info["pillow"])]
    return pack(text, glyphs)


def pack(text_lines, glyphs, height=HEIGHT):
    """The file: header text lines and [(char, width, packed bits)] in code point order."""
    glyphs = sorted(glyphs)
    body = "\n".join(text_lines).encode("utf-8") + b"\0"
    body += MAGIC + struct.pack("<HBB", len(glyphs), height, 0)
    body += b"".join(struct.pack("<HBB", ord(ch), w, 0) for ch, w, _b in glyphs)
    body += b"".join(b for _c, _w, b in glyphs)
    return body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)


def check(path, font_path):
    """(ok, message)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        header, glyphs = parse(data)
    except (OSError, ValueError) as e:
        return False, "%s unreadable (%s)" % (path, e)
    want = wanted_chars()
    have = sorted(glyphs)
    if have != want:
        missing = "".join(c for c in want if c not in glyphs)
        extra = "".join(c for c in have if c not in set(want))
        return False, "%s is out of date (missing %r, extra %r)" % (path, missing, extra)
    if not os.path.exists(font_path):
        return True, "%s has every character (%d); source font %s absent: pixels not compared" % (
            path, len(have), font_path)
    info = source_info(font_path)
    made = "rasterized: 1 bit per dot, coverage >= %d of 255, FreeType %s, Pillow %s" % (
        THRESHOLD, info["freetype"], info["pillow"])
    if header.get("source sha256") != info["sha256"] or "rasterized: " + header.get("rasterized", "") != made:
        return True, ("%s has every character (%d); generated from another font build or "
                      "FreeType/Pillow: pixels not compared" % (path, len(have)))
    if build(font_path, want) != data:
        return False, "%s is out of date (pixels differ from %s)" % (path, font_path)
    return True, "%s up to date (%d glyphs, %d bytes, every bit compared)" % (path, len(have), len(data))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="printerfont", description=__doc__.split("\n\n")[0])
    ap.add_argument("--font", default=SOURCE_FONT, help="CJK font to rasterize (%(default)s)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--license", help="license of the glyphs (needed for a font family not known here)")
    ap.add_argument("--check", action="store_true", help="exit 1 if --out is not up to date")
    a = ap.parse_args(argv)
    if a.check:
        ok, msg = check(a.out, a.font)
        (sys.stdout if ok else sys.stderr).write("printerfont: %s%s\n" % (
            msg, "" if ok else ": run python -m host_tools.printerfont"))
        return 0 if ok else 1
    if not os.path.exists(a.font):
        sys.stderr.write("printerfont: %s not found (Debian: apt-get install fonts-wqy-microhei)\n" % a.font)
        return 2
    data = build(a.font, wanted_chars(), a.license)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "wb") as f:
        f.write(data)
    _loaded.pop(a.out, None)
    print("printerfont: wrote %s (%d glyphs, %d bytes)" % (a.out, len(parse(data)[1]), len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
