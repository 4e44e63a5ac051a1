"""Receipt output of the printer emulator (host_tools/printer_emu.py): each finished
receipt becomes receipt-NNNN.txt (text laid out in columns), .json (the receipt document)
and .png (rendered with Pillow: with a system CJK font when there is one, else with the
project's own bitmap font host_tools/data/printer_font.bin, host_tools/printerfont.py,
which has every character the firmware can print; font "none" turns PNGs off).

`ReceiptWriter.finish(rec, cut, incomplete)` makes the document; once the emulator runs on
a tty the files are written in a thread of their own (PNG rendering takes ~20 ms), so the
receive path never waits for them.
"""
import glob
import json
import os
import queue
import shutil
import subprocess
import threading
import time

from host_tools.printer_paper import char_cols, make_qr

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/arphic/ukai.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simsun.ttc",
)
BUILTIN = "builtin"  # the bitmap font of host_tools/data/printer_font.bin
NO_FONT_NOTE = ("no system CJK font found (install e.g. fonts-wqy-microhei or fonts-noto-cjk, "
                "or pass --font PATH / REFUND_PRINTER_FONT=PATH): .png receipts drawn with "
                "the built-in bitmap font host_tools/data/printer_font.bin (WenQuanYi Micro "
                "Hei, 24 dots: ASCII and the firmware's GB18030 table)")
NO_PNG_NOTE = "font 'none': .png receipts not written, .txt/.json are"


def resolve_font(hint=None):
    """The font receipts are drawn with: a system font path, BUILTIN, or None (hint
    'none': no PNGs). A hint (or REFUND_PRINTER_FONT) naming a file that does not exist
    falls back like no font found: the bitmap font, so PNGs are always written."""
    if hint is None:
        hint = os.environ.get("REFUND_PRINTER_FONT")
    if hint is not None and hint.lower() in ("", "none"):
        return None
    if hint is not None and hint.lower() == BUILTIN:
        return BUILTIN
    return find_cjk_font(hint) or BUILTIN


def find_cjk_font(hint=None):
    """Path of a CJK-capable system font, or None. hint: a path, or 'none' to disable."""
    if hint is not None:
        if hint.lower() in ("", "none", BUILTIN):
            return None
        return hint if os.path.exists(hint) else None
    env = os.environ.get("REFUND_PRINTER_FONT")
    if env is not None:
        return find_cjk_font(env)
    for p in FONT_CANDIDATES:
        if os.path.exists(p):
            return p
    if shutil.which("fc-list"):
        try:
            r = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True,
                               text=True, timeout=5)
            for line in sorted(r.stdout.splitlines()):
                p = line.split(":")[0].strip()
                if p and os.path.exists(p):
                    return p
        except (OSError, subprocess.SubprocessError):
            pass
    return None


