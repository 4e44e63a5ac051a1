"""A console that is open but never read (a hung serial monitor, a cable to a sleeping
laptop) must not slow or stop refunds: the terminal's console output is written without
blocking and dropped, counted, when the line is full (docs/service-link.md)."""
import os
import time

from host_tools.nullmodem import NullModem
from host_tools.shop import Shop
from host_tools.svclink import Client, frame
from host_tools.vboard import Board


class UnreadConsoleShop(Shop):
    """The shop, with the terminal's console on a tty the test holds open and never reads."""

    def __init__(self, workdir, console):
        self.console_dev = console
        super().__init__(workdir)

    def boot(self):
        args = ["--host", "127.0.0.1:%d" % self.sim.port, "--printer", self.nm.a,
                "--console", self.console_dev]
        self.board = Board(self.flash, args=args, cmd="terminal")
        self.board.ends["console"] = self.console_dev
        end = time.time() + 30
        while time.time() < end:  # ready when the ECR answers (the console is not read)
            if self.ctl("status", timeout=1, tries=1)["_rc"] == 0:
                return
        raise AssertionError("terminal never answered STATUS on the ECR")


def test_unread_console_never_stops_refunds(tmp_path):
    cable = NullModem().start()
    far = os.open(cable.b, os.O_RDWR | os.O_NOCTTY)  # held open, never read
    shop = UnreadConsoleShop(tmp_path, cable.a)
    try:
        rids = []
        for boot in range(3):
            # Ask for the whole log again and again on the unread line: megabytes of
            # replies that cannot go anywhere, on top of the boot and refund lines.
            for i in range(30):
                os.write(far, frame(b'{"id": %d, "cmd": "logs", "since": 0}' % (boot * 100 + i + 1)))
            for k in range(4):
                r = shop.refund(1000 + boot * 10 + k, orrn="UNREAD%02d%04d" % (boot, k), timeout=3, tries=1)
                assert r["_rc"] == 0 and r["state"] == "queued", (boot, k, r)
                rids.append(r["rid"])
            for rid in rids[-4:]:
                shop.wait_state(rid, ("printed",), timeout=30)
            shop.power_cut()
            shop.boot()
        assert shop.ctl("status", timeout=3, tries=1)["_rc"] == 0
        # Now a technician finally reads the console: the backlog drains, the service
        # link answers, and the terminal says what it had to drop.
        os.close(far)
        far = None
        c = Client(cable.b, timeout=5, tries=6)
        m = c.call("metrics")["counters"]
        c.close()
        assert m["console_dropped"] + m["console_cut"] + m["svc_abandoned"] > 0, m
        for rid in rids:
            assert shop.query(rid)["state"] == "printed"
    finally:
        if far is not None:
            os.close(far)
        shop.close()
        cable.close()
