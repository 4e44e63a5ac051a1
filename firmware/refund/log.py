# Log lines "<uptime_ms> <LEVEL> <tag>: <msg>" for the console. Once the app has
# attached its non-blocking console writer (refund.conout) a line never waits for the
# line: a console nobody reads costs dropped lines, counted. WARN and ERROR lines are also
# events in the flash event log (refund.evlog), which is what a technician pulls; the
# structured events there replace a free-text file log.
# Secrets never reach this module (PINs and keys are never logged).
import time
from refund import evlog

_t0 = time.ticks_ms()
counts = {"ERROR": 0, "WARN": 0}
out = None  # refund.conout.ConOut once attached; print() before (tests, early boot)


def log(tag, msg, level="INFO", ev=True):
    """ev=False: the caller records a structured event of its own for this line."""
    if level in counts:
        counts[level] += 1
    if ev and level in counts:
        evlog.event("error" if level == "ERROR" else "warn", level=level[0], tag=tag, msg=msg)
    line = "%d %s %s: %s" % (time.ticks_diff(time.ticks_ms(), _t0), level, tag, msg)
    if out is None:
        print(line)
    else:
        out.line(line)


def attach(conout):
    global out
    out = conout
