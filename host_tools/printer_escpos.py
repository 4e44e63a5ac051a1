"""ESC/POS command parser of the printer emulator (host_tools/printer_emu.py): how long each
command is, what it sets in the print modes, and what it asks of the paper.

`EscPosParser.step(buf)` reads one command or character from the front of the receive
buffer and returns how many bytes it used (0: incomplete, wait for more). Text goes to
`Paper.put`, line feeds / cuts / QR codes / barcodes / images to the other `Paper` calls;
GS r and GS I are answered through `in_band(cmd, n)` (cmd "r" or "I") when reached, i.e.
after everything before them has been printed. Real-time DLE EOT / DLE ENQ are executed
on reception by the emulator; here they are only skipped.
"""

ESC, FS, GS, DLE = 0x1B, 0x1C, 0x1D, 0x10

# ESC t n -> Python codec (Epson numbering)
CODEPAGES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 16: "cp1252",
             17: "cp866", 18: "cp852", 19: "cp858", 255: "cp437"}

BARCODE_A = {0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "NW7"}
BARCODE_B = {65: "UPC-A", 66: "UPC-E", 67: "EAN13", 68: "EAN8", 69: "CODE39", 70: "ITF",
             71: "NW7", 72: "CODE93", 73: "CODE128", 74: "GS1-128", 75: "GS1 DATABAR OMNI",
             76: "GS1 DATABAR TRUNCATED", 77: "GS1 DATABAR LIMITED",
             78: "GS1 DATABAR EXPANDED"}

_ESC_2 = {0x40, 0x32, 0x69, 0x6D, 0x3C, 0x0C}  # ESC c, no argument
_ESC_3 = {0x21, 0x45, 0x47, 0x2D, 0x61, 0x64, 0x4A, 0x74, 0x4D, 0x33, 0x20, 0x52,
          0x56, 0x7B, 0x72, 0x3D, 0x25, 0x3F, 0x55, 0x65, 0x54, 0x63, 0x4B}  # ESC c n


def _digit(v):
    """Epson's n or '0'+n argument forms -> n."""
    return v if v < 0x30 else v - 0x30


