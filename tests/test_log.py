"""The file log (firmware/refund/log.py) on the virtual board's littlefs: buffered,
rotated within its bounds, and readable by a technician with mpremote."""
import time

ROTATE = r"""
import os, board
from refund import log as L
board.mount_flash(print)
L.log("boot", "before attach")           # kept for the file
L.attach("/flash/log", lambda: 1700000000, max_bytes=600, keep=3, buffer=200)
for i in range(200):
    L.log("t", "line %03d" % i)
L.flush()
names = sorted(os.listdir("/flash/log"))
print("FILES", names)
for n in names:
    print("SIZE", n, os.stat("/flash/log/" + n)[6])
with open("/flash/log/log.0") as f:
    print("LAST", f.read().splitlines()[-1])
print("LOST", L.counts["lost"])
"""


def test_file_log_rotates_within_its_bounds(mp, tmp_path):
    r = mp(ROTATE, env={"REFUND_FLASH": str(tmp_path / "f.img")})
    out = r.stdout.splitlines()
    files = [l for l in out if l.startswith("FILES")][0]
    assert files == "FILES ['log.0', 'log.1', 'log.2']", files
    sizes = [int(l.split()[2]) for l in out if l.startswith("SIZE")]
    assert all(0 < s <= 600 + 200 + 64 for s in sizes), sizes  # max + one buffer
    last = [l for l in out if l.startswith("LAST")][0]
    assert last.startswith("LAST 1700000000 ") and last.endswith("INFO t: line 199"), last
    assert "LOST 0" in out


def test_file_log_keeps_boot_lines_and_survives_a_full_flash(mp, tmp_path):
    code = r"""
import os, board
from refund import log as L
board.mount_flash(print)
L.log("boot", "early line")
L.attach("/flash/log", lambda: 42)
with open("/flash/log/log.0") as f:
    print("HAS", "42 " in f.read() and True)
# fill the flash, then log: lines are counted as lost, nothing raises
b = bytes(4096)
try:
    with open("/flash/fill", "wb") as f:
        while True:
            f.write(b)
            f.flush()  # committed block by block, until littlefs says ENOSPC
except OSError:
    pass
k = 0
while True:  # what is left: small files until nothing fits
    try:
        with open("/flash/fill%d" % k, "wb") as f:
            f.write(b[:256])
        k += 1
    except OSError:
        break
for i in range(300):
    L.log("t", "x" * 100)
L.flush()
print("LOST>0", L.counts["lost"] > 0)
"""
    r = mp(code, env={"REFUND_FLASH": str(tmp_path / "g.img")})
    assert "HAS True" in r.stdout and "LOST>0 True" in r.stdout, r.stdout


def test_technician_pulls_the_file_log_with_mpremote(shop):
    r = shop.refund(1999, orrn="ORIGLOGS0001", check=True)
    shop.wait_state(r["rid"], ("printed",))
    time.sleep(6)  # the housekeeping flush
    m = shop.board.mpremote("fs", "cat", ":/flash/log/log.0")
    assert m.returncode == 0, m.stderr
    text = m.stdout
    assert "boot: refund firmware" in text
    assert r["rid"] + " queued" in text and r["rid"] + " approved" in text, text[-2000:]
    assert "1234" not in text.replace(r["rid"], "")  # the operator's PIN never lands in the log
