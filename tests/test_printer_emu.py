"""The printer emulator: ESC/POS parsing (cross-checked with python-escpos), Epson
status bytes, XON/XOFF around its finite buffer, faults at start and while running."""
import json
import os
import random
import re
import subprocess
import sys
import time

import pytest
import serial
from escpos.printer import Dummy

from host_tools import REPO
from host_tools.printer_emu import (BUILTIN, NO_FONT_NOTE, NO_PNG_NOTE, PrinterEmulator, XOFF, XON,
                                    control_request, find_cjk_font)

STATUS_RE = re.compile(r"^0..1..10$")


def emu(tmp_path, **kw):
    kw.setdefault("font", "none")
    kw.setdefault("log", lambda msg: None)
    return PrinterEmulator(str(tmp_path / "out"), **kw)


def texts(rec):
    return [ln["text"] for ln in rec["lines"] if ln["kind"] == "text"]


def dummy_receipt(title, body, qr=None, barcode=None):
    p = Dummy()
    p.set(align="center", bold=True, double_width=True, double_height=True)
    p.textln(title)
    p.set(normal_textsize=True, bold=False, align="left")
    for line in body:
        p.textln(line)
    if qr:
        p.qr(qr, native=True, size=4)
    if barcode:
        p.barcode(barcode, "EAN13")
    p.cut()
    return p.output


# ---------------------------------------------------------------- parsing
def test_python_escpos_streams_parse_to_text_qr_and_barcode(tmp_path):
    e = emu(tmp_path)
    e.feed(dummy_receipt("REFUND", ["Amount 12.34", "RRN 123456789012"],
                         qr="rid=R1;rrn=123456789012", barcode="123456789012"))
    e.feed(dummy_receipt("SECOND", ["only text"]))
    assert len(e.receipts) == 2
    r1, r2 = e.receipts
    t = texts(r1)
    assert t[0] == "REFUND"
    first = r1["lines"][0]
    assert first["bold"] and first["align"] == "center" and first["size"] == [2, 2]
    assert r1["lines"][1]["text"] == "Amount 12.34" and not r1["lines"][1]["bold"]
    assert r1["lines"][1]["align"] == "left" and r1["lines"][1]["size"] == [1, 1]
    assert "RRN 123456789012" in t
    assert [q["data"] for q in r1["qr"]] == ["rid=R1;rrn=123456789012"]
    assert r1["qr"][0]["size"] == 4 and r1["qr"][0]["model"] == 2
    assert r1["barcodes"] == [{"type": "EAN13", "data": "123456789012", "partial": False}]
    assert r1["cut"] == "full" and r1["cut_clean"] and r1["complete"]
    assert texts(r2)[:2] == ["SECOND", "only text"] and r2["qr"] == []
    for r in (r1, r2):
        with open(r["files"]["json"], encoding="utf-8") as f:
            assert json.load(f)["lines"][0]["text"] == texts(r)[0]
        with open(r["files"]["txt"], encoding="utf-8") as f:
            txt = f.read()
        assert texts(r)[0] in txt and "[CUT full]" in txt
    assert "[QR rid=R1;rrn=123456789012]" in open(r1["files"]["txt"], encoding="utf-8").read()


def test_python_escpos_code_pages_decode(tmp_path):
    p = Dummy()
    p.textln("Café Ñandú 25°C")
    p.cut()
    e = emu(tmp_path)
    e.feed(p.output)
    assert texts(e.receipts[0])[0] == "Café Ñandú 25°C"


def test_gb18030_double_byte_mode_and_width(tmp_path):
    e = emu(tmp_path, width=80)
    e.feed(b"\x1b@\x1c&" + "退货 REFUND".encode("gb18030") + b"\n\x1c." + b"\x1dV\x01")
    r = e.receipts[0]
    assert r["columns"] == 48 and r["cut"] == "partial"
    assert r["lines"][0]["text"] == "退货 REFUND" and r["lines"][0]["cols"] == 11


