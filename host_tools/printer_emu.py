"""refund-printer: an ESC/POS thermal printer emulator, faults included.

  refund-printer (--tty DEV | --pty) --out DIR [--width 58|80] [--baud N]
                 [--buffer BYTES] [--lines-per-sec N] [--control SOCK] [--font PATH|none]
                 [--paper-out | --paper-out-after N] [--near-end] [--cover-open]
                 [--offline] [--no-status] [--bad-status] [--slow FACTOR]
                 [--cutter-error] [--dead]

It behaves like a serial thermal printer (Epson TM-style command set, Chinese
GB18030 double-byte mode as on the printers of Chinese bank terminals):

* A finite receive buffer (--buffer, default 4096 bytes). The printer sends XOFF
  (0x13) when the buffer is nearly full or the printer goes offline, XON (0x11)
  once it is online and the buffer has drained to half. Bytes that arrive while
  the buffer is full are dropped and counted (`overrun`), as on a real UART.
* The buffer is consumed at paper speed (--lines-per-sec, x --slow factor): a
  host that writes faster than the printer prints sees XOFF.
* Real-time commands are answered on reception, even offline or with a full
  buffer: DLE EOT n (n = 1 printer, 2 offline cause, 3 error cause, 4 paper
  sensor) with the Epson bit layouts, fixed bits included, so every reply
  matches 0xx1xx10; DLE ENQ 2 recovers from an error and clears the buffer.
* In-band status: GS r 1 (paper sensor, Epson layout 0xx0xxxx) and GS I n are
  answered when the parser reaches them, i.e. after everything before them has
  been printed: a completion check.
* Faults, at start or while running (Python API `set_fault`, or the JSON-lines
  control socket): paper out (now or after N more printed lines; the printer then
  stops in the middle of a line), paper near end, cover open, offline, no status
  answers, slow paper, autocutter error, dead (no power: nothing is read or sent),
  bad status (DLE EOT replies sent with bit 7 set: they violate 0xx1xx10, as a
  damaged line or a foreign device would). `inject(data)` (or the control command
  "inject") sends raw bytes to the host: line noise, unexpected output.

Each receipt (paper from one cut to the next) is written to --out as
receipt-NNNN.txt (decoded text, laid out in columns), .json (lines with
attributes, QR payloads, barcodes, images, how it ended) and .png (rendered with
Pillow and a CJK font; without one the printer says so once on stderr, and the
.json says `"png": null, "png_note": "no CJK font ..."`).

JSON of a receipt: {seq, width, columns, lines: [{kind: text|qr|barcode|image,
text, align, bold, underline, size: [w, h], font, wrapped, partial, spans}], qr:
[{data, model, size, ec, partial}], barcodes: [{type, data}], cut: full|partial|null,
complete, cut_clean, incomplete: null|paper_end|not_cut, interruptions:
[{reason, after_line}], continued, overrun, unknown, files}.
`cut_clean` is true only for paper that ended at a cutter command with nothing
interrupted, lost or cut short.

With --pty the printer creates a pty and prints one JSON line
{"tty": PATH, "out": DIR, "control": SOCK|null, "font": PATH|null}; with --tty it
opens an existing serial device (e.g. one end of host_tools.nullmodem.NullModem).

Control socket (--control PATH, a unix stream socket, one JSON object a line):
  {"cmd": "fault", "cover_open": true}   -> {"ok": true, "state": {...}}
  {"cmd": "state"}                         -> {"ok": true, "state": {...}}
  {"cmd": "receipts"}                      -> {"ok": true, "receipts": [...]}
  {"cmd": "inject", "hex": "00ff"}         -> {"ok": true}   (raw bytes to the host)
"""
import argparse
import glob
import json
import os
import pty
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import tty

XON = 0x11
XOFF = 0x13
ESC, FS, GS, DLE = 0x1B, 0x1C, 0x1D, 0x10

COLUMNS = {58: 32, 80: 48}
DOTS = {58: 384, 80: 576}
LINE_DOTS = 30  # default line pitch (ESC 2) in dots, used to turn dots into paper lines

# ESC t n -> Python codec (Epson numbering)
CODEPAGES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 16: "cp1252",
             17: "cp866", 18: "cp852", 19: "cp858", 255: "cp437"}

BARCODE_A = {0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "NW7"}
BARCODE_B = {65: "UPC-A", 66: "UPC-E", 67: "EAN13", 68: "EAN8", 69: "CODE39", 70: "ITF",
             71: "NW7", 72: "CODE93", 73: "CODE128", 74: "GS1-128", 75: "GS1 DATABAR OMNI",
             76: "GS1 DATABAR TRUNCATED", 77: "GS1 DATABAR LIMITED",
             78: "GS1 DATABAR EXPANDED"}

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
NO_FONT_NOTE = ("no CJK font found (install e.g. fonts-wqy-microhei or fonts-noto-cjk, or "
                "pass --font): .png receipts not written, .txt/.json are")


def find_cjk_font(hint=None):
    """Path of a CJK-capable font, or None. hint: a path, or 'none' to disable."""
    if hint is not None:
        if hint.lower() in ("", "none"):
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


class Fault(ValueError):
    pass


class _Receipt:
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


