"""The event log ring (firmware/refund/evlog.py, evread.py) on the virtual board's
littlefs, on the real interpreter: bounded by its cap, records numbered for the life of
the flash, repeated conditions aggregated, secrets refused, and every power cut at a
block write leaves a readable log that loses nothing flushed before the cut."""
import shutil

WRITER = r"""
import board
from refund import evlog
board.mount_flash(lambda *a, **k: None)
evlog.event("boot", reset="power_on", fw="t")
try:
    evlog.attach("/flash/ev", lambda: 1700000000, cap=%(cap)d, segments=%(segs)d)
    print("HEAD0", evlog.head)
    for i in range(%(n)d):
        evlog.event("send", "TEST-%%06d" %% i, mti="0200", stan="%%06d" %% i, attempt=1)
        if i %% %(every)d == 0:
            evlog.flush()  # never raises: a dead flash costs records (counted)
            if board.flash_dev().dead:
                break
            print("FLUSHED", evlog.head - 1, board.flash_dev().ops())
    evlog.flush()
    if not board.flash_dev().dead:
        print("FLUSHED", evlog.head - 1, board.flash_dev().ops())
except OSError as e:
    print("RAISED", e)
if board.flash_dev().dead:
    print("CUT", evlog.stats["lost"])
print("OPS", board.flash_dev().ops())
"""

READER = r"""
import board, struct
from refund import evlog, evread
info = board.mount_flash(lambda *a, **k: None)
assert not info["formatted"]
evlog.attach("/flash/ev", lambda: 1700000000, cap=%(cap)d, segments=%(segs)d)
out = bytearray(2048)
c, seqs = 0, []
while True:
    n, nc = evread.fill(c, out)
    i = 0
    while i < n:
        seqs.append(struct.unpack_from(">I", out, i + 2)[0])
        i += out[i + 1] + 6
    if nc == c:
        break
    c = nc
print("SEQS", seqs[0] if seqs else 0, seqs[-1] if seqs else 0, len(seqs))
assert seqs == list(range(seqs[0], seqs[-1] + 1)) if seqs else True, "gap or disorder"
h = evlog.head
evlog.event("after", "")
evlog.flush()
print("HEAD", h, evlog.head, evlog.first(), evlog.used(), evlog.stats["damaged"])
"""


def _env(img, cut=0, torn=False):
    return {"REFUND_FLASH": img, "REFUND_FLASH_BLOCKS": "64", "REFUND_CUT_AT": str(cut),
            "REFUND_CUT_TORN": "1" if torn else "0"}


def _vals(out, key):
    return [l.split()[1:] for l in out.splitlines() if l.startswith(key + " ")]


def test_ring_stays_under_its_cap_and_numbers_survive_a_reboot(mp, tmp_path):
    img = str(tmp_path / "f.img")
    p = {"cap": 8192, "segs": 4, "n": 600, "every": 20}
    w = mp(WRITER % p, env=_env(img)).stdout
    assert "CUT" not in w, w
    r = mp(READER % p, env=_env(img)).stdout
    first, last, n = map(int, _vals(r, "SEQS")[0])
    assert last == 601  # boot + 600 events, numbered from 1
    assert first > 1 and n == last - first + 1  # the oldest segments were rotated away
    head_before, head_after, first_after, used, damaged = map(int, _vals(r, "HEAD")[0])
    assert head_before == 602 and head_after == 603 and damaged == 0
    assert used <= 8192 + 1024, used  # the cap, plus at most one write buffer


def test_repeated_condition_is_one_record_with_a_count(mp, tmp_path):
    r = mp(r"""
import board, struct
from refund import evlog, evread
board.mount_flash(lambda *a, **k: None)
evlog.attach("/flash/ev", lambda: 1700000000)
for i in range(1000):
    evlog.event("host_down", agg=True, cause="ECONNREFUSED")
evlog.event("captured", "AAAA-000001", op="01", amount=100)
evlog.clear("host_down")
evlog.event("host_down", agg=True, cause="ETIMEDOUT")
evlog.flush()
out = bytearray(4096)
n, nxt = evread.fill(0, out)
i = 0
while i < n:
    ln = out[i + 1]
    print("REC", bytes(out[i + 15:i + 2 + ln]).decode().replace("\x1f", "|"))
    i += ln + 6
print("STATS", evlog.stats["events"], evlog.stats["repeated"])
""", env={"REFUND_FLASH": str(tmp_path / "a.img")}).stdout
    recs = [l[4:] for l in r.splitlines() if l.startswith("REC ")]
    assert recs[0] == "host_down||cause=ECONNREFUSED"
    assert recs[1].startswith("captured|AAAA-000001|")
    assert recs[2].startswith("repeat||") and "n=999" in recs[2] and "of=host_down" in recs[2]
    assert recs[3] == "host_down||cause=ETIMEDOUT"
    assert len(recs) == 4


def test_secret_fields_never_reach_the_log(mp, tmp_path):
    r = mp(r"""
import board
from refund import evlog, evread
board.mount_flash(lambda *a, **k: None)
evlog.attach("/flash/ev", lambda: 1700000000)
evlog.event("oops", "", pin="1234", mac_key="00112233445566778899", spin="9999", pin_hash="abcdef")
evlog.flush()
out = bytearray(1024)
n, _ = evread.fill(0, out)
print("TEXT", bytes(out[:n]))
""", env={"REFUND_FLASH": str(tmp_path / "s.img")}).stdout
    text = [l for l in r.splitlines() if l.startswith("TEXT")][0]
    for secret in ("1234", "00112233445566778899", "9999", "abcdef"):
        assert secret not in text, text
    assert text.count("***") == 4


def test_power_cut_at_every_block_write_keeps_every_flushed_record(mp, tmp_path):
    base = str(tmp_path / "base.img")
    mp("import board\nboard.mount_flash(lambda *a, **k: None)\n", env=_env(base))
    p = {"cap": 4096, "segs": 4, "n": 120, "every": 8}
    full = str(tmp_path / "full.img")
    shutil.copy(base, full)
    w = mp(WRITER % p, env=_env(full)).stdout
    total = int(_vals(w, "OPS")[0][0])
    assert total > 20
    checked = 0
    for k in range(1, total + 1):
        for torn in (False, True):
            img = str(tmp_path / "cut.img")
            shutil.copy(base, img)
            w = mp(WRITER % p, env=_env(img, k, torn)).stdout
            assert "CUT" in w and "RAISED" not in w, (k, w)
            flushed = [int(v[0]) for v in _vals(w, "FLUSHED")]
            r = mp(READER % p, env=_env(img)).stdout
            first, last, n = map(int, _vals(r, "SEQS")[0])
            if flushed:
                assert last >= flushed[-1], (k, torn, flushed[-1], r)  # nothing flushed is lost
            h, h2, _, _, _ = map(int, _vals(r, "HEAD")[0])
            assert h == last + 1 and h2 == h + 1, (k, torn, r)  # numbering goes on after the cut
            checked += 1
    print("event-log power cuts checked: %d (block writes in the session: %d)" % (checked, total))
    assert checked == 2 * total
