"""The virtual board's flash: counters, and power cuts at every program/erase.

Each cut runs the writer on the real interpreter with the cut armed in the block
device, then a *fresh* interpreter mounts the image and checks it.
"""
import os
import shutil

import pytest

WRITER = r"""
import os, board
from refund.log import log
board.mount_flash(log)
def step(n):
    print("STEP", n, board.flash_dev().ops())
try:
    with open("/flash/a.txt", "w") as f:
        f.write("v1" * 300)
    step(1)
    with open("/flash/a.tmp", "w") as f:
        f.write("v2" * 300)
    os.rename("/flash/a.tmp", "/flash/a.txt")
    step(2)
    with open("/flash/log", "a") as f:
        for i in range(3):
            f.write("line%d\n" % i)
            f.flush()
            step(3 + i)
    os.mkdir("/flash/d")
    step(6)
    with open("/flash/d/b.bin", "wb") as f:
        f.write(bytes(range(256)) * 20)
    step(7)
except OSError as e:
    print("CUT", e)
print("OPS", board.flash_dev().ops())
"""

CHECKER = r"""
import os, board
from refund.log import log
info = board.mount_flash(log)
assert not info["formatted"], "image had to be reformatted"
def read(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
a = read("/flash/a.txt")
lg = read("/flash/log")
names = os.listdir("/flash")
b = read("/flash/d/b.bin") if "d" in names else None
# the file system still takes writes
with open("/flash/probe", "w") as f:
    f.write("ok")
print("STATE", repr(a and a[:2]), len(a or ""), repr(lg), "d" in names, b is not None and len(b))
"""


def _run(mp, img, cut=0, torn=False, code=WRITER):
    env = {"REFUND_FLASH": img, "REFUND_FLASH_BLOCKS": "32", "REFUND_CUT_AT": str(cut),
           "REFUND_CUT_TORN": "1" if torn else "0"}
    return mp(code, env=env).stdout


def _steps(out):
    return [int(l.split()[1]) for l in out.splitlines() if l.startswith("STEP")]


# Both interpreters (the mp fixture follows interp): pinned 64-bit and 32-bit frozen.
@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_counters_and_dead_device(mp, tmp_path):
    img = str(tmp_path / "f.img")
    r = mp(r"""
from flashdev import FlashDev
import vfs
d = FlashDev(%r, 4096, 16, 0, False)
vfs.VfsLfs2.mkfs(d)
s = d.stats()
assert s["programs"] > 0 and s["erases"] > 0 and s["reads"] > 0, s
assert s["bytes_programmed"] > 0 and s["bytes_read"] > 0, s
fs = vfs.VfsLfs2(d)
vfs.mount(fs, "/flash")
f = open("/flash/x", "w")
f.write("x" * 5000)
d.cut_at = d.ops() + 1  # the next program or erase loses power
try:
    f.flush()
    print("NOT CUT")
except OSError as e:
    print("CUT", e)
buf = bytearray(16)
assert d.dead and d.writeblocks(1, buf, 0) == -5 and d.readblocks(1, buf, 0) == -5
assert d.ioctl(6, 3) == -5
print("OK")
# f stays open on purpose: the finaliser at exit writes to the dead device.
""" % img)
    assert "CUT" in r.stdout and "OK" in r.stdout, r.stdout
    assert "heap is locked" not in r.stderr + r.stdout


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_power_cut_at_every_program_and_erase(mp, tmp_path):
    base = str(tmp_path / "base.img")
    _run(mp, base, code="import board\nfrom refund.log import log\nboard.mount_flash(log)\n")
    full = str(tmp_path / "full.img")
    shutil.copy(base, full)
    out = _run(mp, full)
    total = int(out.split("OPS")[1])
    all_steps = _steps(out)
    assert all_steps[-1] == 7 and total > 10
    cuts = 0
    for k in range(1, total + 1):
        for torn in (False, True):
            img = str(tmp_path / "cut.img")
            shutil.copy(base, img)
            w = _run(mp, img, cut=k, torn=torn)
            assert "CUT" in w, w
            done = _steps(w)
            st = _run(mp, img, code=CHECKER)
            line = [l for l in st.splitlines() if l.startswith("STATE")][0]
            _, a, alen, lg, has_d, blen = line.split(" ", 5)
            # Committed steps are never lost; uncommitted ones are all-or-nothing.
            if 1 in done:
                assert a in ("'v1'", "'v2'") and alen == "600", (k, torn, line)
            if 2 in done:
                assert a == "'v2'", (k, torn, line)
            assert alen in ("0", "600"), (k, torn, line)
            lines = eval(lg) or ""
            n_done = len([s for s in done if 3 <= s <= 5])
            assert lines.count("\n") >= n_done, (k, torn, line)
            assert lines == "".join("line%d\n" % i for i in range(lines.count("\n"))), line
            if 7 in done:
                assert blen == str(256 * 20), line
            assert blen in ("False", "0", str(256 * 20)) or int(blen) % 1 == 0
            cuts += 1
    print("power cuts checked: %d (ops in sequence: %d)" % (cuts, total))
    assert cuts == 2 * total
