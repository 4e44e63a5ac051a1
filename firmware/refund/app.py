# Terminal application: boot sequence, wiring, and the task supervisor.
# Tasks: console reader + service link, console output, watchdog feed, ECR intake, host
# sender, printer, housekeeping (and the settlement while one runs). A task that raises
# is logged and restarted; bad input never ends it.
import asyncio
import gc
import sys
import json
import binascii
from micropython import const
from refund import VERSION
from refund.log import log
from refund import log as _log
from refund import console, evlog
from refund.conout import ConOut

_WDT_MS = const(8000)
_FEED_MS = const(1000)
_HOUSEKEEP_MS = const(60000)  # compaction check and a status line
_LOG_FLUSH_MS = const(5000)  # event log: at most this much is lost to a power cut


async def _feed(wdt):
    while True:
        wdt.feed()
        await asyncio.sleep_ms(_FEED_MS)


async def _supervise(name, factory):
    # A task that raises is logged and restarted; the app loop never dies on it.
    while True:
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log("app", "task %s failed: %r; restarting" % (name, e), level="ERROR")
            await asyncio.sleep_ms(500)


def boot(board):
    _log.attach(ConOut(board.console_out()))  # before the first line: never blocks
    reason = board.reset_reason()
    log("boot", "refund firmware %s on board %s, reset reason %s" % (VERSION, board.NAME, reason))
    evlog.event("boot", reset=reason, fw=VERSION, board=board.NAME,
                uid=binascii.hexlify(board.unique_id()).decode())
    info = board.mount_flash(log)
    log("flash", "mounted %s %s: %d blocks of %d B, %d B free%s" % (
        info["mount"], info["fs"], info["blocks"], info["block_size"], info["free"],
        ", FORMATTED" if info["formatted"] else ""))
    evlog.attach(board.FLASH + "/ev", board.now)  # writes the boot record now
    uarts = {}
    for role in ("printer", "ecr"):
        u = board.uart(role)
        uarts[role] = u
        log("uart", "%s: %s" % (role, "open" if u is not None else "not wired"))
    return reason, info, uarts


def _config(board):
    """The validated config, or None (not provisioned / invalid: refunds are refused)."""
    from refund import config

    path = board.config_path()
    try:
        cfg = config.load(path, board.DEFAULTS)
    except config.ConfigError as e:
        for err in e.errors:
            log("config", err, level="ERROR")
        log("config", "terminal NOT PROVISIONED (%s): refunds refused" % path, level="ERROR")
        return None
    log("config", "loaded %s: %s" % (path, json.dumps(config.redacted(cfg))))
    evlog.limit(cfg["evlog_cap"], cfg["evlog_segments"])
    return cfg