class Modes:
    """Print modes set by commands and reset by ESC @ (and by a power cut)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.bold = False
        self.underline = 0
        self.font_b = False
        self.wmul = 1
        self.hmul = 1
        self.align = "left"
        self.codepage = 0
        self.kanji = False
        self.qr_model = 2
        self.qr_size = 3
        self.qr_ec = "L"
        self.qr_data = None
        self.bc_height = 162
        self.bc_hri = 0
        self.asb = 0  # GS a n: automatic status back items (0 = off; ESC @ turns it off)

    def attrs(self):
        """The attributes a printed character keeps: (bold, underline, wmul, hmul, font_b)."""
        return (self.bold, self.underline, self.wmul, self.hmul, self.font_b)


class EscPosParser:
    def __init__(self, paper, modes, stats, capacity, log, in_band):
        self.paper = paper
        self.modes = modes
        self.stats = stats
        self.capacity = capacity
        self._log = log
        self._in_band = in_band
        self.skip = 0  # bytes of a long command still to be discarded

    def step(self, b):
        n = len(b)
        if self.skip:
            k = min(self.skip, n)
            self.skip -= k
            return k
        c = b[0]
        if c == 0x0A or c == 0x0C:
            self.paper.print_line()
            return 1
        if c == 0x0D or c == 0x00:
            return 1
        if c == 0x09:
            for _ in range(8 - self.paper.line_cols() % 8):
                self.paper.put(" ")
            return 1
        if c == DLE:
            if n < 2:
                return 0
            if b[1] in (0x04, 0x05):
                return 3 if n >= 3 else 0
            if b[1] == 0x14:
                if n < 3:
                    return 0
                ln = {1: 5, 2: 5, 3: 5, 7: 4, 8: 10}.get(b[2], 3)
                return ln if n >= ln else 0
            return self._unknown(b[:2])
        if c == ESC:
            return self._esc(b)
        if c == FS:
            return self._fs(b)
        if c == GS:
            return self._gs(b)
        if c < 0x20 or c == 0x7F:
            return self._unknown(b[:1])
        return self._text(b)

    def _text(self, b):
        c = b[0]
        if self.modes.kanji and c >= 0x81:
            if len(b) < 2:
                return 0
            c2 = b[1]
            if c == 0xFF or not (0x40 <= c2 <= 0xFE) or c2 == 0x7F:
                self.stats["garbled_gb"] += 1
                self.paper.put("\ufffd")
                return 1
            try:
                ch = bytes(b[:2]).decode("gb18030")
            except UnicodeDecodeError:
                ch = "\ufffd"
                self.stats["garbled_gb"] += 1
            self.paper.put(ch, 2)
            return 2
        if c < 0x80:
            self.paper.put(chr(c))
            return 1
        try:
            ch = bytes((c,)).decode(CODEPAGES.get(self.modes.codepage, "cp437"))
        except UnicodeDecodeError:
            ch = "\ufffd"
        self.paper.put(ch)
        return 1

    def _sized(self, b, ln, keep):
        """A command of ln bytes not all here yet: 0 = wait for the rest (its payload is
        needed and fits the buffer), else take what is here and skip the rest as it
        arrives, like a printer streaming data it does not keep."""
        n = len(b)
        if n >= ln:
            return ln
        if keep and ln <= self.capacity // 2:
            return 0
        if keep:
            self._unknown(b[:3])  # too big to keep: dropped
        self.skip = ln - n
        return n

    def _unknown(self, seq):
        self.stats["unknown"] += 1
        self.paper.note_unknown(bytes(seq).hex(), cap=50)
        return len(seq)

    def _esc(self, b):
        n = len(b)
        if n < 2:
            return 0
        c = b[1]
        m = self.modes
        if c in _ESC_2:
            if c == 0x40:  # ESC @
                m.reset()
                self.paper.reset()
            elif c in (0x69, 0x6D):  # ESC i / ESC m: cut
                self.paper.cut("full" if c == 0x69 else "partial")
            return 2
        if c == 0x4C or c == 0x53:  # page mode select / standard mode
            return 2
        if c in _ESC_3:
            if n < 3:
                return 0
            v = b[2]
            if c == 0x21:  # ESC ! print mode
                m.font_b = bool(v & 0x01)
                m.bold = bool(v & 0x08)
                m.hmul = 2 if v & 0x10 else 1
                m.wmul = 2 if v & 0x20 else 1
                m.underline = 1 if v & 0x80 else 0
            elif c in (0x45, 0x47):
                m.bold = bool(v & 1)
            elif c == 0x2D:
                m.underline = _digit(v) & 3
            elif c == 0x61:
                m.align = {0: "left", 1: "center", 2: "right"}.get(_digit(v), m.align)
            elif c == 0x64:  # ESC d n: print and feed n lines
                self.paper.print_line(feed=v)
            elif c == 0x4A:  # ESC J n: print and feed n dots
                self.paper.print_line(feed=1)
            elif c == 0x74:
                if v not in CODEPAGES:
                    self._log("ESC t %d: code page not emulated, using cp437" % v)
                m.codepage = v
            elif c == 0x4D:
                m.font_b = (v & 1) == 1
            elif c == 0x63:  # ESC c 3/4/5 n: 4 bytes
                return 4 if n >= 4 else 0
            elif c == 0x4B:
                return self._unknown(b[:3])
            return 3
        if c == 0x24 or c == 0x5C:  # ESC $ / ESC \ nL nH
            return 4 if n >= 4 else 0
        if c == 0x70:  # ESC p m t1 t2 (drawer)
            return 5 if n >= 5 else 0
        if c == 0x42:  # ESC B n t (buzzer)
            return 4 if n >= 4 else 0
        if c == 0x44:  # ESC D n1..nk NUL (tabs)
            end = b.find(b"\x00", 2)
            return end + 1 if end >= 0 else (0 if n < 40 else self._unknown(b[:2]))
        if c == 0x57:  # ESC W (print area, page mode)
            return 10 if n >= 10 else 0
        if c == 0x2A:  # ESC * m nL nH d1..dk: bit image
            if n < 5:
                return 0
            k = b[3] + 256 * b[4]
            k *= 3 if b[2] in (32, 33) else 1
            if n < 5 + k:
                return self._sized(b, 5 + k, keep=False)
            self.paper.image({"kind": "image", "format": "ESC *", "mode": b[2],
                              "columns": b[3] + 256 * b[4],
                              "height": 24 if b[2] in (32, 33) else 8}, None)
            return 5 + k
        return self._unknown(b[:2])

    def _fs(self, b):
        n = len(b)
        if n < 2:
            return 0
        c = b[1]
        m = self.modes
        if c == 0x26:  # FS &: Chinese (double-byte) mode on
            m.kanji = True
            return 2
        if c == 0x2E:  # FS .: off
            m.kanji = False
            return 2
        if c in (0x21, 0x2D, 0x43, 0x57, 0x3F):
            if n < 3:
                return 0
            if c == 0x21:  # FS ! kanji print mode
                v = b[2]
                m.wmul = 2 if v & 0x04 else 1
                m.hmul = 2 if v & 0x08 else 1
                m.underline = 1 if v & 0x80 else 0
            elif c == 0x57:
                m.wmul = m.hmul = 2 if b[2] & 1 else 1
            return 3
        if c in (0x53, 0x70):  # FS S n1 n2 / FS p n m
            return 4 if n >= 4 else 0
        if c == 0x28:  # FS ( X pL pH ...
            if n < 5:
                return 0
            return self._sized(b, 5 + b[3] + 256 * b[4], keep=False)
        if c == 0x32:  # FS 2 c1 c2 d1..d72 (user-defined kanji)
            return self._sized(b, 76, keep=False)
        return self._unknown(b[:2])

    def _gs(self, b):
        n = len(b)
        if n < 2:
            return 0
        c = b[1]
        m = self.modes
        if c == 0x21:  # GS ! size
            if n < 3:
                return 0
            m.wmul = ((b[2] >> 4) & 7) + 1
            m.hmul = (b[2] & 7) + 1
            return 3
        if c == 0x56:  # GS V cut
            if n < 3:
                return 0
            v = b[2]
            if v in (65, 66, 97, 98, 103, 104):
                if n < 4:
                    return 0
                self.paper.cut("full" if v in (65, 97, 103) else "partial")
                return 4
            self.paper.cut("full" if v in (0, 48) else "partial")
            return 3
        if c == 0x28:  # GS ( X pL pH ...
            if n < 5:
                return 0
            ln = 5 + b[3] + 256 * b[4]
            if n < ln:
                return self._sized(b, ln, keep=b[2] == 0x6B)
            if b[2] == 0x6B:  # GS ( k: 2D codes
                self._gs_k(bytes(b[5:ln]))
            return ln
        if c == 0x38:  # GS 8 L p1..p4 ...
            if n < 7:
                return 0
            return self._sized(b, 7 + b[3] + (b[4] << 8) + (b[5] << 16) + (b[6] << 24), keep=False)
        if c == 0x6B:  # GS k barcode
            if n < 3:
                return 0
            v = b[2]
            if v <= 6:
                end = b.find(b"\x00", 3)
                if end < 0:
                    return 0 if n < min(300, self.capacity // 2) else self._unknown(b[:3])
                self.paper.barcode(BARCODE_A.get(v, str(v)), bytes(b[3:end]), m.bc_height, m.bc_hri)
                return end + 1
            if n < 4:
                return 0
            ln = 4 + b[3]
            if n < ln:
                return 0
            self.paper.barcode(BARCODE_B.get(v, str(v)), bytes(b[4:ln]), m.bc_height, m.bc_hri)
            return ln
        if c == 0x72 or c == 0x49 or c == 0x61:  # GS r n: in-band status / GS I n:
            if n < 3:  # printer id / GS a n: automatic status back
                return 0
            self._in_band(chr(c), b[2])
            return 3
        if c == 0x76:  # GS v 0 m xL xH yL yH data: raster image
            if n < 8:
                return 0
            xb = b[4] + 256 * b[5]
            yd = b[6] + 256 * b[7]
            ln = 8 + xb * yd
            if n < ln:
                return self._sized(b, ln, keep=True)
            self.paper.image({"kind": "image", "format": "GS v 0", "width": xb * 8, "height": yd},
                             bytes(b[8:ln]))
            return ln
        if c == 0x2A:  # GS * x y data
            if n < 4:
                return 0
            return self._sized(b, 4 + b[2] * b[3] * 8, keep=False)
        if c == 0x3A:  # GS : (macro definition start/end)
            return 2
        if c == 0x5E:  # GS ^ r t m (run macro)
            return 5 if n >= 5 else 0
        if c in (0x68, 0x77, 0x48, 0x66, 0x42, 0x62, 0x2F, 0x7C, 0x45, 0x54, 0x63):
            if n < 3:
                return 0
            if c == 0x68:
                m.bc_height = b[2] or 162
            elif c == 0x48:
                m.bc_hri = _digit(b[2]) & 3
            return 3
        if c in (0x4C, 0x57, 0x24, 0x5C, 0x50):  # GS L / GS W / GS $ / GS \ / GS P
            return 4 if n >= 4 else 0
        return self._unknown(b[:2])

    def _gs_k(self, body):
        if len(body) < 2:
            return
        cn, fn = body[0], body[1]
        m = self.modes
        if cn != 49:  # only QR is modelled; PDF417 etc. are recorded as unknown 2D codes
            if fn == 81:
                self.paper.note_unknown("2d-code cn=%d" % cn)
            return
        if fn == 65 and len(body) >= 3:
            m.qr_model = {49: 1, 50: 2, 51: 3}.get(body[2], 2)
        elif fn == 67 and len(body) >= 3:
            m.qr_size = max(1, min(16, body[2]))
        elif fn == 69 and len(body) >= 3:
            m.qr_ec = {48: "L", 49: "M", 50: "Q", 51: "H"}.get(body[2], "L")
        elif fn == 80 and len(body) >= 3:
            m.qr_data = body[3:]
        elif fn == 81:
            if m.qr_data:
                self.paper.qr(m.qr_data, m.qr_model, m.qr_size, m.qr_ec)