def test_long_line_wraps_at_the_paper_edge_visibly(tmp_path):
    e = emu(tmp_path)
    e.feed(b"x" * 40 + b"\n\x1dV\x00")
    lines = e.receipts[0]["lines"]
    assert lines[0]["text"] == "x" * 32 and lines[0]["wrapped"]
    assert lines[1]["text"] == "x" * 8 and not lines[1]["wrapped"]


def test_garbage_is_skipped_and_never_crashes(tmp_path):
    rnd = random.Random(5)
    e = emu(tmp_path)
    for _ in range(20):
        e.feed(bytes(rnd.randrange(256) for _ in range(500)))
    assert e.stats["unknown"] > 0
    # Noise can leave the printer inside a long command (as a real one would be);
    # DLE ENQ 2 (recover, clear buffers) brings it back.
    e.feed(b"\x10\x05\x02\x1b@after garbage\n\x1dV\x00")
    assert texts(e.receipts[-1])[-1] == "after garbage"


# ---------------------------------------------------------------- status
FAULTS = [
    {}, {"paper_out": True}, {"near_end": True}, {"cover_open": True}, {"offline": True},
    {"cutter_error": True}, {"near_end": True, "cover_open": True, "paper_out": True},
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: "+".join(sorted(f)) or "none")
def test_dle_eot_replies_have_the_fixed_bits_for_every_n_and_fault(tmp_path, fault):
    e = emu(tmp_path)
    e.set_fault(**fault)
    e.replies()  # drop the XOFF an offline printer sends
    got = {}
    for n in (1, 2, 3, 4):
        e.feed(bytes((0x10, 0x04, n)))
        r = e.replies()
        assert len(r) == 1, (n, r)
        assert STATUS_RE.match(format(r[0], "08b")), (n, hex(r[0]))
        got[n] = r[0]
    offline = bool(fault) and fault != {"near_end": True}
    assert bool(got[1] & 0x08) == offline
    assert bool(got[2] & 0x04) == bool(fault.get("cover_open"))
    assert bool(got[2] & 0x20) == bool(fault.get("paper_out"))
    assert bool(got[2] & 0x40) == bool(fault.get("cutter_error"))
    assert bool(got[3] & 0x08) == bool(fault.get("cutter_error"))
    assert (got[4] & 0x0C == 0x0C) == bool(fault.get("near_end"))
    assert (got[4] & 0x60 == 0x60) == bool(fault.get("paper_out"))


def test_no_status_fault_and_dead_printer_answer_nothing(tmp_path):
    e = emu(tmp_path, no_status=True)
    e.feed(b"\x10\x04\x01\x10\x04\x04\x1dr\x01")
    assert e.replies() == b""
    e.set_fault(no_status=False)
    e.feed(b"\x10\x04\x01")
    assert e.replies() == b"\x12"
    e.set_fault(dead=True)
    e.feed(b"\x10\x04\x01hello\n\x1dV\x00")
    assert e.replies() == b"" and e.receipts == []


def test_realtime_status_split_across_reads_and_answered_while_offline_and_full(tmp_path):
    e = emu(tmp_path, buffer_size=64, offline=True)
    assert e.replies() == bytes((XOFF,))
    e.feed(b"y" * 100)  # buffer full: the host ignored XOFF
    assert e.stats["overrun"] == 36
    e.feed(b"\x10")
    e.feed(b"\x04")
    e.feed(b"\x01")
    assert e.replies() == b"\x1a"  # 0x12 | offline
    e.set_fault(offline=False)
    assert XON in e.replies()