class PrinterEmulator:
    """The printer. Without start() it is driven synchronously with feed(); start() runs
    it on a tty (a new pty when tty is None) in a thread, at paper speed."""

    def __init__(self, out_dir, width=58, buffer_size=4096, lines_per_sec=None, font=None,
                 xoff_margin=None, log=None, **faults):
        if width not in COLUMNS:
            raise ValueError("width must be 58 or 80")
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.width = width
        self.columns = COLUMNS[width]
        self.dots = DOTS[width]
        self.capacity = buffer_size
        self.xoff_margin = xoff_margin if xoff_margin is not None else max(16, min(256, buffer_size // 4))
        self.xon_level = buffer_size // 2
        self.lines_per_sec = lines_per_sec
        self.font_path = find_cjk_font(font)
        self.png_note = None if self.font_path else NO_FONT_NOTE
        self._log = log or (lambda msg: sys.stderr.write("refund-printer: %s\n" % msg))
        self._font_warned = False
        self.lock = threading.RLock()
        self.receipts = []
        self._seq = self._first_seq()
        # faults
        self.paper_out = False
        self.paper_left = None  # printed lines left before the paper ends
        self.near_end = False
        self.cover_open = False
        self.offline = False
        self.no_status = False
        self.bad_status = False
        self.slow = 1.0
        self.cutter_error = False
        self.dead = False
        # i/o
        self.rx = bytearray()
        self._skip = 0  # bytes of a long command still to be discarded
        self._tx = bytearray()  # replies waiting for the line (or for replies())
        self._rt_tail = b""  # partial real-time command across reads
        self.xoff = False
        self._xoff_at = 0.0
        self.stats = {"rx": 0, "tx": 0, "xoff": 0, "xon": 0, "overrun": 0, "status_replies": 0,
                      "lines_printed": 0, "unknown": 0, "garbled_gb": 0}
        self._next_ready = 0.0
        self._thread = None
        self._writer = None  # receipt files are written off the receive path when started
        self._out_q = None
        self._stop = threading.Event()
        self._wake_r = self._wake_w = None
        self.fd = None
        self.path = None
        self._own_fds = []
        self._server = None
        self.control_path = None
        self._reset_modes()
        self._line = []
        self._line_align = "left"
        self._receipt = None
        self._after_interrupt = False
        self._pending_overrun = 0  # bytes lost before a receipt started
        self.set_fault(**faults)

    # ---------------------------------------------------------------- public API
    def feed(self, data):
        """Bytes from the host, processed at once (no paper-speed limit without start())."""
        with self.lock:
            self._receive(bytes(data))
            self._process(None if self._thread is None else time.monotonic())

    def replies(self):
        """Bytes the printer sent (status replies, XON/XOFF) since the last call.
        Only when not started on a tty (then they go to the line)."""
        with self.lock:
            out = bytes(self._tx)
            self._tx.clear()
            return out

    def set_fault(self, paper_out=None, paper_out_after=None, near_end=None, cover_open=None,
                  offline=None, no_status=None, slow=None, cutter_error=None, dead=None,
                  bad_status=None):
        """Change faults; arguments left at None keep their current value.
        paper_out=False loads paper (and clears paper_out_after unless given)."""
        with self.lock:
            if paper_out is not None:
                self.paper_out = bool(paper_out)
                if not paper_out:
                    if paper_out_after is None:
                        self.paper_left = None
            if paper_out_after is not None:
                if int(paper_out_after) < 0:
                    raise Fault("paper_out_after must be >= 0")
                self.paper_left = int(paper_out_after)
            if near_end is not None:
                self.near_end = bool(near_end)
            if cover_open is not None:
                was = self.cover_open
                self.cover_open = bool(cover_open)
                if self.cover_open and not was:
                    self._interrupt("cover_open")
            if offline is not None:
                self.offline = bool(offline)
            if no_status is not None:
                self.no_status = bool(no_status)
            if bad_status is not None:
                self.bad_status = bool(bad_status)
            if slow is not None:
                if float(slow) <= 0:
                    raise Fault("slow must be > 0")
                self.slow = float(slow)
            if cutter_error is not None:
                self.cutter_error = bool(cutter_error)
            if dead is not None:
                if dead and not self.dead:
                    # Power lost: buffers and modes are gone; paper stays as it is.
                    self._interrupt("power_off")
                    self._clear_buffers()
                    self._reset_modes()
                    self.xoff = False
                elif not dead and self.dead:
                    self.dead = False
                    self._send(bytes((XON,)))  # powered up, ready to receive
                self.dead = bool(dead)
            self._flow()
        self._kick()

    def state(self):
        with self.lock:
            return {
                "online": self.online(), "paper_out": self.paper_out,
                "paper_left": self.paper_left, "near_end": self.near_end,
                "cover_open": self.cover_open, "offline": self.offline,
                "no_status": self.no_status, "bad_status": self.bad_status, "slow": self.slow,
                "cutter_error": self.cutter_error, "dead": self.dead,
                "buffered": len(self.rx), "capacity": self.capacity, "xoff": self.xoff,
                "receipts": len(self.receipts), "tty": self.path,
                "stats": dict(self.stats),
            }

    def online(self):
        return not (self.paper_out or self.cover_open or self.offline or self.cutter_error
                    or self.dead)

    def wait(self, pred, timeout=10.0, interval=0.01):
        """Wait until pred(self) is true; return its value (raise TimeoutError)."""
        end = time.monotonic() + timeout
        while True:
            with self.lock:
                v = pred(self)
            if v:
                return v
            if time.monotonic() > end:
                raise TimeoutError("printer: condition not met in %ss; state %r"
                                   % (timeout, self.state()))
            time.sleep(interval)

    def start(self, tty_path=None, baud=None, control=None):
        """Run on tty_path (opened raw), or on a new pty when None. Returns self."""
        if tty_path is None:
            m, s = pty.openpty()
            tty.setraw(s)
            self.fd = m
            self.path = os.ttyname(s)
            self._own_fds = [m, s]  # keep the slave open: the master never reads EIO
        else:
            fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(fd)
            if baud:
                _set_baud(fd, baud)
            self.fd = fd
            self.path = tty_path
            self._own_fds = [fd]
        os.set_blocking(self.fd, False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._own_fds += [self._wake_r, self._wake_w]
        self._stop.clear()
        self._next_ready = time.monotonic()
        # A real printer's UART keeps receiving (and sends XOFF at its threshold) while
        # the print engine works: load qrcode now and write receipt files (PNG rendering
        # takes ~20 ms) in another thread, so the receive path never stalls on them.
        try:
            import qrcode  # noqa: F401
        except ImportError:
            pass
        self._out_q = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="printer-out", daemon=True)
        self._writer.start()
        self._thread = threading.Thread(target=self._serve, name="printer", daemon=True)
        self._thread.start()
        if control:
            self._start_control(control)
        return self

    def stop(self, flush=True):
        """Stop the thread; with flush, write a receipt left on the paper without a cut."""
        self._stop.set()
        self._kick()
        if self._thread:
            self._thread.join(3)
            self._thread = None
        if self._writer:
            self._out_q.put(None)
            self._writer.join(30)
            self._writer = None
        if self._server:
            try:
                self._server.close()
            except OSError:
                pass
            self._server = None
            if self.control_path and os.path.exists(self.control_path):
                os.unlink(self.control_path)
        for fd in self._own_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._own_fds = []
        if flush:
            with self.lock:
                # A line still in the line buffer was never printed: it is not on paper.
                self._finish(None, "not_cut")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---------------------------------------------------------------- receive side
    def _receive(self, data):
        if self.dead or not data:
            return
        self.stats["rx"] += len(data)
        keep = self._realtime(data)
        if keep:
            data = data[keep:]  # a DLE ENQ 2 in this chunk cleared what came before it
        room = self.capacity - len(self.rx)
        if len(data) > room:
            lost = len(data) - max(room, 0)
            self.stats["overrun"] += lost
            self._log("receive buffer overrun: %d bytes dropped (host ignored XOFF)" % lost)
            if self._receipt is not None:
                self._receipt.overrun += lost
            else:
                self._pending_overrun += lost
            data = data[:max(room, 0)]
        self.rx += data
        self._flow()
        if self.xoff and len(self.rx) > self.capacity - self.xoff_margin:
            # The host keeps sending while XOFF is asserted: say it again (rate-limited).
            now = time.monotonic()
            if now - self._xoff_at > 0.2:
                self._send(bytes((XOFF,)))
                self._xoff_at = now
                self.stats["xoff"] += 1

    def _realtime(self, data):
        """DLE EOT n / DLE ENQ n are executed on reception (Epson: even offline or with a
        full buffer). They stay in the buffer too; the parser skips them there."""
        old = len(self._rt_tail)
        buf = self._rt_tail + data
        self._rt_tail = b""
        keep = 0
        i = 0
        n = len(buf)
        while True:
            i = buf.find(b"\x10", i)
            if i < 0:
                break
            if i + 1 >= n:
                self._rt_tail = buf[i:]
                break
            c = buf[i + 1]
            if c in (0x04, 0x05):
                if i + 2 >= n:
                    self._rt_tail = buf[i:]
                    break
                arg = buf[i + 2]
                if c == 0x04:
                    self._status_reply(arg)
                elif arg == 2:
                    # DLE ENQ 2: recover from a recoverable error, clear the buffers.
                    self.cutter_error = False
                    self._clear_buffers()
                    keep = max(0, i + 3 - old)
                    self._log("DLE ENQ 2: error cleared, buffers cleared")
                i += 3
            else:
                i += 1
        return keep

    def _clear_buffers(self):
        self.rx.clear()
        self._skip = 0
        self._line = []

    def status_byte(self, n):
        """Epson DLE EOT n reply (fixed bits: 0xx1xx10), or None for an unknown n."""
        b = 0x12
        if n == 1:  # printer status
            if not self.online():
                b |= 0x08
            if self.cutter_error:
                b |= 0x20  # waiting for online recovery
        elif n == 2:  # offline cause
            if self.cover_open:
                b |= 0x04
            if self.paper_out:
                b |= 0x20  # printing stopped by paper end
            if self.cutter_error:
                b |= 0x40  # error occurred
        elif n == 3:  # error cause
            if self.cutter_error:
                b |= 0x08  # autocutter error
        elif n == 4:  # roll paper sensor
            if self.near_end:
                b |= 0x0C
            if self.paper_out:
                b |= 0x60
        else:
            return None
        return b

    def _status_reply(self, n):
        b = self.status_byte(n)
        if b is None or self.no_status or self.dead:
            return
        self.stats["status_replies"] += 1
        if self.bad_status:
            b |= 0x80  # bit 7 is fixed 0: the reply no longer matches 0xx1xx10
        self._send(bytes((b,)))

    def inject(self, data):
        """Send raw bytes to the host (line noise, unexpected printer output)."""
        with self.lock:
            self._send(bytes(data))
        self._kick()

    def _send(self, data):
        if self.dead:
            return
        self._tx += data
        self.stats["tx"] += len(data)

    def _flow(self):
        if self.dead:
            return
        used = len(self.rx)
        if not self.xoff and (used >= self.capacity - self.xoff_margin or not self.online()):
            self.xoff = True
            self._xoff_at = time.monotonic()
            self.stats["xoff"] += 1
            self._send(bytes((XOFF,)))
        elif self.xoff and self.online() and used <= self.xon_level:
            self.xoff = False
            self.stats["xon"] += 1
            self._send(bytes((XON,)))

    # ---------------------------------------------------------------- modes
    def _reset_modes(self):
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

    def _attrs(self):
        return (self.bold, self.underline, self.wmul, self.hmul, self.font_b)

    # ---------------------------------------------------------------- processing
    def _process(self, now):
        """Parse commands from the buffer while online; `now` None = no paper-speed limit.
        Returns True when it stopped only because of paper speed (more work is due)."""
        due = False
        while self.rx and self.online() and not self.dead:
            if now is not None and now < self._next_ready:
                due = True
                break
            try:
                used = self._step()
            except Exception as e:  # an emulator bug must not take the bench down
                self._log("parser error %r at %s: byte skipped" % (e, bytes(self.rx[:8]).hex()))
                self.stats["unknown"] += 1
                used = 1
            if used == 0:
                break  # incomplete command: wait for more bytes
            del self.rx[:used]
        self._flow()
        return due

    def _line_time(self, lines):
        if not self.lines_per_sec:
            return 0.0
        return lines * self.slow / float(self.lines_per_sec)

    def _step(self):
        b = self.rx
        n = len(b)
        if self._skip:
            k = min(self._skip, n)
            self._skip -= k
            return k
        c = b[0]
        if c == 0x0A:
            self._print_line()
            return 1
        if c == 0x0D or c == 0x00:
            return 1
        if c == 0x09:
            for _ in range(8 - self._line_cols() % 8):
                self._put(" ")
            return 1
        if c == 0x0C:
            self._print_line()
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
            return self._esc()
        if c == FS:
            return self._fs()
        if c == GS:
            return self._gs()
        if c < 0x20 or c == 0x7F:
            return self._unknown(b[:1])
        # text
        if self.kanji and c >= 0x81:
            if n < 2:
                return 0
            c2 = b[1]
            if c == 0xFF or not (0x40 <= c2 <= 0xFE) or c2 == 0x7F:
                self.stats["garbled_gb"] += 1
                self._put("\ufffd")
                return 1
            try:
                ch = bytes(b[:2]).decode("gb18030")
            except UnicodeDecodeError:
                ch = "\ufffd"
                self.stats["garbled_gb"] += 1
            self._put(ch, 2)
            return 2
        if c < 0x80:
            self._put(chr(c))
            return 1
        try:
            ch = bytes((c,)).decode(CODEPAGES.get(self.codepage, "cp437"))
        except UnicodeDecodeError:
            ch = "\ufffd"
        self._put(ch)
        return 1

    def _sized(self, ln, keep):
        """A command of ln bytes not all here yet: 0 = wait for the rest (its payload is
        needed and fits the buffer), else take what is here and skip the rest as it
        arrives, like a printer streaming data it does not keep."""
        n = len(self.rx)
        if n >= ln:
            return ln
        if keep and ln <= self.capacity // 2:
            return 0
        if keep:
            self._unknown(self.rx[:3])  # too big to keep: dropped
        self._skip = ln - n
        return n

    def _unknown(self, seq):
        self.stats["unknown"] += 1
        if self._receipt is not None and len(self._receipt.unknown) < 50:
            self._receipt.unknown.append(bytes(seq).hex())
        return len(seq)

    def _esc(self):
        b = self.rx
        n = len(b)
        if n < 2:
            return 0
        c = b[1]
        two = {0x40, 0x32, 0x69, 0x6D, 0x3C, 0x0C}
        if c in two:
            if c == 0x40:  # ESC @
                self._line = []
                self._reset_modes()
                if self._receipt is not None and not self._receipt.has_content():
                    self._receipt.continued = False
                self._after_interrupt = False
            elif c in (0x69, 0x6D):  # ESC i / ESC m: cut
                self._cut("full" if c == 0x69 else "partial")
            return 2
        three = {0x21, 0x45, 0x47, 0x2D, 0x61, 0x64, 0x4A, 0x74, 0x4D, 0x33, 0x20, 0x52,
                 0x56, 0x7B, 0x72, 0x3D, 0x25, 0x3F, 0x55, 0x65, 0x54, 0x63, 0x4B}
        if c == 0x4C or c == 0x53:  # page mode select / standard mode
            return 2
        if c in three:
            if n < 3:
                return 0
            v = b[2]
            if c == 0x21:  # ESC ! print mode
                self.font_b = bool(v & 0x01)
                self.bold = bool(v & 0x08)
                self.hmul = 2 if v & 0x10 else 1
                self.wmul = 2 if v & 0x20 else 1
                self.underline = 1 if v & 0x80 else 0
            elif c in (0x45, 0x47):
                self.bold = bool(v & 1)
            elif c == 0x2D:
                self.underline = v & 3 if v < 0x30 else (v - 0x30) & 3
            elif c == 0x61:
                self.align = {0: "left", 1: "center", 2: "right"}.get(v if v < 0x30 else v - 0x30,
                                                                      self.align)
            elif c == 0x64:  # ESC d n: print and feed n lines
                self._print_line(feed=v)
            elif c == 0x4A:  # ESC J n: print and feed n dots
                self._print_line(feed=1)
            elif c == 0x74:
                if v not in CODEPAGES:
                    self._log("ESC t %d: code page not emulated, using cp437" % v)
                self.codepage = v
            elif c == 0x4D:
                self.font_b = (v & 1) == 1
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
                return self._sized(5 + k, keep=False)
            self._image({"kind": "image", "format": "ESC *", "mode": b[2], "columns": b[3] + 256 * b[4],
                         "height": 24 if b[2] in (32, 33) else 8}, None, 1)
            return 5 + k
        return self._unknown(b[:2])

    def _fs(self):
        b = self.rx
        n = len(b)
        if n < 2:
            return 0
        c = b[1]
        if c == 0x26:  # FS &: Chinese (double-byte) mode on
            self.kanji = True
            return 2
        if c == 0x2E:  # FS .: off
            self.kanji = False
            return 2
        if c in (0x21, 0x2D, 0x43, 0x57, 0x3F):
            if n < 3:
                return 0
            if c == 0x21:  # FS ! kanji print mode
                v = b[2]
                self.wmul = 2 if v & 0x04 else 1
                self.hmul = 2 if v & 0x08 else 1
                self.underline = 1 if v & 0x80 else 0
            elif c == 0x57:
                self.wmul = self.hmul = 2 if b[2] & 1 else 1
            return 3
        if c in (0x53, 0x70):  # FS S n1 n2 / FS p n m
            return 4 if n >= 4 else 0
        if c == 0x28:  # FS ( X pL pH ...
            if n < 5:
                return 0
            return self._sized(5 + b[3] + 256 * b[4], keep=False)
        if c == 0x32:  # FS 2 c1 c2 d1..d72 (user-defined kanji)
            return self._sized(76, keep=False)
        return self._unknown(b[:2])

    def _gs(self):
        b = self.rx
        n = len(b)
        if n < 2:
            return 0
        c = b[1]
        if c == 0x21:  # GS ! size
            if n < 3:
                return 0
            self.wmul = ((b[2] >> 4) & 7) + 1
            self.hmul = (b[2] & 7) + 1
            return 3
        if c == 0x56:  # GS V cut
            if n < 3:
                return 0
            m = b[2]
            if m in (65, 66, 97, 98, 103, 104):
                if n < 4:
                    return 0
                self._cut("full" if m in (65, 97, 103) else "partial")
                return 4
            self._cut("full" if m in (0, 48) else "partial")
            return 3
        if c == 0x28:  # GS ( X pL pH ...
            if n < 5:
                return 0
            ln = 5 + b[3] + 256 * b[4]
            if n < ln:
                return self._sized(ln, keep=b[2] == 0x6B)
            if b[2] == 0x6B:  # GS ( k: 2D codes
                self._gs_k(bytes(b[5:ln]))
            return ln
        if c == 0x38:  # GS 8 L p1..p4 ...
            if n < 7:
                return 0
            return self._sized(7 + b[3] + (b[4] << 8) + (b[5] << 16) + (b[6] << 24), keep=False)
        if c == 0x6B:  # GS k barcode
            if n < 3:
                return 0
            m = b[2]
            if m <= 6:
                end = b.find(b"\x00", 3)
                if end < 0:
                    return 0 if n < min(300, self.capacity // 2) else self._unknown(b[:3])
                self._barcode(BARCODE_A.get(m, str(m)), bytes(b[3:end]))
                return end + 1
            if n < 4:
                return 0
            ln = 4 + b[3]
            if n < ln:
                return 0
            self._barcode(BARCODE_B.get(m, str(m)), bytes(b[4:ln]))
            return ln
        if c == 0x72:  # GS r n: in-band status
            if n < 3:
                return 0
            self._gs_r(b[2])
            return 3
        if c == 0x49:  # GS I n: printer id
            if n < 3:
                return 0
            self._gs_i(b[2])
            return 3
        if c == 0x76:  # GS v 0 m xL xH yL yH data: raster image
            if n < 8:
                return 0
            xb = b[4] + 256 * b[5]
            yd = b[6] + 256 * b[7]
            ln = 8 + xb * yd
            if n < ln:
                return self._sized(ln, keep=True)
            self._image({"kind": "image", "format": "GS v 0", "width": xb * 8, "height": yd},
                        bytes(b[8:ln]), max(1, -(-yd // LINE_DOTS)))
            return ln
        if c == 0x2A:  # GS * x y data
            if n < 4:
                return 0
            return self._sized(4 + b[2] * b[3] * 8, keep=False)
        if c == 0x3A:  # GS : (macro definition start/end)
            return 2
        if c == 0x5E:  # GS ^ r t m (run macro)
            return 5 if n >= 5 else 0
        if c in (0x68, 0x77, 0x48, 0x66, 0x42, 0x62, 0x61, 0x2F, 0x7C, 0x45, 0x54, 0x63):
            if n < 3:
                return 0
            if c == 0x68:
                self.bc_height = b[2] or 162
            elif c == 0x48:
                self.bc_hri = b[2] & 3 if b[2] < 0x30 else (b[2] - 0x30) & 3
            return 3
        if c in (0x4C, 0x57, 0x24, 0x5C, 0x50):  # GS L / GS W / GS $ / GS \ / GS P
            return 4 if n >= 4 else 0
        return self._unknown(b[:2])

    def _gs_k(self, body):
        if len(body) < 2:
            return
        cn, fn = body[0], body[1]
        if cn != 49:  # only QR is modelled; PDF417 etc. are recorded as unknown 2D codes
            if fn == 81 and self._receipt is not None:
                self._receipt.unknown.append("2d-code cn=%d" % cn)
            return
        if fn == 65 and len(body) >= 3:
            self.qr_model = {49: 1, 50: 2, 51: 3}.get(body[2], 2)
        elif fn == 67 and len(body) >= 3:
            self.qr_size = max(1, min(16, body[2]))
        elif fn == 69 and len(body) >= 3:
            self.qr_ec = {48: "L", 49: "M", 50: "Q", 51: "H"}.get(body[2], "L")
        elif fn == 80 and len(body) >= 3:
            self.qr_data = body[3:]
        elif fn == 81:
            if self.qr_data:
                self._qr()

    def _gs_r(self, v):
        if self.no_status or self.dead:
            return
        if v in (1, 49):  # paper sensor, Epson layout: bit4 fixed 0
            r = (0x03 if self.near_end else 0) | (0x0C if self.paper_out else 0)
        elif v in (2, 50):  # drawer kick connector
            r = 0x00
        else:
            return
        self.stats["status_replies"] += 1
        self._send(bytes((r,)))

    def _gs_i(self, v):
        if self.no_status or self.dead:
            return
        table = {1: b"\x20", 49: b"\x20", 2: b"\x03", 50: b"\x03", 3: b"\x01", 51: b"\x01",
                 65: b"_1.00\x00", 66: b"_REFUND\x00", 67: b"_REFUND-EMU\x00",
                 68: b"_0000000001\x00", 69: b"_GB18030\x00"}
        r = table.get(v)
        if r:
            self._send(r)

    # ---------------------------------------------------------------- paper
    def _line_cols(self):
        return sum(w for _ch, w, _a in self._line)

    def _put(self, ch, w=None):
        if w is None:
            w = char_cols(ch)
        w *= self.wmul
        if self._line and self._line_cols() + w > self.columns:
            self._print_line(wrapped=True)
            if not self.online():
                # paper ended while wrapping: this character is lost with the line
                return
        if not self._line:
            self._line_align = self.align  # Epson: alignment counts at the start of a line
        self._line.append((ch, w, self._attrs()))

    def _ensure_receipt(self):
        if self._receipt is None:
            self._receipt = _Receipt(self._after_interrupt)
            pend = self._pending_overrun
            if pend:
                self._receipt.overrun += pend
                self._pending_overrun = 0
        return self._receipt

    def _consume_paper(self, lines):
        """Charge `lines` of paper. Returns the fraction (0..1] that made it onto paper."""
        self._next_ready = max(self._next_ready, time.monotonic()) + self._line_time(lines)
        if self.paper_left is None:
            self.stats["lines_printed"] += lines
            return 1.0
        if self.paper_left >= lines:
            self.paper_left -= lines
            self.stats["lines_printed"] += lines
            return 1.0
        frac = self.paper_left / float(lines)
        self.stats["lines_printed"] += self.paper_left
        self.paper_left = 0
        return frac

    def _paper_end(self):
        self.paper_out = True
        self._log("paper end: printing stopped in the middle of a line")
        self._finish(None, "paper_end")
        self._line = []
        self._after_interrupt = True
        self._flow()

    def _line_entry(self, cells, wrapped):
        text = "".join(ch for ch, _w, _a in cells)
        a0 = cells[0][2] if cells else self._attrs()
        spans = []
        for ch, _w, a in cells:
            if spans and spans[-1][1] == a:
                spans[-1][0].append(ch)
            else:
                spans.append(([ch], a))
        align = self._line_align if cells else self.align
        entry = {"kind": "text", "text": text, "align": align, "bold": a0[0],
                 "underline": a0[1], "size": [1, 1], "font": "B" if a0[4] else "A",
                 "cols": sum(w for _ch, w, _a in cells), "wrapped": wrapped, "partial": False}
        entry["size"] = [max([a[2] for _c, _w, a in cells] or [self.wmul]),
                         max([a[3] for _c, _w, a in cells] or [self.hmul])]
        if len(spans) > 1:
            entry["spans"] = [{"text": "".join(s), "bold": a[0], "underline": a[1],
                               "size": [a[2], a[3]]} for s, a in spans]
        entry["_cells"] = cells
        return entry

    def _print_line(self, feed=1, wrapped=False):
        """Print the line buffer (maybe empty) and feed; `feed` lines in total."""
        cells = self._line
        self._line = []
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

    def _print_pending(self):
        if self._line:
            self._print_line()

    def _block(self, entry, lines):
        if self._line:
            self._print_line()
            if not self.online():
                return None
        rec = self._ensure_receipt()
        entry.setdefault("align", self.align)
        entry["partial"] = False
        frac = self._consume_paper(lines)
        if frac < 1.0:
            entry["partial"] = True
            rec.lines.append(entry)
            self._paper_end()
            return entry
        rec.lines.append(entry)
        return entry

    def _qr(self):
        data = self.qr_data
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        modules = _qr_modules(text, self.qr_ec)
        dots = modules * self.qr_size
        entry = {"kind": "qr", "data": text, "model": self.qr_model, "size": self.qr_size,
                 "ec": self.qr_ec, "modules": modules}
        rec = self._ensure_receipt()
        e = self._block(entry, max(1, -(-dots // LINE_DOTS)))
        if e is not None:
            rec.qr.append({k: e[k] for k in ("data", "model", "size", "ec", "partial")})

    def _barcode(self, kind, data):
        text = data.decode("latin-1")
        entry = {"kind": "barcode", "type": kind, "data": text, "height": self.bc_height,
                 "hri": self.bc_hri}
        rec = self._ensure_receipt()
        e = self._block(entry, max(1, -(-(self.bc_height + (24 if self.bc_hri else 0)) // LINE_DOTS)))
        if e is not None:
            rec.barcodes.append({"type": kind, "data": text, "partial": e["partial"]})

    def _image(self, entry, raster, lines):
        entry["_raster"] = raster
        rec = self._ensure_receipt()
        e = self._block(entry, lines)
        if e is not None:
            rec.images.append({k: v for k, v in e.items() if not k.startswith("_")})

    def _cut(self, kind):
        self._print_pending()
        if not self.online():
            return
        if self.cutter_error:
            return
        self._finish(kind, None)
        self._after_interrupt = False

    def _interrupt(self, reason):
        if self._receipt is not None and (self._receipt.lines or self._line):
            self._receipt.interruptions.append({"reason": reason,
                                                "after_line": len(self._receipt.lines)})

    # ---------------------------------------------------------------- output
    def _first_seq(self):
        seqs = [int(os.path.basename(p)[8:12]) for p in glob.glob(os.path.join(self.out_dir, "receipt-*.json"))
                if os.path.basename(p)[8:12].isdigit()]
        return max(seqs) + 1 if seqs else 1

    def _finish(self, cut, incomplete):
        rec = self._receipt
        self._receipt = None
        if rec is None or not rec.has_content():
            return None
        seq = self._seq
        self._seq += 1
        complete = (incomplete is None and not rec.interruptions and not rec.overrun
                    and not rec.continued and not any(ln.get("partial") for ln in rec.lines))
        base = os.path.join(self.out_dir, "receipt-%04d" % seq)
        lines = []
        for ln in rec.lines:
            lines.append({k: v for k, v in ln.items() if not k.startswith("_")})
        doc = {
            "seq": seq, "width": self.width, "columns": self.columns, "lines": lines,
            "qr": rec.qr, "barcodes": rec.barcodes, "images": rec.images, "cut": cut,
            "complete": complete, "cut_clean": bool(cut) and complete,
            "incomplete": incomplete, "partial": any(ln.get("partial") for ln in rec.lines),
            "interruptions": rec.interruptions, "continued": rec.continued,
            "overrun": rec.overrun, "unknown": rec.unknown,
            "started": rec.started, "finished": time.time(),
            "files": {"txt": base + ".txt", "json": base + ".json", "png": None},
        }
        if self._writer is not None:
            self._out_q.put((rec, doc, base))  # appended to self.receipts once written
        else:
            self._write_out(rec, doc, base)
        return doc

    def _write_loop(self):
        while True:
            job = self._out_q.get()
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
            try:
                render_png(rec.lines, self.dots, self.columns, self.font_path, base + ".png", doc)
                doc["files"]["png"] = base + ".png"
            except Exception as e:  # a rendering problem must not lose the receipt
                doc["png_note"] = "png failed: %r" % (e,)
                self._log("png rendering failed: %r" % (e,))
        else:
            doc["png"] = None
            doc["png_note"] = self.png_note
            if not self._font_warned:
                self._font_warned = True
                self._log(self.png_note)
        with open(base + ".json", "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
        with self.lock:
            self.receipts.append(doc)

    # ---------------------------------------------------------------- thread
    def _kick(self):
        if self._thread is not None and self._wake_w is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        elif self._thread is None:
            with self.lock:
                self._process(None)

    def _serve(self):
        fd = self.fd
        while not self._stop.is_set():
            with self.lock:
                now = time.monotonic()
                busy = self._process(now)
                want_write = bool(self._tx)
                timeout = 0.2
                if busy:
                    timeout = max(0.0005, min(0.2, self._next_ready - now))
            try:
                r, w, _ = select.select([fd, self._wake_r], [fd] if want_write else [], [], timeout)
            except (OSError, ValueError):
                return
            if self._wake_r in r:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            if fd in r:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:
                    data = b""
                    time.sleep(0.01)
                if data:
                    with self.lock:
                        self._receive(data)
            if fd in w or self._tx:
                # Replies and XOFF go out right after reception, like a UART interrupt
                # handler would send them, not after the next round of printing.
                with self.lock:
                    try:
                        k = os.write(fd, bytes(self._tx))
                    except (BlockingIOError, InterruptedError):
                        k = 0
                    except OSError:
                        k = len(self._tx)
                    del self._tx[:k]

    def _start_control(self, path):
        if os.path.exists(path):
            os.unlink(path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)
        self._server = srv
        self.control_path = path
        threading.Thread(target=self._control_accept, args=(srv,), daemon=True).start()

    def _control_accept(self, srv):
        while not self._stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=self._control_conn, args=(conn,), daemon=True).start()

    def _control_conn(self, conn):
        with conn, conn.makefile("rwb") as f:
            for raw in f:
                try:
                    reply = self.control(json.loads(raw))
                except Exception as e:
                    reply = {"ok": False, "error": repr(e)}
                f.write((json.dumps(reply, ensure_ascii=False) + "\n").encode())
                f.flush()

    def control(self, msg):
        """One control-channel command (a dict); returns the reply dict."""
        cmd = msg.get("cmd")
        if cmd == "fault":
            args = {k: v for k, v in msg.items() if k != "cmd"}
            self.set_fault(**args)
            return {"ok": True, "state": self.state()}
        if cmd == "state":
            return {"ok": True, "state": self.state()}
        if cmd == "receipts":
            with self.lock:
                return {"ok": True, "receipts": list(self.receipts)}
        if cmd == "inject":
            self.inject(bytes.fromhex(msg.get("hex", "")))
            return {"ok": True}
        return {"ok": False, "error": "unknown cmd %r (fault, state, receipts, inject)" % (cmd,)}


def control_request(path, msg, timeout=5):
    """Send one command to a running refund-printer's control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        with s.makefile("rwb") as f:
            f.write((json.dumps(msg) + "\n").encode())
            f.flush()
            return json.loads(f.readline())


def _set_baud(fd, baud):
    name = "B%d" % baud
    speed = getattr(termios, name, None)
    if speed is None:
        raise SystemExit("unsupported baud rate %d" % baud)
    a = termios.tcgetattr(fd)
    a[4] = a[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _qr_modules(text, ec):
    try:
        import qrcode
        lv = {"L": qrcode.constants.ERROR_CORRECT_L, "M": qrcode.constants.ERROR_CORRECT_M,
              "Q": qrcode.constants.ERROR_CORRECT_Q, "H": qrcode.constants.ERROR_CORRECT_H}[ec]
        q = qrcode.QRCode(version=None, error_correction=lv, border=0)
        q.add_data(text)
        q.make(fit=True)
        return q.modules_count
    except Exception:
        return 25


# -------------------------------------------------------------------- rendering
def _pad(entry, columns):
    # Alignment padding from the columns the line takes on paper (double-size text
    # counts double); the text itself is kept as printed, so it can be searched.
    text = entry.get("text", "")
    room = max(0, columns - entry.get("cols", 0))
    if entry.get("align") == "center":
        return " " * (room // 2) + text
    if entry.get("align") == "right":
        return " " * room + text
    return text


def render_text(lines, columns, doc):
    out = []
    for ln in lines:
        k = ln.get("kind")
        if k == "text":
            s = _pad(ln, columns).rstrip()
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


def render_png(lines, dots, columns, font_path, path, doc):
    from PIL import Image, ImageDraw, ImageFont

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
    fonts = {}

    def font(px):
        if px not in fonts:
            fonts[px] = ImageFont.truetype(font_path, px)
        return fonts[px]

    for ln, y, h in rows:
        k = ln.get("kind")
        if k == "text":
            cells = ln.get("_cells") or []
            used = sum(w for _c, w, _a in cells)
            x0 = {"center": (columns - used) // 2, "right": columns - used}.get(ln.get("align"), 0)
            x = max(0, x0) * cell_w
            for ch, w, a in cells:
                bold, ul, wm, hm, _fb = a
                base_w = char_cols(ch)
                gw = base_w * cell_w
                glyph = _GLYPHS.get((ch, font_path))
                if glyph is None:
                    f = font(22 if base_w == 1 else 24)
                    nat = max(1, int(f.getlength(ch) + 0.999))
                    glyph = Image.new("L", (max(nat, gw), 24), 0)
                    ImageDraw.Draw(glyph).text((max(0, (gw - nat) // 2), 0), ch, font=f, fill=255)
                    if glyph.width > gw:  # squeeze wide Latin glyphs into their cell
                        glyph = glyph.resize((gw, 24))
                    _GLYPHS[(ch, font_path)] = glyph  # a mask: 255 = ink
                g = glyph
                if wm > 1 or hm > 1:
                    g = glyph.resize((gw * wm, 24 * hm))
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
                x = {"center": (dots - qimg.width) // 2, "right": dots - qimg.width}.get(ln.get("align"), 0)
                img.paste(qimg, (max(0, x), y + 6))
        elif k == "barcode":
            bw = min(dots - 20, 12 + 11 * len(ln["data"]) * 2)
            x = (dots - bw) // 2
            for i in range(0, bw, 4):
                draw.rectangle([x + i, y + 3, x + i + (1 if (i // 4 + len(ln["data"])) % 3 else 2), y + ln["height"]], fill=0)
            if ln.get("hri"):
                draw.text((x, y + ln["height"] + 4), ln["data"], font=font(20), fill=0)
        elif k == "image" and ln.get("_raster") is not None:
            wbits, hd = ln["width"], ln["height"]
            raster = Image.frombytes("1", (wbits, hd), ln["_raster"])
            from PIL import ImageOps
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
        import qrcode
    except ImportError:
        return None
    lv = {"L": qrcode.constants.ERROR_CORRECT_L, "M": qrcode.constants.ERROR_CORRECT_M,
          "Q": qrcode.constants.ERROR_CORRECT_Q, "H": qrcode.constants.ERROR_CORRECT_H}[ec]
    q = qrcode.QRCode(version=None, error_correction=lv, box_size=size, border=0)
    q.add_data(text)
    q.make(fit=True)
    return q.make_image()._img.convert("L")


# -------------------------------------------------------------------- CLI
def main(argv=None):
    ap = argparse.ArgumentParser(prog="refund-printer", description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tty", help="serial device to serve (e.g. a NullModem end)")
    where.add_argument("--pty", action="store_true", help="create a pty, print its path as JSON")
    ap.add_argument("--out", required=True, help="directory for receipt-NNNN.{txt,json,png}")
    ap.add_argument("--width", type=int, choices=(58, 80), default=58)
    ap.add_argument("--baud", type=int, default=None)
    ap.add_argument("--buffer", type=int, default=4096, help="receive buffer bytes (4096)")
    ap.add_argument("--lines-per-sec", type=float, default=60.0, help="paper speed (60)")
    ap.add_argument("--control", help="unix socket for JSON-lines fault control")
    ap.add_argument("--font", help="CJK font path for .png ('none' to disable)")
    ap.add_argument("--paper-out", action="store_true")
    ap.add_argument("--paper-out-after", type=int, metavar="N",
                    help="paper ends in the middle of the (N+1)th printed line")
    ap.add_argument("--near-end", action="store_true")
    ap.add_argument("--cover-open", action="store_true")
    ap.add_argument("--offline", action="store_true")
    ap.add_argument("--no-status", action="store_true", help="never answer status requests")
    ap.add_argument("--bad-status", action="store_true",
                    help="status replies violate the fixed bits 0xx1xx10")
    ap.add_argument("--slow", type=float, default=1.0, help="paper speed divisor")
    ap.add_argument("--cutter-error", action="store_true")
    ap.add_argument("--dead", action="store_true", help="no power: reads and sends nothing")
    a = ap.parse_args(argv)
    emu = PrinterEmulator(a.out, width=a.width, buffer_size=a.buffer,
                          lines_per_sec=a.lines_per_sec, font=a.font,
                          paper_out=a.paper_out or None, paper_out_after=a.paper_out_after,
                          near_end=a.near_end or None, cover_open=a.cover_open or None,
                          offline=a.offline or None, no_status=a.no_status or None,
                          bad_status=a.bad_status or None,
                          slow=a.slow, cutter_error=a.cutter_error or None, dead=a.dead or None)
    emu.start(None if a.pty else a.tty, baud=a.baud, control=a.control)
    print(json.dumps({"tty": emu.path, "out": os.path.abspath(a.out), "control": a.control,
                      "font": emu.font_path, "width": a.width}), flush=True)
    if not emu.font_path:
        emu._log(NO_FONT_NOTE)
        emu._font_warned = True
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.is_set():
        done.wait(0.5)
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
