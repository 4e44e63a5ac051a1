"""The paper of the printer emulator (host_tools/printer_emu.py): the line buffer, line
wrapping, paper consumed at paper speed, the paper ending in the middle of a line, cuts,
and the receipt (the paper from one cut to the next) as it is printed.

`Paper` is driven by the ESC/POS parser (put, print_line, qr, barcode, image, cut, reset)
and by the emulator (interrupt, lost, finish). A finished receipt goes to `finish_out(rec,
cut, incomplete)` (the receipt writer, host_tools/printer_render.py).
"""
import time

COLUMNS = {58: 32, 80: 48}
DOTS = {58: 384, 80: 576}
LINE_DOTS = 30  # default line pitch (ESC 2) in dots, used to turn dots into paper lines


def char_cols(ch):
    """Columns a character takes on the paper (font A): CJK/full-width = 2."""
    o = ord(ch)
    if o < 0x80:
        return 1
    if 0x1100 <= o and (o <= 0x115F or 0x2E80 <= o <= 0xA4CF or 0xAC00 <= o <= 0xD7A3 or
                        0xF900 <= o <= 0xFAFF or 0xFE30 <= o <= 0xFE4F or
                        0xFF00 <= o <= 0xFF60 or 0xFFE0 <= o <= 0xFFE6 or
                        0x20000 <= o <= 0x3FFFD or o in (0x2014, 0x2015, 0x2026, 0x2018,
                                                          0x2019, 0x201C, 0x201D, 0x3000)):
        return 2
    return 1


def make_qr(text, ec, box_size=10):
    """The qrcode.QRCode (made, border 0) for text at error correction level ec."""
    import qrcode
    q = qrcode.QRCode(version=None, border=0, box_size=box_size,
                      error_correction=getattr(qrcode.constants, "ERROR_CORRECT_" + ec))
    q.add_data(text)
    q.make(fit=True)
    return q


def qr_modules(text, ec):
    """Modules on a side of the QR code for text (25 without the qrcode package)."""
    try:
        return make_qr(text, ec).modules_count
    except Exception:
        return 25


class Receipt:
    def __init__(self, continued):
        self.lines = []
        self.qr = []
        self.barcodes = []
        self.images = []
        self.interruptions = []
        self.continued = continued
        self.overrun = 0
        self.unknown = []
        self.started = time.time()

    def has_content(self):
        if self.qr or self.barcodes or self.images or self.interruptions:
            return True
        return any(ln.get("text", "").strip() for ln in self.lines)


