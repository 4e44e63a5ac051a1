# Heap taken by each firmware module once imported (bytecode, constants, module-level
# buffers), after gc.collect(): run on the mpy-cross output, as a board loads it.
import gc
import json

gc.collect()
base = gc.mem_alloc()
import asyncio  # noqa: F401  (frozen into the interpreter; its objects are on the heap)

gc.collect()
prev = gc.mem_alloc()
out = {"asyncio": prev - base}
for m in ("log", "record", "index", "outbox", "iso8583", "hostmsg", "mac", "hostlink", "sender", "config",
          "staff", "ecr", "recent", "intake", "escpos", "gbk", "receipt", "printer", "app"):
    __import__("refund." + m)
    gc.collect()
    n = gc.mem_alloc()
    out[m] = n - prev
    prev = n
print(json.dumps(out))
