# Console log. Lines are "<uptime_ms> <LEVEL> <tag>: <msg>" so a technician's
# tools can grep them; secrets never reach this module (callers mask PANs).
import time

_t0 = time.ticks_ms()
counts = {"ERROR": 0, "WARN": 0}


def log(tag, msg, level="INFO"):
    if level in counts:
        counts[level] += 1
    print("%d %s %s: %s" % (time.ticks_diff(time.ticks_ms(), _t0), level, tag, msg))
