# Fuzz worker for tests/test_fuzz_config.py: one config file path per stdin line; per line
# one JSON answer: {"ok": true} (loaded, and the loaded dict validates again),
# {"errors": [...]} (ConfigError) or {"exception": "..."} (anything else: a violation).
import sys
import json
import board
from refund import config

while True:
    line = sys.stdin.readline()
    if not line:
        break
    path = line.strip()
    try:
        c = config.load(path, board.DEFAULTS)
        again = config.validate(c)
        res = {"ok": True, "again": again}
    except config.ConfigError as e:
        res = {"errors": e.errors, "msg": str(e)}
    except Exception as e:
        res = {"exception": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(res))