def test_status_polls_into_a_full_buffer_are_answered_and_lose_no_print_data(tmp_path):
    # Paper out with the buffer full: the host keeps polling DLE EOT as it must. Those
    # are executed on reception; they are not print data the host pushed past XOFF.
    e = emu(tmp_path, buffer_size=64, paper_out=True)
    e.replies()
    e.feed(b"y" * 64)
    assert e.stats["overrun"] == 0
    e.feed(b"\x10\x04\x04\x10\x04\x01")
    assert len(e.replies()) == 2
    assert e.stats["overrun"] == 0 and e.stats["realtime_dropped"] == 6
    e.feed(b"\x10\x04\x04z")  # a print byte with it: that is an overrun
    assert e.stats["overrun"] == 4


def test_gs_r_answers_after_the_print_job_with_epson_layout(tmp_path):
    e = emu(tmp_path, near_end=True)
    e.feed(b"line\n\x1dr\x01")
    r = e.replies()
    assert r == b"\x03" and r[0] & 0x90 == 0  # GS r layout: bits 4 and 7 fixed 0


# ---------------------------------------------------------------- flow control
def test_offline_sends_xoff_and_recovery_sends_xon(tmp_path):
    e = emu(tmp_path)
    e.set_fault(offline=True)
    assert e.replies() == bytes((XOFF,))
    e.feed(b"queued while offline\n")
    assert e.receipts == [] and e.state()["buffered"] > 0
    e.set_fault(offline=False)
    assert e.replies() == bytes((XON,))
    e.feed(b"\x1dV\x00")
    assert texts(e.receipts[0]) == ["queued while offline"]


def test_xoff_when_the_buffer_fills_and_xon_when_drained(tmp_path):
    e = emu(tmp_path, buffer_size=512, lines_per_sec=100).start()
    try:
        host = serial.serial_for_url(e.path, timeout=0.05)
        host.write(b"".join(b"line %03d ........................\n" % i for i in range(40)))  # ~1400 B
        host.flush()
        seen = b""
        end = time.monotonic() + 5
        while XOFF not in seen and time.monotonic() < end:
            seen += host.read(16)
        assert XOFF in seen, "no XOFF with a full buffer"
        while XON not in seen and time.monotonic() < end:
            seen += host.read(16)
        assert XON in seen, "no XON after the buffer drained"
        assert seen.index(XON) > seen.index(XOFF)
        assert e.stats["overrun"] > 0  # this host ignored XOFF: bytes were lost
        host.close()
    finally:
        e.stop()


def _write_honouring_xoff(host, data, chunk=32, timeout=20):
    paused = False
    end = time.monotonic() + timeout
    i = 0
    while i < len(data):
        assert time.monotonic() < end, "writer stalled"
        got = host.read(host.in_waiting or 0) if host.in_waiting else b""
        for c in got:
            if c == XOFF:
                paused = True
            elif c == XON:
                paused = False
        if paused:
            time.sleep(0.005)
            continue
        host.write(data[i:i + chunk])
        host.flush()
        i += chunk
        time.sleep(chunk / 11520.0)  # the wire's pace at 115200 baud
    return paused


def test_host_honouring_xon_xoff_loses_nothing(tmp_path):
    e = emu(tmp_path, buffer_size=256, lines_per_sec=150).start()
    try:
        host = serial.serial_for_url(e.path, timeout=0.05)
        body = ["row %02d %s" % (i, "=" * 20) for i in range(60)]
        _write_honouring_xoff(host, dummy_receipt("FLOW", body))
        e.wait(lambda s: s.receipts, 10)
        host.close()
    finally:
        e.stop()
    r = e.receipts[0]
    assert e.stats["xoff"] >= 1 and e.stats["overrun"] == 0
    assert texts(r)[1:61] == body and r["cut_clean"]


