# Log lines "<uptime_ms> <LEVEL> <tag>: <msg>" on the console, and, once the app has
# attached a directory on flash, the same lines (prefixed with UTC seconds) in a rotating
# file log a technician can pull after a reboot: <dir>/log.0 (newest) .. log.<keep-1>.
# Secrets never reach this module (callers mask PANs; PINs and keys are never logged).
#
# Lines are buffered in RAM and appended by flush() (the app's housekeeping calls it every
# few seconds, and log() when the buffer is full): one littlefs append per line would
# rewrite the file's tail block each time. A power cut loses at most the unflushed lines.
import os
import time
from micropython import const

_t0 = time.ticks_ms()
counts = {"ERROR": 0, "WARN": 0, "lost": 0}

_EARLY = const(48)  # lines kept before attach() (boot messages)
_dir = None
_clock = None
_max = 0
_keep = 0
_cap = 0
_size = 0  # bytes in log.0
_lines = []
_held = 0  # bytes in _lines


def log(tag, msg, level="INFO"):
    global _held
    if level in counts:
        counts[level] += 1
    line = "%d %s %s: %s" % (time.ticks_diff(time.ticks_ms(), _t0), level, tag, msg)
    print(line)
    if _dir is None:
        if len(_lines) < _EARLY:
            _lines.append(line)  # stamped with the clock at attach()
        return
    _lines.append("%d %s" % (_clock(), line))
    _held += len(_lines[-1]) + 1
    if _held >= _cap:
        flush()


def attach(path, clock, max_bytes=16384, keep=4, buffer=2048):
    """Keep log lines in files under path (created if missing); clock() -> UTC s."""
    global _dir, _clock, _max, _keep, _cap, _size, _held
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists
    _dir, _clock, _max, _keep, _cap = path, clock, max_bytes, max(keep, 1), buffer
    try:
        _size = os.stat(path + "/log.0")[6]
    except OSError:
        _size = 0
    now = clock()
    _lines[:] = ["%d %s" % (now, ln) for ln in _lines]
    _held = 0
    for ln in _lines:
        _held += len(ln) + 1
    flush()


def flush():
    """Append the buffered lines to log.0, rotating first when it would outgrow max_bytes.
    Never raises: a full or failing flash costs log lines (counted), nothing else."""
    global _size, _held, _lines
    if _dir is None or not _lines:
        return
    lines, n = _lines, _held
    _lines, _held = [], 0
    try:
        if _size and _size + n > _max:
            _rotate()
        with open(_dir + "/log.0", "a") as f:
            for ln in lines:
                f.write(ln)
                f.write("\n")
        _size += n
    except OSError:
        counts["lost"] += len(lines)


def _rotate():
    global _size
    p = _dir + "/log."
    try:
        os.remove(p + str(_keep - 1))
    except OSError:
        pass
    for i in range(_keep - 2, -1, -1):
        try:
            os.rename(p + str(i), p + str(i + 1))  # atomic on littlefs
        except OSError:
            pass
    _size = 0