class Paper:
    def __init__(self, columns, modes, faults, stats, finish_out, log, lines_per_sec=None,
                 on_paper_end=None):
        self.columns = columns
        self.modes = modes
        self.faults = faults
        self.stats = stats
        self._finish_out = finish_out
        self._log = log
        self.lines_per_sec = lines_per_sec
        self._on_paper_end = on_paper_end or (lambda: None)
        self.next_ready = 0.0  # monotonic time the print head is free again
        self.line = []  # (char, columns, attrs) not printed yet
        self._line_align = "left"
        self.receipt = None
        self._after_interrupt = False
        self._pending_overrun = 0  # bytes lost before a receipt started

    # ---------------------------------------------------------------- from the parser
    def line_cols(self):
        return sum(w for _ch, w, _a in self.line)

    def put(self, ch, w=None):
        if w is None:
            w = char_cols(ch)
        w *= self.modes.wmul
        if self.line and self.line_cols() + w > self.columns:
            self.print_line(wrapped=True)
            if not self.faults.online():
                # paper ended while wrapping: this character is lost with the line
                return
        if not self.line:
            self._line_align = self.modes.align  # Epson: alignment counts at the start of a line
        self.line.append((ch, w, self.modes.attrs()))

    def reset(self):
        """ESC @: the line buffer is gone; paper after it starts a fresh receipt."""
        self.line = []
        if self.receipt is not None and not self.receipt.has_content():
            self.receipt.continued = False
        self._after_interrupt = False

    def note_unknown(self, text, cap=None):
        if self.receipt is not None and (cap is None or len(self.receipt.unknown) < cap):
            self.receipt.unknown.append(text)

    def print_line(self, feed=1, wrapped=False):
        """Print the line buffer (maybe empty) and feed; `feed` lines in total."""
        cells = self.line
        self.line = []
        rec = self._ensure_receipt()
        if cells or feed >= 1:
            entry = self._line_entry(cells, wrapped)
            h = entry["size"][1] if cells else 1
            frac = self._consume_paper(h)
            if frac < 1.0:
                keep = int(len(cells) * 0.5) if cells else 0
                entry = self._line_entry(cells[:keep], wrapped)
                entry["partial"] = True
                rec.lines.append(entry)
                self._paper_end()
                return
            rec.lines.append(entry)
        for _ in range(max(0, feed - 1)):
            if self._consume_paper(1) < 1.0:
                e = self._line_entry([], False)
                e["partial"] = True
                rec.lines.append(e)
                self._paper_end()
                return
            rec.lines.append(self._line_entry([], False))

    def qr(self, data, model, size, ec):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        modules = qr_modules(text, ec)
        entry = {"kind": "qr", "data": text, "model": model, "size": size, "ec": ec,
                 "modules": modules}
        rec = self._ensure_receipt()
        e = self._block(entry, _lines(modules * size))
        if e is not None:
            rec.qr.append({k: e[k] for k in ("data", "model", "size", "ec", "partial")})

    def barcode(self, kind, data, height, hri):
        text = data.decode("latin-1")
        entry = {"kind": "barcode", "type": kind, "data": text, "height": height, "hri": hri}
        rec = self._ensure_receipt()
        e = self._block(entry, _lines(height + (24 if hri else 0)))
        if e is not None:
            rec.barcodes.append({"type": kind, "data": text, "partial": e["partial"]})

    def image(self, entry, raster):
        """A bit image `entry["height"]` dots high (raster: its bits, or None)."""
        entry["_raster"] = raster
        rec = self._ensure_receipt()
        e = self._block(entry, _lines(entry["height"]))
        if e is not None:
            rec.images.append({k: v for k, v in e.items() if not k.startswith("_")})

    def cut(self, kind):
        if self.line:
            self.print_line()
        if not self.faults.online() or self.faults.cutter_error:
            return
        self.finish(kind, None)
        self._after_interrupt = False

    # ---------------------------------------------------------------- from the emulator
    def interrupt(self, reason):
        """A fault stopped printing (cover opened, power cut): noted on the receipt."""
        if self.receipt is not None and (self.receipt.lines or self.line):
            self.receipt.interruptions.append({"reason": reason,
                                               "after_line": len(self.receipt.lines)})

    def lost(self, n):
        """n received bytes were dropped (receive buffer overrun)."""
        if self.receipt is not None:
            self.receipt.overrun += n
        else:
            self._pending_overrun += n

    def finish(self, cut, incomplete):
        """The receipt on the paper ends (cut, or `incomplete` says why not): hand it to
        the writer. A line still in the line buffer was never printed: it is not on it."""
        rec = self.receipt
        self.receipt = None
        if rec is None or not rec.has_content():
            return None
        return self._finish_out(rec, cut, incomplete)

    # ---------------------------------------------------------------- internals
    def _ensure_receipt(self):
        if self.receipt is None:
            self.receipt = Receipt(self._after_interrupt)
            if self._pending_overrun:
                self.receipt.overrun += self._pending_overrun
                self._pending_overrun = 0
        return self.receipt

    def _line_time(self, lines):
        if not self.lines_per_sec:
            return 0.0
        return lines * self.faults.slow / float(self.lines_per_sec)

    def _consume_paper(self, lines):
        """Charge `lines` of paper. Returns the fraction (0..1] that made it onto paper."""
        self.next_ready = max(self.next_ready, time.monotonic()) + self._line_time(lines)
        f = self.faults
        if f.paper_left is None or f.paper_left >= lines:
            if f.paper_left is not None:
                f.paper_left -= lines
            self.stats["lines_printed"] += lines
            return 1.0
        frac = f.paper_left / float(lines)
        self.stats["lines_printed"] += f.paper_left
        f.paper_left = 0
        return frac

    def _paper_end(self):
        self.faults.paper_out = True
        self._log("paper end: printing stopped in the middle of a line")
        self.finish(None, "paper_end")
        self.line = []
        self._after_interrupt = True
        self._on_paper_end()

    def _line_entry(self, cells, wrapped):
        text = "".join(ch for ch, _w, _a in cells)
        a0 = cells[0][2] if cells else self.modes.attrs()
        spans = []
        for ch, _w, a in cells:
            if spans and spans[-1][1] == a:
                spans[-1][0].append(ch)
            else:
                spans.append(([ch], a))
        align = self._line_align if cells else self.modes.align
        entry = {"kind": "text", "text": text, "align": align, "bold": a0[0],
                 "underline": a0[1], "size": [1, 1], "font": "B" if a0[4] else "A",
                 "cols": sum(w for _ch, w, _a in cells), "wrapped": wrapped, "partial": False}
        entry["size"] = [max([a[2] for _c, _w, a in cells] or [self.modes.wmul]),
                         max([a[3] for _c, _w, a in cells] or [self.modes.hmul])]
        if len(spans) > 1:
            entry["spans"] = [{"text": "".join(s), "bold": a[0], "underline": a[1],
                               "size": [a[2], a[3]]} for s, a in spans]
        entry["_cells"] = cells
        return entry

    def _block(self, entry, lines):
        """A QR code, barcode or image: the pending line first, then `lines` of paper."""
        if self.line:
            self.print_line()
            if not self.faults.online():
                return None
        rec = self._ensure_receipt()
        entry.setdefault("align", self.modes.align)
        entry["partial"] = False
        if self._consume_paper(lines) < 1.0:
            entry["partial"] = True
            rec.lines.append(entry)
            self._paper_end()
            return entry
        rec.lines.append(entry)
        return entry


def _lines(dots):
    """Paper lines a block of `dots` takes (at least one)."""
    return max(1, -(-dots // LINE_DOTS))
