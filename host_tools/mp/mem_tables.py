# Heap of the frozen firmware on a board: all modules imported, then the tables the
# terminal makes at boot for its limits (outbox index, recent list, retry schedule), for
# max_live 100 and 500: the difference / 400 is the heap per live entry. Prints JSON.
import gc
import json

gc.collect()
base = gc.mem_alloc()
import asyncio  # noqa: F401
for m in ("config", "staff", "record", "index", "outbox", "sched", "iso8583", "hostmsg", "mac", "hostlink",
          "sender", "recent", "ecr", "intake", "gbk", "gb18030_tab", "escpos", "receipt",
          "printer", "evlog", "evread", "conout", "log", "svcframe", "service", "console", "app"):
    __import__("refund." + m)
gc.collect()
mods = gc.mem_alloc() - base
from refund.index import Index
from refund.recent import Recent, recent_cap
from refund.sched import Sched

tables = {}
for live in (100, 500):
    gc.collect()
    a = gc.mem_alloc()
    t = (Index(live + 32), Recent(recent_cap({"max_live": live})), Sched(live))
    gc.collect()
    tables[live] = gc.mem_alloc() - a
    del t
print(json.dumps({"heap": gc.mem_free() + gc.mem_alloc(), "modules": mods, "tables_100": tables[100],
                  "tables_500": tables[500], "per_live": (tables[500] - tables[100]) / 400}))
