"""The printer emulator's own bitmap font (host_tools/data/printer_font.bin, made by
host_tools/printerfont.py): it has a glyph for every character the firmware can send,
it is regenerated from its source font bit for bit, a stale or damaged file is caught,
and receipts drawn with it put ink where the text is, like the system font does.

The source font, WenQuanYi Micro Hei (Debian fonts-wqy-microhei, installed by .ci/run),
is needed by the bit-for-bit check and the comparison: without it these tests fail."""
import json
import os
import subprocess
import sys

import pytest

from host_tools import REPO, gbtable, printerfont
from host_tools.printer_emu import BUILTIN, NO_FONT_NOTE, PrinterEmulator, char_cols
from host_tools.printer_render import bitmap_glyph

NEED_FONT = ("%s missing: install fonts-wqy-microhei (.ci/run does), the source font of "
             "host_tools/data/printer_font.bin" % printerfont.SOURCE_FONT)


def run_check(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.printerfont", "--check"] + list(args),
                          cwd=REPO, capture_output=True, text=True)


def test_every_character_the_firmware_can_print_has_a_glyph():
    header, glyphs = printerfont.load()
    table = gbtable.read_module()
    n = int.from_bytes(table[4:6], "little")
    table_chars = {chr(int.from_bytes(table[8 + 2 * i:10 + 2 * i], "little")) for i in range(n)}
    ascii_chars = {chr(c) for c in range(0x20, 0x7F)}
    # what the generator would put in the table today, too (a template changed: both stale)
    generated, _ = gbtable.generate()
    assert generated == table, "run: python -m host_tools.gbtable, then host_tools.printerfont"
    assert table_chars | ascii_chars <= set(glyphs), "run: python -m host_tools.printerfont"
    assert set(glyphs) == table_chars | ascii_chars | set(printerfont.sbcs_chars()) and \
        {"¥", "£", "°"} <= set(glyphs)  # refund/gbk.py prints these through the code page
    for ch, (w, bits) in glyphs.items():
        assert w == 12 * char_cols(ch) and len(bits) == (w * 24 + 7) // 8, ch
        ink = bin(int.from_bytes(bits, "big")).count("1")
        assert (ink == 0) == (ch == " "), (ch, ink)  # every glyph but the space has dots
    assert header["height"] == 24
    # where the glyphs come from and under which license, in the file and next to it
    assert header["source font"].startswith("WenQuanYi Micro Hei") and "Apache-2.0" in header["license"]
    with open(os.path.join(REPO, "host_tools", "data", "NOTICE"), encoding="utf-8") as f:
        notice = f.read()
    assert "WenQuanYi Micro Hei" in notice and "Apache License" in notice and "GPL" in notice
    with open(os.path.join(REPO, "host_tools", "data", "LICENSE-Apache-2.0.txt"), encoding="utf-8") as f:
        assert "Apache License" in f.readline() + f.readline()


def test_committed_font_regenerates_bit_for_bit():
    assert os.path.exists(printerfont.SOURCE_FONT), NEED_FONT
    r = run_check()
    assert r.returncode == 0, r.stderr
    info = printerfont.source_info(printerfont.SOURCE_FONT)
    header, _ = printerfont.load()
    if header["source sha256"] == info["sha256"] and info["freetype"] in header["rasterized"]:
        assert "every bit compared" in r.stdout, r.stdout
    else:  # another build of the font or FreeType here: the character set was checked
        assert "pixels not compared" in r.stdout, r.stdout


def test_a_stale_or_damaged_font_file_fails_the_check(tmp_path):
    with open(printerfont.OUT, "rb") as f:
        data = f.read()
    header, glyphs = printerfont.parse(data)
    items = [(ch, w, bits) for ch, (w, bits) in glyphs.items()]
    # the table grew (a new merchant name): a character has no glyph
    stale = tmp_path / "stale.bin"
    stale.write_bytes(printerfont.pack(header["lines"], [g for g in items if g[0] != "退"]))
    r = run_check("--out", str(stale))
    assert r.returncode == 1 and "out of date" in r.stderr and "退" in r.stderr, r.stderr
    # one byte flipped: the CRC says so
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data[:-40] + bytes((data[-40] ^ 0x10,)) + data[-39:])
    r = run_check("--out", str(bad))
    assert r.returncode == 1 and "bad CRC" in r.stderr, r.stderr
    with pytest.raises(ValueError):
        printerfont.parse(data[:-40] + bytes((data[-40] ^ 0x10,)) + data[-39:])
    # one dot changed, CRC right: only regenerating from the source font shows it
    assert os.path.exists(printerfont.SOURCE_FONT), NEED_FONT
    ch, w, bits = next(g for g in items if g[0] == "货")
    dot = tmp_path / "dot.bin"
    dot.write_bytes(printerfont.pack(header["lines"], [g for g in items if g[0] != "货"]
                                     + [(ch, w, bytes((bits[0] ^ 0x80,)) + bits[1:])]))
    assert printerfont.parse(dot.read_bytes())[1]["货"] != glyphs["货"]
    r = run_check("--out", str(dot))
    assert r.returncode == 1 and "pixels differ" in r.stderr, r.stderr + r.stdout