class ReceiptWriter:
    def __init__(self, out_dir, width, columns, dots, font_path, lock, log):
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.width = width
        self.columns = columns
        self.dots = dots
        self.font_path = font_path  # resolve_font(): a path, BUILTIN or None (no PNGs)
        self.png_note = {None: NO_PNG_NOTE, BUILTIN: NO_FONT_NOTE}.get(font_path)
        self.font_warned = False
        self.lock = lock  # guards `receipts`
        self._log = log
        self.receipts = []  # documents of the receipts written, in order
        self._seq = self._first_seq()
        self._thread = None
        self._q = None

    def _first_seq(self):
        seqs = [int(os.path.basename(p)[8:12]) for p in glob.glob(os.path.join(self.out_dir, "receipt-*.json"))
                if os.path.basename(p)[8:12].isdigit()]
        return max(seqs) + 1 if seqs else 1

    def start(self):
        """Write files in a thread from now on."""
        self._q = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="printer-out", daemon=True)
        self._thread.start()

    def stop(self):
        """Write what is queued, end the thread; files are written at once again."""
        if self._thread:
            self._q.put(None)
            self._thread.join(30)
            self._thread = None

    def finish(self, rec, cut, incomplete):
        """The document of a finished receipt (printer_paper.Receipt); its files are
        written now, or queued when the thread runs. It joins `receipts` once written."""
        seq = self._seq
        self._seq += 1
        partial = any(ln.get("partial") for ln in rec.lines)
        complete = (incomplete is None and not rec.interruptions and not rec.overrun
                    and not rec.continued and not partial)
        base = os.path.join(self.out_dir, "receipt-%04d" % seq)
        lines = [{k: v for k, v in ln.items() if not k.startswith("_")} for ln in rec.lines]
        doc = {
            "seq": seq, "width": self.width, "columns": self.columns, "lines": lines,
            "qr": rec.qr, "barcodes": rec.barcodes, "images": rec.images, "cut": cut,
            "complete": complete, "cut_clean": bool(cut) and complete,
            "incomplete": incomplete, "partial": partial,
            "interruptions": rec.interruptions, "continued": rec.continued,
            "overrun": rec.overrun, "unknown": rec.unknown,
            "started": rec.started, "finished": time.time(),
            "files": {"txt": base + ".txt", "json": base + ".json", "png": None},
        }
        if self._thread is not None:
            self._q.put((rec, doc, base))
        else:
            self._write_out(rec, doc, base)
        return doc

    def _write_loop(self):
        while True:
            job = self._q.get()
            if job is None:
                return
            try:
                self._write_out(*job)
            except Exception as e:  # keep writing the next ones
                self._log("writing receipt %s failed: %r" % (job[2], e))

    def _write_out(self, rec, doc, base):
        text = render_text(rec.lines, self.columns, doc)
        with open(base + ".txt", "w", encoding="utf-8") as f:
            f.write(text)
        if self.font_path:
            if self.font_path == BUILTIN:
                doc["png_note"] = self.png_note
                self.warn_no_font()
            try:
                render_png(rec.lines, self.dots, self.columns, self.font_path, base + ".png", doc)
                doc["files"]["png"] = base + ".png"
            except Exception as e:  # a rendering problem must not lose the receipt
                doc["png_note"] = "png failed: %r" % (e,)
                self._log("png rendering failed: %r" % (e,))
        else:
            doc["png"] = None
            doc["png_note"] = self.png_note
            self.warn_no_font()
        with open(base + ".json", "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
        with self.lock:
            self.receipts.append(doc)

    def warn_no_font(self):
        """Say once (on the log) which font receipts are drawn with when it is not a
        system font (the bitmap font), or that they get no .png."""
        if self.png_note and not self.font_warned:
            self.font_warned = True
            self._log(self.png_note)


def _indent(align, room):
    """Offset of a line of `room` free columns (or dots) for its alignment."""
    return {"center": room // 2, "right": room}.get(align, 0)


def render_text(lines, columns, doc):
    out = []
    for ln in lines:
        k = ln.get("kind")
        if k == "text":
            # Padding from the columns the line takes on paper (double-size text counts
            # double); the text itself is kept as printed, so it can be searched.
            s = (" " * _indent(ln.get("align"), max(0, columns - ln.get("cols", 0)))
                 + ln.get("text", "")).rstrip()
            if ln.get("partial"):
                s += "~~ (paper end)"
            out.append(s)
        elif k == "qr":
            out.append("[QR %s]%s" % (ln["data"], " (partial)" if ln.get("partial") else ""))
        elif k == "barcode":
            out.append("[BARCODE %s %s]" % (ln["type"], ln["data"]))
        elif k == "image":
            out.append("[IMAGE %s]" % ln.get("format"))
    if doc.get("interruptions"):
        for it in doc["interruptions"]:
            out.append("[INTERRUPTED: %s after line %d]" % (it["reason"], it["after_line"]))
    if doc.get("overrun"):
        out.append("[OVERRUN: %d bytes lost]" % doc["overrun"])
    if doc.get("cut"):
        out.append("[CUT %s]" % doc["cut"])
    else:
        out.append("[NOT CUT: %s]" % doc.get("incomplete"))
    return "\n".join(out) + "\n"


_GLYPHS = {}


def truetype_glyph(ch, font_path, _fonts={}):
    """ch drawn with a TrueType font into its cell: an "L" mask (255 = ink), 12x24 dots
    for a 1-column character, 24x24 for a 2-column one. host_tools/printerfont.py
    rasterizes the bitmap font with this, so both look the same."""
    from PIL import Image, ImageDraw, ImageFont

    base_w = char_cols(ch)
    gw = base_w * 12
    px = 22 if base_w == 1 else 24
    f = _fonts.get((font_path, px))
    if f is None:
        f = _fonts[(font_path, px)] = ImageFont.truetype(font_path, px)
    nat = max(1, int(f.getlength(ch) + 0.999))
    glyph = Image.new("L", (max(nat, gw), 24), 0)
    ImageDraw.Draw(glyph).text((max(0, (gw - nat) // 2), 0), ch, font=f, fill=255)
    if glyph.width > gw:  # squeeze wide Latin glyphs into their cell
        glyph = glyph.resize((gw, 24))
    return glyph


def bitmap_glyph(ch):
    """ch from the bitmap font as an "L" mask; a character it does not have (the
    firmware never sends one: it prints '?') is drawn as an empty box."""
    from PIL import Image, ImageDraw

    from host_tools import printerfont

    _hdr, glyphs = printerfont.load()
    g = glyphs.get(ch)
    if g is None:
        gw = char_cols(ch) * 12
        box = Image.new("L", (gw, 24), 0)
        ImageDraw.Draw(box).rectangle([1, 3, gw - 2, 21], outline=255)
        return box
    w, bits = g
    return Image.frombytes("1", (w, 24), printerfont.rows(w, bits)).convert("L")


def glyph(ch, font_path):
    """The cached mask of ch in font_path (a path or BUILTIN)."""
    g = _GLYPHS.get((ch, font_path))
    if g is None:
        g = _GLYPHS[(ch, font_path)] = (bitmap_glyph(ch) if font_path == BUILTIN
                                        else truetype_glyph(ch, font_path))
    return g


def _draw_bitmap_text(img, x, y, text):
    for ch in text:
        g = glyph(ch, BUILTIN)
        img.paste(0, (x, y), g)
        x += g.width


def render_png(lines, dots, columns, font_path, path, doc):
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    cell_w = dots // columns  # 12 dots for font A on 58 and 80 mm
    rows = []
    height = 8
    for ln in lines:
        k = ln.get("kind")
        if k == "text":
            h = 24 * ln["size"][1] + 6
        elif k == "qr":
            h = ln["modules"] * ln["size"] + 12
        elif k == "barcode":
            h = ln["height"] + (30 if ln.get("hri") else 6)
        else:
            h = ln.get("height", 24) + 6
        rows.append((ln, height, h))
        height += h
    img = Image.new("L", (dots, height + 40), 255)
    draw = ImageDraw.Draw(img)

    for ln, y, h in rows:
        k = ln.get("kind")
        if k == "text":
            cells = ln.get("_cells") or []
            used = sum(w for _c, w, _a in cells)
            x = max(0, _indent(ln.get("align"), columns - used)) * cell_w
            for ch, w, a in cells:
                bold, ul, wm, hm, _fb = a
                base_w = char_cols(ch)
                gw = base_w * cell_w
                g = mask = glyph(ch, font_path)  # a mask: 255 = ink
                if (wm > 1 or hm > 1) and font_path == BUILTIN:
                    # the bitmap font enlarged dot by dot, as the printer does
                    g = mask.resize((gw * wm, 24 * hm), Image.NEAREST)
                elif wm > 1 or hm > 1:
                    g = mask.resize((gw * wm, 24 * hm))
                img.paste(0, (x, y), g)
                if bold:
                    img.paste(0, (x + 1, y), g)
                if ul:
                    draw.line([(x, y + 24 * hm), (x + w * cell_w, y + 24 * hm)], fill=0, width=ul)
                x += w * cell_w
            if ln.get("partial"):
                draw.line([(0, y + h - 1), (dots, y + h - 1)], fill=128, width=2)
        elif k == "qr":
            qimg = _qr_image(ln["data"], ln["ec"], ln["size"])
            if qimg is not None:
                if ln.get("partial"):
                    qimg = qimg.crop((0, 0, qimg.width, qimg.height // 2))
                img.paste(qimg, (max(0, _indent(ln.get("align"), dots - qimg.width)), y + 6))
        elif k == "barcode":
            bw = min(dots - 20, 12 + 11 * len(ln["data"]) * 2)
            x = (dots - bw) // 2
            for i in range(0, bw, 4):
                draw.rectangle([x + i, y + 3, x + i + (1 if (i // 4 + len(ln["data"])) % 3 else 2), y + ln["height"]], fill=0)
            if ln.get("hri"):
                if font_path == BUILTIN:
                    _draw_bitmap_text(img, x, y + ln["height"] + 4, ln["data"])
                else:
                    draw.text((x, y + ln["height"] + 4), ln["data"],
                              font=ImageFont.truetype(font_path, 20), fill=0)
        elif k == "image" and ln.get("_raster") is not None:
            wbits, hd = ln["width"], ln["height"]
            raster = Image.frombytes("1", (wbits, hd), ln["_raster"])
            raster = ImageOps.invert(raster.convert("L"))
            img.paste(raster, (0, y))
    if doc.get("cut"):
        draw.line([(0, height + 30), (dots, height + 30)], fill=0, width=1)
    else:
        for x in range(0, dots, 16):
            draw.line([(x, height + 30), (x + 8, height + 22)], fill=0)
    img.save(path)


def _qr_image(text, ec, size):
    try:
        import qrcode  # noqa: F401
    except ImportError:
        return None
    return make_qr(text, ec, box_size=size).make_image()._img.convert("L")
