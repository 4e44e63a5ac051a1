"""`refundctl logs --via mpremote`: the application is down (boot loop, crash), so copy
the event log segments over the raw REPL with `mpremote fs cp` and decode them with the
same code as the service pull (host_tools/evdecode.py)."""
import os
import shutil
import subprocess
import sys
import tempfile

from host_tools import evdecode


class MpremoteError(Exception):
    pass


def mpremote():
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return exe if os.path.exists(exe) else (shutil.which("mpremote") or "mpremote")


def _run(port, args, timeout):
    try:
        r = subprocess.run([mpremote(), "connect", port, "resume"] + list(args),
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MpremoteError("mpremote on %s: no answer within %d s" % (port, timeout)) from None
    except OSError as e:
        raise MpremoteError("cannot run mpremote: %s" % e) from None
    if r.returncode != 0:
        why = (r.stderr.strip() or r.stdout.strip() or "exit %d" % r.returncode).splitlines()[-1]
        raise MpremoteError("mpremote on %s: %s" % (port, why))
    return r.stdout


def copy_segments(port, ev_dir, dest, timeout=600):
    """Copy every segment file of ev_dir on the board into dest; returns their names."""
    listing = _run(port, ["fs", "ls", ":" + ev_dir], timeout=60)
    names = []
    for line in listing.splitlines():
        w = line.split()
        if w and len(w[-1]) == 8 and w[-1].isdigit():
            names.append(w[-1])
    if names:
        _run(port, ["fs", "cp"] + [":%s/%s" % (ev_dir.rstrip("/"), n) for n in names] + [dest + "/"],
             timeout=timeout)
    return names


def pull_via_mpremote(port, ev_dir, since, write, keep=None):
    """Records with seq >= since -> write(record), in order. keep: a directory to leave
    the raw segment copies in (else a temporary one, removed)."""
    from host_tools.svcctl import EXIT_NO_REPLY, Fail

    tmp = keep or tempfile.mkdtemp(prefix="refund-ev-")
    try:
        try:
            names = copy_segments(port, ev_dir, tmp)
        except MpremoteError as e:
            raise Fail(str(e), EXIT_NO_REPLY, "mpremote") from None
        st = evdecode.new_stats()
        recs = evdecode.decode_dir(tmp, st)
        n = 0
        for r in recs:
            if r["seq"] >= since:
                write(r)
                n += 1
        first = recs[0]["seq"] if recs else since
        head = recs[-1]["seq"] + 1 if recs else since
        return {"records": n, "segments": len(names), "first": first, "head": head,
                "next": max(head, since), "lost": max(0, first - since) if since else 0,
                "bad_crc": st["bad_crc"], "torn": st["torn"], "bytes": sum(
                    os.path.getsize(os.path.join(tmp, x)) for x in names)}
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