def test_a_character_without_a_glyph_is_a_box_not_a_crash():
    box = bitmap_glyph("\u2603")  # never sent by the firmware (it prints '?')
    assert box.size == (12, 24) and box.getextrema() == (0, 255)
    assert bitmap_glyph("退").size == (24, 24) and bitmap_glyph("A").size == (12, 24)


# ---------------------------------------------------------------- receipts drawn with it
def sample_receipt():
    """ESC/POS as the firmware sends it: GB18030 double-byte mode, bold, double size,
    underline, alignment, a blank line, a ¥ through the code page and a cut."""
    gb = lambda s: s.encode("gb18030")  # noqa: E731
    return (b"\x1b@\x1c&\x1bt\x10"
            + b"\x1ba\x01\x1b!\x38" + gb("退货 REFUND") + b"\n"  # bold, double width+height
            + b"\x1b!\x00\x1ba\x00" + gb("商户编号 MERCHANT NO.") + b"\n"
            + b"\x1ba\x02" + b"MERCHANT0000001\n"
            + b"\x1ba\x00\n"  # an empty line: no ink
            + b"\x1b-\x01" + gb("金额 AMOUNT") + b" \x1c.\xa5\x1c&12.34 CNY\n\x1b-\x00"
            + gb("批准 APPROVED") + b"\n"
            + b"\x1dV\x00")


def render(tmp_path, font, name):
    notes = []
    e = PrinterEmulator(str(tmp_path / name), width=58, font=font, log=notes.append)
    e.feed(sample_receipt())
    rec = e.receipts[0]
    from PIL import Image

    with Image.open(rec["files"]["png"]) as im:
        return rec, im.convert("L"), notes


def bands(rec, im):
    """Per text line of the receipt: (line, ink dots, leftmost and rightmost inked x)."""
    out, y = [], 8
    px = im.load()
    for ln in rec["lines"]:
        h = 24 * ln["size"][1] + 6 if ln["kind"] == "text" else None
        if h is None:
            break  # the QR code comes after the text
        xs = [x for yy in range(y, y + h) for x in range(im.width) if px[x, yy] < 128]
        out.append((ln, len(xs), min(xs) if xs else None, max(xs) if xs else None))
        y += h
    return out


def test_receipt_drawn_with_the_bitmap_font_has_ink_where_the_text_is(tmp_path):
    rec, im, notes = render(tmp_path, BUILTIN, "builtin")
    assert rec["png_note"] == NO_FONT_NOTE and notes.count(NO_FONT_NOTE) == 1
    got = bands(rec, im)
    assert [ln.get("text") for ln, *_ in got] == ["退货 REFUND", "商户编号 MERCHANT NO.", "MERCHANT0000001",
                                                  "", "金额 AMOUNT ¥12.34 CNY", "批准 APPROVED"]
    for ln, ink, x0, x1 in got:
        if not ln["text"].strip():
            assert ink == 0, ln
            continue
        # the text's cells: where alignment puts it, 12 dots a column (double width: 24)
        cols = ln["cols"]
        left = {"center": (32 - cols) // 2, "right": 32 - cols}.get(ln["align"], 0) * 12
        assert left - 1 <= x0 <= left + 12 and left + cols * 12 - 24 <= x1 <= left + cols * 12, (ln, x0, x1)
        assert ink > 40 * len(ln["text"].replace(" ", "")), (ln, ink)
    # below the text only the cut line: nothing drawn anywhere else
    px = im.load()
    y_end = 8 + sum(24 * ln["size"][1] + 6 for ln, *_ in got)
    below = [y for y in range(y_end, im.height) for x in range(im.width) if px[x, y] < 128]
    assert below and set(below) == {y_end + 30}, sorted(set(below))


def test_bitmap_and_system_font_receipts_match_in_size_and_ink(tmp_path):
    assert os.path.exists(printerfont.SOURCE_FONT), NEED_FONT
    rec_b, im_b, _ = render(tmp_path, BUILTIN, "builtin")
    rec_s, im_s, notes = render(tmp_path, printerfont.SOURCE_FONT, "system")
    assert rec_s["files"]["png"] and "png_note" not in rec_s and not notes
    assert im_b.size == im_s.size
    for (ln, ink_b, b0, b1), (_ln, ink_s, s0, s1) in zip(bands(rec_b, im_b), bands(rec_s, im_s)):
        assert (ink_b == 0) == (ink_s == 0), ln
        if ink_b:
            # same glyphs, one thresholded to 1 bit: similar ink, same extent
            assert 0.6 < ink_b / ink_s < 1.6 and abs(b0 - s0) <= 3 and abs(b1 - s1) <= 3, (ln, ink_b, ink_s)
    with open(rec_b["files"]["json"], encoding="utf-8") as f:
        assert json.load(f)["files"]["png"] == rec_b["files"]["png"]