# ---------------------------------------------------------------- faults
def test_paper_out_mid_line_leaves_a_partial_receipt_not_cut_cleanly(tmp_path):
    e = emu(tmp_path, paper_out_after=3)
    e.feed(b"\x1b@" + b"".join(b"line %d ABCDEFGHIJ\n" % i for i in range(6)) + b"\x1dV\x00")
    assert len(e.receipts) == 1
    r = e.receipts[0]
    t = texts(r)
    assert t[:3] == ["line 0 ABCDEFGHIJ", "line 1 ABCDEFGHIJ", "line 2 ABCDEFGHIJ"]
    assert r["lines"][3]["partial"] and t[3] == "line 3 A"  # stopped in the middle (half the line)
    assert r["incomplete"] == "paper_end" and r["partial"]
    assert r["cut"] is None and not r["cut_clean"] and not r["complete"]
    assert "(paper end)" in open(r["files"]["txt"], encoding="utf-8").read()
    e.replies()
    e.feed(b"\x10\x04\x04\x10\x04\x02\x10\x04\x01")
    assert e.replies() == bytes((0x72, 0x32, 0x1A))
    # Paper loaded: the rest of the buffer prints on new paper, marked as a continuation.
    e.set_fault(paper_out=False)
    assert len(e.receipts) == 2
    r2 = e.receipts[1]
    assert texts(r2)[:2] == ["line 4 ABCDEFGHIJ", "line 5 ABCDEFGHIJ"]
    assert r2["continued"] and r2["cut"] == "full" and not r2["cut_clean"]


def test_cover_opened_mid_receipt_while_printing(tmp_path):
    e = emu(tmp_path, lines_per_sec=100).start()
    try:
        host = serial.serial_for_url(e.path, timeout=0.5)
        body = ["item %02d" % i for i in range(40)]
        host.write(dummy_receipt("COVER", body))
        e.wait(lambda s: s.stats["lines_printed"] >= 8, 5)
        e.set_fault(cover_open=True)
        stopped_at = e.stats["lines_printed"]
        host.write(b"\x10\x04\x02")
        reply = b""
        end = time.monotonic() + 2
        while not any(STATUS_RE.match(format(c, "08b")) for c in reply) and time.monotonic() < end:
            reply += host.read(1)
        status = [c for c in reply if STATUS_RE.match(format(c, "08b"))][-1]
        assert status & 0x04, "cover-open bit"
        time.sleep(0.2)
        assert e.stats["lines_printed"] == stopped_at, "printed with the cover open"
        e.set_fault(cover_open=False)
        e.wait(lambda s: s.receipts, 5)
        host.close()
    finally:
        e.stop()
    r = e.receipts[0]
    assert texts(r)[1:41] == body  # nothing lost, but the receipt was interrupted
    assert r["interruptions"][0]["reason"] == "cover_open"
    assert 1 <= r["interruptions"][0]["after_line"] < 40
    assert r["cut"] == "full" and not r["complete"] and not r["cut_clean"]


def test_slow_paper_fault_slows_printing(tmp_path):
    e = emu(tmp_path, lines_per_sec=200).start()
    try:
        host = serial.serial_for_url(e.path, timeout=0.5)
        t0 = time.monotonic()
        host.write(b"a\n" * 20 + b"\x1dV\x00")
        e.wait(lambda s: len(s.receipts) == 1, 5)
        fast = time.monotonic() - t0
        e.set_fault(slow=5)
        t0 = time.monotonic()
        host.write(b"b\n" * 20 + b"\x1dV\x00")
        e.wait(lambda s: len(s.receipts) == 2, 10)
        slow = time.monotonic() - t0
        host.close()
    finally:
        e.stop()
    assert slow > 0.4 and slow > 2 * fast, (fast, slow)


