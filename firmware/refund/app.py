# Terminal application: boot sequence and task supervisor.
import asyncio
import gc
import json
import binascii
from micropython import const
from refund import VERSION
from refund.log import log
from refund import console

_WDT_MS = const(8000)
_FEED_MS = const(1000)


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
    reason = board.reset_reason()
    log("boot", "refund firmware %s on board %s, reset reason %s" % (VERSION, board.NAME, reason))
    info = board.mount_flash(log)
    log("flash", "mounted %s %s: %d blocks of %d B, %d B free%s" % (
        info["mount"], info["fs"], info["blocks"], info["block_size"], info["free"],
        ", FORMATTED" if info["formatted"] else ""))
    uarts = {}
    for role in ("printer", "ecr"):
        u = board.uart(role)
        uarts[role] = u
        log("uart", "%s: %s" % (role, "open" if u is not None else "not wired"))
    return reason, info, uarts


async def _main(board, reason, info, uarts):
    stop = asyncio.Event()
    wdt = board.wdt(_WDT_MS)
    tasks = [
        asyncio.create_task(console.watch(board.console(), stop)),
        asyncio.create_task(_supervise("wdt", lambda: _feed(wdt))),
    ]
    gc.collect()
    status = {
        "board": board.NAME,
        "reset": reason,
        "uid": binascii.hexlify(board.unique_id()).decode(),
        "flash": info,
        "uarts": {k: (v is not None) for k, v in uarts.items()},
        "tasks": ["console", "wdt"],
        "heap_free": gc.mem_free(),
    }
    print("READY " + json.dumps(status))
    await stop.wait()
    for t in tasks:
        t.cancel()
    board.wdt_service_mode(wdt)
    log("app", "stopped by Ctrl-C on the console; REPL follows")


def main(board):
    reason, info, uarts = boot(board)
    asyncio.run(_main(board, reason, info, uarts))
