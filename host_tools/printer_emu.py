"""refund-printer: an ESC/POS thermal printer emulator, faults included.

  refund-printer (--tty DEV | --pty) --out DIR [--width 58|80] [--baud N]
                 [--buffer BYTES] [--lines-per-sec N] [--control SOCK] [--font PATH|builtin|none]
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
* Automatic status back: after GS a n (n with online/offline, error or paper bits;
  ESC @ turns it off again) the printer sends its 4 status bytes (Epson layout:
  0xx1xx00, then three 0xx0xxxx) at once and then at every status change, offline
  included: a paper end that is reloaded a moment later is still reported.
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
Pillow and a system CJK font; without one, or with --font builtin, with the
project's bitmap font host_tools/data/printer_font.bin, and the printer says so
once on stderr and in the .json's "png_note"; --font none: no .png).

JSON of a receipt: {seq, width, columns, lines: [{kind: text|qr|barcode|image,
text, align, bold, underline, size: [w, h], font, wrapped, partial, spans}], qr:
[{data, model, size, ec, partial}], barcodes: [{type, data}], cut: full|partial|null,
complete, cut_clean, incomplete: null|paper_end|not_cut, interruptions:
[{reason, after_line}], continued, overrun, unknown, files}.
`cut_clean` is true only for paper that ended at a cutter command with nothing
interrupted, lost or cut short.

With --pty the printer creates a pty and prints one JSON line
{"tty": PATH, "out": DIR, "control": SOCK|null, "font": PATH|"builtin"|null}; with --tty it
opens an existing serial device (e.g. one end of host_tools.nullmodem.NullModem).

Control socket (--control PATH, a unix stream socket, one JSON object a line):
  {"cmd": "fault", "cover_open": true}   -> {"ok": true, "state": {...}}
  {"cmd": "state"}                         -> {"ok": true, "state": {...}}
  {"cmd": "receipts"}                      -> {"ok": true, "receipts": [...]}
  {"cmd": "inject", "hex": "00ff"}         -> {"ok": true}   (raw bytes to the host)
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

from host_tools.printer_control import ControlServer, control_request, handle
from host_tools.printer_escpos import CODEPAGES, EscPosParser, Modes
from host_tools.printer_faults import Fault, PrinterFaults
from host_tools.printer_paper import COLUMNS, DOTS, Paper, char_cols
from host_tools.printer_render import (BUILTIN, FONT_CANDIDATES, NO_FONT_NOTE, NO_PNG_NOTE, ReceiptWriter,
                                       find_cjk_font, render_png, render_text, resolve_font)
from host_tools.printer_tty import TtyPort

# The parts (printer_*.py) are re-exported: this module stays the public import path.
__all__ = ["PrinterEmulator", "main", "XON", "XOFF", "Fault", "control_request", "find_cjk_font",
           "resolve_font", "BUILTIN", "NO_FONT_NOTE", "NO_PNG_NOTE", "FONT_CANDIDATES", "COLUMNS", "DOTS",
           "CODEPAGES", "char_cols", "render_text", "render_png"]

XON = 0x11
XOFF = 0x13


def _realtime_only(b):
    """True if b is whole real-time commands (DLE EOT n / DLE ENQ n) and nothing else."""
    if not b or len(b) % 3:
        return False
    for i in range(0, len(b), 3):
        if b[i] != 0x10 or b[i + 1] not in (0x04, 0x05):
            return False
    return True


class PrinterEmulator:
    """The printer. Without start() it is driven synchronously with feed(); start() runs
    it on a tty (a new pty when tty is None) in a thread, at paper speed.

    It ties the parts: the receive buffer with XON/XOFF flow control and the real-time
    commands (here), the fault state (printer_faults), the ESC/POS parser (printer_escpos)
    printing on the paper (printer_paper), the receipt files (printer_render), the tty
    thread (printer_tty) and the control socket (printer_control)."""

    def __init__(self, out_dir, width=58, buffer_size=4096, lines_per_sec=None, font=None,
                 xoff_margin=None, log=None, **faults):
        if width not in COLUMNS:
            raise ValueError("width must be 58 or 80")
        self.out_dir = out_dir
        self.width = width
        self.columns = COLUMNS[width]
        self.dots = DOTS[width]
        self.capacity = buffer_size
        self.xoff_margin = xoff_margin if xoff_margin is not None else max(16, min(256, buffer_size // 4))
        self.xon_level = buffer_size // 2
        self.font_path = resolve_font(font)  # a system font, BUILTIN, or None: no PNGs
        self._log = log or (lambda msg: sys.stderr.write("refund-printer: %s\n" % msg))
        self.lock = threading.RLock()
        self.stats = {"rx": 0, "tx": 0, "xoff": 0, "xon": 0, "overrun": 0, "realtime_dropped": 0,
                      "status_replies": 0, "asb": 0, "lines_printed": 0, "unknown": 0, "garbled_gb": 0}
        self.faults = PrinterFaults()
        self.modes = Modes()
        self.out = ReceiptWriter(out_dir, width, self.columns, self.dots, self.font_path,
                                 self.lock, self._log)
        self.paper = Paper(self.columns, self.modes, self.faults, self.stats, self.out.finish,
                           self._log, lines_per_sec, on_paper_end=self._flow)
        self.parser = EscPosParser(self.paper, self.modes, self.stats, buffer_size, self._log,
                                   in_band=self._in_band)
        # the line
        self.rx = bytearray()
        self.tx = bytearray()  # replies waiting for the line (or for replies())
        self._rt_tail = b""  # partial real-time command across reads
        self._asb_sent = None  # the last automatic status back sent
        self.xoff = False
        self._xoff_at = 0.0
        self._port = None  # printer_tty.TtyPort once started
        self._control = None
        self.fd = None
        self.path = None
        self.control_path = None
        self.set_fault(**faults)

    @property
    def receipts(self):
        """Documents of the receipts written so far (read under `lock`)."""
        return self.out.receipts

    @property
    def paper_out(self):
        return self.faults.paper_out

    # ---------------------------------------------------------------- public API
    def feed(self, data):
        """Bytes from the host, processed at once (no paper-speed limit without start())."""
        with self.lock:
            self.receive(bytes(data))
            self.process(None if self._port is None else time.monotonic())

    def replies(self):
        """Bytes the printer sent (status replies, XON/XOFF) since the last call.
        Only when not started on a tty (then they go to the line)."""
        with self.lock:
            out = bytes(self.tx)
            self.tx.clear()
            return out

    def set_fault(self, **faults):
        """Change faults (printer_faults.PrinterFaults.update: paper_out, paper_out_after,
        near_end, cover_open, offline, no_status, slow, cutter_error, dead, bad_status);
        arguments left at None keep their current value. paper_out=False loads paper (and
        clears paper_out_after unless given)."""
        with self.lock:
            cover_opened, powered_off, powered_on = self.faults.update(**faults)
            if cover_opened:
                self.paper.interrupt("cover_open")
            if powered_off:
                # Power lost: buffers and modes are gone; paper stays as it is.
                self.paper.interrupt("power_off")
                self._clear_buffers()
                self.modes.reset()
                self.xoff = False
            elif powered_on:
                self._send(bytes((XON,)))  # powered up, ready to receive
            self._flow()
        self._kick()

    def state(self):
        with self.lock:
            return {"online": self.online(), **self.faults.as_dict(),
                    "buffered": len(self.rx), "capacity": self.capacity, "xoff": self.xoff,
                    "receipts": len(self.receipts), "tty": self.path,
                    "stats": dict(self.stats)}

    def online(self):
        return self.faults.online()

    def status_byte(self, n):
        """Epson DLE EOT n reply (fixed bits: 0xx1xx10), or None for an unknown n."""
        return self.faults.status_byte(n)

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

    def inject(self, data):
        """Send raw bytes to the host (line noise, unexpected printer output)."""
        with self.lock:
            self._send(bytes(data))
        self._kick()

    def control(self, msg):
        """One control-channel command (a dict); returns the reply dict."""
        return handle(self, msg)

    def start(self, tty_path=None, baud=None, control=None):
        """Run on tty_path (opened raw), or on a new pty when None. Returns self."""
        port = TtyPort(self, tty_path, baud)
        self.fd, self.path = port.fd, port.path
        self.paper.next_ready = time.monotonic()
        # A real printer's UART keeps receiving (and sends XOFF at its threshold) while
        # the print engine works: load qrcode now and write receipt files (PNG rendering
        # takes ~20 ms) in another thread, so the receive path never stalls on them.
        try:
            import qrcode  # noqa: F401
        except ImportError:
            pass
        self.out.start()
        self._port = port
        port.start()
        if control:
            self._control = ControlServer(self, control)
            self.control_path = control
        return self

    def stop(self, flush=True):
        """Stop the thread; with flush, write a receipt left on the paper without a cut."""
        port = self._port
        if port is not None:
            port.stop()
            self._port = None
        else:
            self._kick()
        self.out.stop()
        if self._control:
            self._control.close()
            self._control = None
        if port is not None:
            port.close()
        if flush:
            with self.lock:
                # A line still in the line buffer was never printed: it is not on paper.
                self.paper.finish(None, "not_cut")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---------------------------------------------------------------- the line
    def receive(self, data):
        """Bytes from the host into the receive buffer (under `lock`)."""
        if self.faults.dead or not data:
            return
        self.stats["rx"] += len(data)
        keep = self._realtime(data)
        if keep:
            data = data[keep:]  # a DLE ENQ 2 in this chunk cleared what came before it
        room = self.capacity - len(self.rx)
        if len(data) > room and _realtime_only(data[max(room, 0):]):
            # Status polls into a full buffer (paper out): executed above, nothing of the
            # print stream is lost, so the host did nothing wrong.
            self.stats["realtime_dropped"] += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        if len(data) > room:
            lost = len(data) - max(room, 0)
            self.stats["overrun"] += lost
            self._log("receive buffer overrun: %d bytes dropped (host ignored XOFF)" % lost)
            self.paper.lost(lost)
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
                    self._reply(self.faults.dle_eot(arg), True)
                elif arg == 2:
                    # DLE ENQ 2: recover from a recoverable error, clear the buffers.
                    self.faults.cutter_error = False
                    self._clear_buffers()
                    keep = max(0, i + 3 - old)
                    self._log("DLE ENQ 2: error cleared, buffers cleared")
                i += 3
            else:
                i += 1
        return keep

    def _in_band(self, cmd, n):
        """GS r n ("r", a status reply) / GS I n ("I") / GS a n ("a") reached by the parser."""
        if cmd == "r":
            self._reply(self.faults.gs_r(n), True)
        elif cmd == "a":
            # Epson: the status is sent when ASB is enabled, then at every change.
            self.modes.asb = n & 0x0E  # online/offline, error, paper sensor (no drawer)
            self._asb_sent = None
            self._asb()
        else:
            self._reply(self.faults.gs_i(n), False)

    def _reply(self, data, status):
        if data is not None:
            if status:
                self.stats["status_replies"] += 1
            self._send(data)

    def _clear_buffers(self):
        self.rx.clear()
        self.parser.skip = 0
        self.paper.line = []

    def _send(self, data):
        if self.faults.dead:
            return
        self.tx += data
        self.stats["tx"] += len(data)

    def _asb(self):
        """Automatic status back: the 4 status bytes whenever they change, even while
        offline (a paper end mid-receipt is reported the moment it happens)."""
        if not self.modes.asb:
            return
        data = self.faults.asb()
        if data is not None and data != self._asb_sent:
            self._asb_sent = data
            self.stats["asb"] += 1
            self._send(data)

    def _flow(self):
        if self.faults.dead:
            return
        self._asb()
        used = len(self.rx)
        online = self.faults.online()
        if not self.xoff and (used >= self.capacity - self.xoff_margin or not online):
            self.xoff = True
            self._xoff_at = time.monotonic()
            self.stats["xoff"] += 1
            self._send(bytes((XOFF,)))
        elif self.xoff and online and used <= self.xon_level:
            self.xoff = False
            self.stats["xon"] += 1
            self._send(bytes((XON,)))

    def _kick(self):
        if self._port is not None:
            self._port.kick()
        else:
            with self.lock:
                self.process(None)

    # ---------------------------------------------------------------- printing
    def process(self, now):
        """Parse commands from the buffer while online; `now` None = no paper-speed limit.
        Returns True when it stopped only because of paper speed (more work is due)."""
        due = False
        while self.rx and self.faults.online():
            if now is not None and now < self.paper.next_ready:
                due = True
                break
            try:
                used = self.parser.step(self.rx)
            except Exception as e:  # an emulator bug must not take the bench down
                self._log("parser error %r at %s: byte skipped" % (e, bytes(self.rx[:8]).hex()))
                self.stats["unknown"] += 1
                used = 1
            if used == 0:
                break  # incomplete command: wait for more bytes
            del self.rx[:used]
        self._flow()
        return due


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
    ap.add_argument("--font", help="CJK font path for .png ('builtin': the bitmap font; "
                    "'none': no .png); default: a system CJK font, else the bitmap font")
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
    emu.out.warn_no_font()  # the bitmap font or no PNGs: said once, now
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.is_set():
        done.wait(0.5)
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