def test_control_socket_changes_faults_while_running(tmp_path):
    sock = str(tmp_path / "ctl.sock")
    e = emu(tmp_path).start(control=sock)
    try:
        host = serial.serial_for_url(e.path, timeout=1)
        rep = control_request(sock, {"cmd": "fault", "offline": True})
        assert rep["ok"] and rep["state"]["offline"] and not rep["state"]["online"]
        host.write(b"\x10\x04\x01")
        got = host.read(2)
        assert got[0] == XOFF and got[1] == 0x1A
        rep = control_request(sock, {"cmd": "fault", "offline": False, "paper_out_after": 1})
        assert rep["state"]["online"] and rep["state"]["paper_left"] == 1
        host.write(b"one\ntwo\n")
        e.wait(lambda s: s.receipts, 5)
        assert control_request(sock, {"cmd": "receipts"})["receipts"][0]["incomplete"] == "paper_end"
        assert not control_request(sock, {"cmd": "nope"})["ok"]
        host.close()
    finally:
        e.stop()


# ---------------------------------------------------------------- CLI and PNG
def test_cli_pty_prints_its_path_and_writes_receipts(tmp_path):
    # --font naming no file: the bitmap font, said once; the .png is written all the same
    out = tmp_path / "cli"
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.printer_emu", "--pty", "--out",
                             str(out), "--width", "80", "--font", str(tmp_path / "nowhere.ttc"),
                             "--lines-per-sec", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["width"] == 80 and info["font"] == BUILTIN
        host = serial.serial_for_url(info["tty"], timeout=1)
        host.write(dummy_receipt("CLI", ["hello"], qr="rid=R9;rrn=9"))
        host.write(dummy_receipt("CLI2", ["again"]))
        end = time.monotonic() + 5
        while not (out / "receipt-0002.json").exists() and time.monotonic() < end:
            time.sleep(0.02)
        host.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    rec = json.loads((out / "receipt-0001.json").read_text(encoding="utf-8"))
    assert texts(rec)[:2] == ["CLI", "hello"] and rec["qr"][0]["data"] == "rid=R9;rrn=9"
    assert rec["columns"] == 48
    assert rec["files"]["png"] == str(out / "receipt-0001.png") and rec["png_note"] == NO_FONT_NOTE
    assert (out / "receipt-0001.png").exists() and (out / "receipt-0002.png").exists()
    assert err.decode().count("no system CJK font") == 1, err  # said once, not per receipt
    assert "built-in bitmap font" in err.decode()


def test_font_none_writes_no_png_and_says_so(tmp_path):
    notes = []
    e = PrinterEmulator(str(tmp_path / "o"), font="none", log=notes.append)
    e.feed(b"\x1c&" + "退货".encode("gb18030") + b"\n\x1dV\x00a\n\x1dV\x00")
    assert notes == [NO_PNG_NOTE]
    for r in e.receipts:
        assert r["files"]["png"] is None and r["png_note"] == NO_PNG_NOTE
        assert os.path.exists(r["files"]["txt"]) and os.path.exists(r["files"]["json"])
    assert not list((tmp_path / "o").glob("*.png"))


def test_png_always_rendered_system_font_or_the_bitmap_font(tmp_path, monkeypatch):
    from PIL import Image

    font = find_cjk_font()
    e = PrinterEmulator(str(tmp_path / "o"), width=80, log=lambda m: None)
    e.feed(dummy_receipt("PNG", ["line"], qr="rid=R1;rrn=2"))
    r = e.receipts[0]
    assert e.font_path == (font or BUILTIN)
    with Image.open(r["files"]["png"]) as im:
        assert im.width == 576 and im.height > 100
        assert im.convert("L").getextrema()[0] == 0  # something black was printed
    # REFUND_PRINTER_FONT pointing nowhere (or "builtin"): the bitmap font
    for env in (str(tmp_path / "missing.ttf"), "builtin"):
        monkeypatch.setenv("REFUND_PRINTER_FONT", env)
        notes = []
        e = PrinterEmulator(str(tmp_path / ("env%d" % len(env))), width=58, log=notes.append)
        e.feed(dummy_receipt("PNG", ["line"]))
        assert e.font_path == BUILTIN and notes == [NO_FONT_NOTE]
        with Image.open(e.receipts[0]["files"]["png"]) as im:
            assert im.width == 384 and im.convert("L").getextrema()[0] == 0