class Terminal:
    """The refund terminal's parts, wired together."""

    def __init__(self, board, cfg, uarts):
        from refund.outbox import Outbox
        from refund.hostlink import Link
        from refund.sender import Sender
        from refund.mac import Mac
        from refund.staff import Staff
        from refund.intake import Intake
        from refund.recent import Recent, recent_cap

        # Loading modules leaves garbage between the code objects: collect, then make the
        # long-lived tables sized by the limits (index, retry schedule, recent list)
        # before recovery's short-lived objects fragment the heap.
        gc.collect()
        self.heap = {"modules": gc.mem_alloc()}  # what each part holds, for the boot log
        mark = self.heap["modules"]
        self.board = board
        self.cfg = cfg
        self.ob = Outbox(board.FLASH + "/ob", board.now, log, cfg.get("limits"))
        mark = self._held("outbox", mark)
        recent = Recent(recent_cap(self.ob.cfg))
        mark = self._held("recent", mark)
        host, port = cfg["host"].rsplit(":", 1)
        self.link = Link(host, int(port), Mac.from_hex(cfg["mac_key"]), cfg["terminal_id"], log)
        self.sender = Sender(self.ob, self.link, {"tid": cfg["terminal_id"], "mid": cfg["merchant_id"]},
                             cfg.get("host_link"), log, board.now, board.localtime,
                             cfg.get("heap_headroom", 0))
        mark = self._held("link", mark)
        r = self.ob.recover()
        mark = self._held("recovery", mark)
        log("outbox", "recovered: %d live, %d journal records, %d damaged" % (
            r["live"], r["journal"], r["damaged"]), level="ERROR" if r["damaged"] else "INFO")
        self.staff = Staff(cfg, board.FLASH + "/staff.lock", log, board.now)
        self.printer = None
        if uarts.get("printer") is not None:
            from refund.printer import Printer

            self.printer = Printer(uarts["printer"], self.ob, cfg, log, board.now,
                                   board.uart_baud("printer", cfg["printer_baud"]), cfg["printer"])
            self.printer.host_up = lambda: self.sender.host_up
        mark = self._held("staff+printer", mark)
        from refund.settlecmd import Gate

        self.settle = Gate(self._settlement, self.ob, cfg, log, board.now)  # refund.settle on demand
        self.intake = Intake(self.ob, self.staff, cfg, log, board.now, printer=self.printer,
                             host_up=lambda: self.sender.host_up, recent=recent, settle=self.settle)
        self._held("intake", mark)
        log("app", "heap held: " + " ".join("%s %d" % kv for kv in sorted(self.heap.items())))
        self.ecr = uarts.get("ecr")
        if self.ecr is not None:
            from refund.ecr import Parser

            self.ecr_parser = Parser()  # reused by every restart of the ECR task
        self.ob.on_change = self._changed

    def _settlement(self):
        from refund.settle import Settlement

        return Settlement(self.ob, self.link, self.sender, self.cfg, log, self.board.now, self.printer)

    def _held(self, part, mark):
        gc.collect()
        now = gc.mem_alloc()
        self.heap[part] = now - mark
        return now

    def _changed(self, seq, state):
        self.sender.wake()
        self.settle.wake()
        if self.printer is not None:
            self.printer.wake()

    def tasks(self):
        from refund import ecr

        out = [("sender", self.sender.run), ("housekeeping", self._housekeeping)]
        if self.printer is not None:
            out.append(("printer", self.printer.run))
        if self.ecr is not None:
            out.append(("ecr", lambda: ecr.serve(self.ecr, self.intake.handle, log,
                                                 parser=self.ecr_parser)))
        return out

    async def _housekeeping(self):
        n = 0
        while True:
            self.settle.tick()  # resume a settlement left on flash, or settle_at
            await asyncio.sleep_ms(_LOG_FLUSH_MS)
            evlog.flush()
            n += 1
            if n < _HOUSEKEEP_MS // _LOG_FLUSH_MS:
                continue
            n = 0
            try:
                self.ob.maybe_compact()
            except (OSError, MemoryError) as e:
                log("outbox", "compaction failed: %r" % (e,), level="ERROR")
            gc.collect()
            st = self.ob.stats()
            log("app", "outbox live %d pending %d journal %d heap free %d" % (
                st["live"], st["pending"], st["journal"], gc.mem_free()))

    def status(self):
        st = {"outbox": self.ob.stats(), "host": {"up": self.sender.host_up, "link": self.link.stats,
                                                 "sender": self.sender.stats},
              "settle": self.settle.status()}
        if self.printer is not None:
            st["printer"] = self.printer.status()
        return st


async def _main(board, reason, info, uarts):
    from refund.service import Service

    stop = asyncio.Event()
    wdt = board.wdt(_WDT_MS)
    svc = Service(board, _log.out, reason)
    names = ["console", "conout", "service", "wdt"]
    tasks = [
        asyncio.create_task(console.watch(board.console(), stop, svc)),
        asyncio.create_task(_supervise("conout", _log.out.run)),
        asyncio.create_task(_supervise("service", svc.run)),
        asyncio.create_task(_supervise("wdt", lambda: _feed(wdt))),
    ]
    term = None
    cfg = _config(board)
    if cfg is not None:
        try:
            term = Terminal(board, cfg, uarts)
        except Exception as e:  # noqa: a broken part must not take the console with it
            log("app", "terminal failed to start: %r" % (e,), level="ERROR")
            _print_exception(e)  # where, for the technician on the console
    svc.attach(term, cfg["tech_key"] if cfg else "")
    if term is not None:
        for name, factory in term.tasks():
            names.append(name)
            tasks.append(asyncio.create_task(_supervise(name, factory)))
    gc.collect()
    status = {
        "board": board.NAME,
        "reset": reason,
        "uid": binascii.hexlify(board.unique_id()).decode(),
        "flash": info,
        "uarts": {k: (v is not None) for k, v in uarts.items()},
        "tasks": names,
        "terminal": term is not None,
        "heap_free": gc.mem_free(),
    }
    if term is not None:
        status["outbox"] = term.ob.stats()
    _log.out.line("READY " + json.dumps(status))
    app.term = term
    await stop.wait()
    for t in tasks:
        t.cancel()
    board.wdt_service_mode(wdt)
    log("app", "stopped by Ctrl-C on the console; REPL follows")
    evlog.event("stopped", why="ctrl-c")
    evlog.flush()
    _log.out.drain()


def _print_exception(e):
    import io

    s = io.StringIO()
    sys.print_exception(e, s)
    for ln in s.getvalue().split("\n"):
        if ln:
            _log.out.line(ln)


class app:
    term = None  # the running Terminal, for a technician at the REPL


def main(board):
    reason, info, uarts = boot(board)
    asyncio.run(_main(board, reason, info, uarts))
