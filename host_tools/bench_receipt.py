"""Host approval -> first receipt byte at the printer (issue 14), for `make bench`
(host_tools/benchmarks.py, section `receipt`; rendered by bench_doc.receipt_md).

The real terminal application on the virtual board with the host simulator and the
printer emulator (host_tools.shop.Shop). Two taps on the same monotonic clock:
  * the host simulator's `_send`: when an approving 0210 (field 39 "00") is written to
    the terminal's socket, keyed by the rid of its field 62;
  * the printer emulator's `receive`: every chunk the tty thread reads, except chunks
    that are only real-time status polls (DLE EOT / DLE ENQ), which are no receipt.
Refunds go one at a time (the next after both copies of the previous receipt were cut), so the first
print-data chunk after an approval is that refund's receipt."""
import time

from host_tools import printer_emu
from host_tools.hostsim_msg import DECODE_ERRORS, decode
from host_tools.shop import Shop

N = 100
COPIES = 2  # receipt documents the terminal prints per approved refund


class _Taps:
    def __init__(self, shop):
        self.approved = {}  # rid -> monotonic time the approval was written
        self.chunks = []  # monotonic times of print-data chunks at the printer
        sim, pr = shop.sim, shop.printer
        send, receive = sim._send, pr.receive

        def tap_send(conn, data, close):
            t = time.monotonic()
            try:
                doc = decode(data[2:])  # after the 2-byte frame length
            except DECODE_ERRORS:
                doc = {}
            send(conn, data, close)
            if doc.get("t") == "0210" and doc.get("39") == "00":
                rid = doc.get("62", "").partition("rid=")[2].split(";")[0]
                self.approved.setdefault(rid, t)

        def tap_receive(data):
            if data and not printer_emu._realtime_only(bytes(data)):
                self.chunks.append(time.monotonic())
            return receive(data)

        sim._send = tap_send  # instance attributes: the server thread and tty thread call these
        pr.receive = tap_receive


def measure(tmp, n=N, log=None):
    import os

    d = os.path.join(tmp, "receipt")
    shop = Shop(d)
    ms, missing = [], []
    try:
        taps = _Taps(shop)
        for i in range(n + 2):  # 2 warm-up refunds, not counted
            r = shop.refund(1000 + i, orrn="LAT%09d" % i)
            rid = r.get("rid")
            end = time.time() + 20
            # Both copies (customer, merchant) cut before the next refund: its print data
            # must not be taken for this one's.
            while time.time() < end and len(shop.receipts_for(rid)) < COPIES:
                time.sleep(0.02)
            if i < 2:
                continue
            t_ok = taps.approved.get(rid)
            first = [t for t in taps.chunks if t_ok is not None and t >= t_ok]
            if t_ok is None or not first or len(shop.receipts_for(rid)) < COPIES:
                missing.append("%s (%s)" % (rid, "no approval" if t_ok is None else
                                            "no print data" if not first else "no receipt cut"))
                continue
            ms.append(round((first[0] - t_ok) * 1000, 2))
            if log and i % 20 == 0:
                log("receipt %d: %.1f ms" % (i, ms[-1]))
    finally:
        shop.close()
    from host_tools import vboard

    return {"ms": ms, "missing": missing, "printer_baud": shop.printer_baud,
            "heap": shop.heap or vboard.TERMINAL_HEAP}
