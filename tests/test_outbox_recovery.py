"""Proof 3 of issue 3: a corrupt record in the middle of the journal (bit flip) costs
only that record; entries after it are recovered where their own CRC holds, and the
damage is logged. Also: limits at intake, flash full, retention and the rid format."""
import os
import re

from host_tools import REPO, vboard

MAKE = r"""
import board
from refund.outbox import Outbox
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"compact_min": 1000, "compact_max": 1000})
ob.recover()
for i in range(30):
    e = ob.accept(100 + i, 156, "ORIG%08d" % i, "01")
    if i % 2:
        ob.mark_sent(e["rid"])
#STEP
print("MADE", ob.stats())
"""

RECOVER = r"""
import board
from refund.outbox import Outbox
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, lambda t, m, level="INFO": print("LOG", level, t, m))
r = ob.recover()
print("RECOVER", r["live"], r["damaged"])
for rid in [ob.rid(s) for s in ob.seqs(None)]:
    e = ob.get(rid)
    print("E", e["orrn"], e["amount"], e["flags"])
"""


def run(mp, img, code, **env):
    return mp(code, env=dict({"REFUND_FLASH": img}, **env)).stdout


def entries(out):
    return {l.split()[1]: (int(l.split()[2]), int(l.split()[3]))
            for l in out.splitlines() if l.startswith("E ")}


def snapshot_block(img):
    data = open(img, "rb").read()
    for b in range(len(data) // 4096):
        blk = data[b * 4096:(b + 1) * 4096]
        if blk[0] == 47 and blk[1] == 0x48:  # head frame (format 2): len 47, type 'H'
            return data, b
    raise AssertionError("no snapshot data block found")


def test_bit_flip_in_snapshot_costs_one_record(mp, tmp_path):
    img = str(tmp_path / "f.img")
    run(mp, img, MAKE.replace("#STEP", "ob.compact()"))
    data, b = snapshot_block(img)
    at = data.index(b"ORIG00000015", b * 4096)
    flipped = bytearray(data)
    flipped[at + 3] ^= 0x10
    open(img, "wb").write(flipped)
    out = run(mp, img, RECOVER)
    assert "RECOVER 29 1" in out, out
    assert re.search(r"LOG ERROR outbox DAMAGE snapshot record at \d+: crc", out), out
    got = entries(out)
    assert "ORIG00000015" not in got and len(got) == 29
    for i in range(30):
        if i != 15:
            assert got["ORIG%08d" % i] == (100 + i, i % 2), i


def test_lost_framing_resynchronises(mp, tmp_path):
    img = str(tmp_path / "f.img")
    run(mp, img, MAKE.replace("#STEP", "ob.compact()"))
    data, b = snapshot_block(img)
    at = data.index(b"ORIG00000007", b * 4096)
    # Walk back to the frame's length byte (entry frames start len, 'E').
    start = data.rindex(b"\x45", b * 4096, at) - 1
    flipped = bytearray(data)
    flipped[start] ^= 0x40  # the length byte: framing of this record is gone
    open(img, "wb").write(flipped)
    out = run(mp, img, RECOVER)
    got = entries(out)
    assert len(got) == 29 and "ORIG00000007" not in got, out
    assert "ORIG00000029" in got and "RECOVER 29 1" in out


def test_corrupt_journal_record_keeps_the_previous_version(mp, tmp_path):
    img = str(tmp_path / "f.img")
    # Entry 13 was sent: its latest record (flags=1) is corrupted in place, through the
    # file system, as a bit flip littlefs cannot see (its data has no checksum).
    corrupt = r"""
import os
from refund import record as R
paths = {}
for d in os.listdir("/flash/ob/j"):  # j/<version >> 4>/<version>
    for n in os.listdir("/flash/ob/j/" + d):
        paths[n] = "/flash/ob/j/%s/%s" % (d, n)
names = sorted(paths)
target = None
for n in names:
    with open(paths[n], "rb") as f:
        b = bytearray(f.read())
    if b[1] == R.T_ENTRY and b"ORIG00000013" in b and R.entry_head(memoryview(b)[2:-4])[3] == 1:
        target = n
        b[b.index(b"ORIG00000013") + 5] ^= 1
        with open(paths[n], "wb") as f:
            f.write(b)
print("CORRUPTED", target, names[-1])
"""
    out = run(mp, img, MAKE.replace("#STEP", corrupt))
    target = re.search(r"CORRUPTED (\d+) (\d+)", out)
    assert target and target.group(1) != target.group(2)  # in the middle, not the tail
    out = run(mp, img, RECOVER)
    assert "RECOVER 30 1" in out and "DAMAGE journal record %d: crc" % int(target.group(1)) in out, out
    got = entries(out)
    assert got["ORIG00000013"] == (113, 0)  # back to its queued record: resent as 0201 later
    for i in range(14, 30):
        assert got["ORIG%08d" % i] == (100 + i, i % 2)


def test_intake_limits_refuse_with_reason_and_keep_everything(mp, tmp_path):
    img = str(tmp_path / "f.img")
    out = run(mp, img, r"""
import board
from refund.outbox import Outbox, Refused
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"max_live": 5, "max_amount": 1000, "max_pending": 2600})
ob.recover()
def try_(*a):
    try:
        print("OK", ob.accept(*a)["rid"])
    except Refused as e:
        print("REFUSED", e.code, e.text)
try_(1001, 156, "ORIG00000001")
try_(0, 156, "ORIG00000001")
try_(-5, 156, "ORIG00000001")
try_(100, 1000, "ORIG00000001")
try_(100, 156, "SHORT")
try_(100, 156, "ORIG0000000;")
try_(100, 156, "ORIG00000001", "op;=x")
for i in range(3):
    try_(800, 156, "ORIG00000001")
try_(300, 156, "ORIG00000001")
try_(100, 156, "ORIG00000001")
try_(100, 156, "ORIG00000001")
try_(1, 156, "ORIG00000001")
print("LIVE", ob.live, ob.pending)
""")
    codes = re.findall(r"REFUSED (\w+)", out)
    assert codes == ["amount_limit", "bad_amount", "bad_amount", "bad_currency", "bad_orrn",
                     "bad_orrn", "bad_op", "pending_limit", "outbox_full"], out
    assert "LIVE 5 2600" in out


def test_flash_full_refuses_and_never_corrupts(mp, tmp_path):
    img = str(tmp_path / "f.img")
    out = run(mp, img, r"""
import board
from refund.outbox import Outbox, Refused
board.mount_flash(print)
# Fill most of the flash with a ballast file, then push intake past the end (room is
# left for the outbox's directories: each littlefs directory is a 2-block metadata pair).
with open("/flash/ballast", "wb") as f:
    b = bytes(4096)
    try:
        for i in range(34):
            f.write(b)
    except OSError:
        pass
ob = Outbox("/flash/ob", board.now, print, {"low_water": 0, "max_live": 2000,
            "max_pending": 10**12, "compact_min": 64})
ob.recover()
ok = []
code = None
for i in range(5000):
    try:
        ok.append(ob.accept(100, 156, "ORIG%08d" % i)["rid"])
    except Refused as e:
        code = e.code
        break
print("ACCEPTED", len(ok), code)
ob2 = Outbox("/flash/ob", board.now, print)
r = ob2.recover()
print("RECOVERED", r["live"], r["damaged"], all(ob2.get(x) for x in ok))
""", REFUND_FLASH_BLOCKS="48")
    m = re.search(r"ACCEPTED (\d+) (\w+)", out)
    assert m and int(m.group(1)) > 10 and m.group(2) == "flash_error", out
    assert "RECOVERED %s 0 True" % m.group(1) in out, out


def test_low_water_mark_refuses_before_the_flash_is_full(mp, tmp_path):
    img = str(tmp_path / "f.img")
    out = run(mp, img, r"""
import board
from refund.outbox import Outbox, Refused
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"low_water": 40 * 4096})
ob.recover()
try:
    ob.accept(100, 156, "ORIG00000001")
except Refused as e:
    print("REFUSED", e.code)
""", REFUND_FLASH_BLOCKS="40")
    assert "REFUSED flash_low" in out


def test_retention_keeps_completed_entries_queryable(mp, tmp_path):
    img = str(tmp_path / "f.img")
    out = run(mp, img, r"""
import board
from refund.outbox import Outbox
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"keep_n": 20, "compact_min": 16})
ob.recover()
rids = []
for i in range(60):
    e = ob.accept(100 + i, 156, "ORIG%08d" % i)
    r = e["rid"]
    rids.append(r)
    ob.mark_sent(r); ob.approve(r, "RRN%09d" % i, "AUTH%02d" % (i % 100))
    ob.print_begun(r); ob.printed(r)
ob.close(ob.cut())  # settled: the history limits apply to batch 1 now
ob.compact()
hist = list(ob.history())
seqs = [e["seq"] for e in hist]
print("HIST", len(hist), len(set(seqs)) == len(seqs))
print("LAST", ob.get(rids[-1])["state_name"], ob.get(rids[-1])["rrn"])
print("OLD", ob.get(rids[0]))
print("RID", rids[0], ob.stats()["journal"])
""")
    n = int(re.search(r"HIST (\d+) True", out).group(1))
    assert 20 <= n <= 25, out  # trimmed to keep_n (+25% slack between trims)
    assert "LAST printed RRN000000059" in out
    assert "OLD None" in out  # beyond the retention window: compacted away
    rid = re.search(r"RID (\S+) 0", out).group(1)
    assert re.fullmatch(r"[A-Z0-9]{4}-\d{6}", rid)


def test_history_trim_runs_in_bounded_ram_at_the_default_retention(mp, tmp_path):
    # keep_n = 1000 (default): the trim after ~1250 completed refunds used to load every
    # history entry as a dict and ran out of heap, after which every write failed.
    img = str(tmp_path / "f.img")
    out = run(mp, img, r"""
import gc, board
from refund.outbox import Outbox
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"max_live": 2000})
ob.recover()
rids = []
low = None
for i in range(1400):
    e = ob.accept(100, 156, "ORIG%08d" % i)
    r = e["rid"]
    rids.append(r) if i % 100 == 99 else None
    e = ob.mark_sent(r, e); e = ob.approve(r, "RRN%09d" % i, "AUTH01", e)
    ob.print_begun(r); ob.printed(r)
    if i % 100 == 99:
        ob.close(ob.cut())  # a day's settlement: until then its entries stay in the history
    if i % 50 == 0:
        gc.collect()
        low = gc.mem_free() if low is None else min(low, gc.mem_free())
print("HIST", ob.head["hist_count"], "LOW", low)
print("LAST", ob.get(rids[-1])["state_name"])
""")
    m = re.search(r"HIST (\d+) LOW (\d+)", out)
    assert m and 1000 <= int(m.group(1)) <= 1250, out  # trimmed at least once
    assert int(m.group(2)) > 128 * 1024, out  # the trim left the heap alone
    assert "LAST printed" in out


def test_history_keeps_entries_of_a_batch_not_closed(mp, tmp_path):
    # keep_n 10, 60 completed refunds: all of open batch 1 stay; once it is closed the
    # limits apply again, and a trim keeps what the open batch 2 still needs.
    img = str(tmp_path / "f.img")
    out = run(mp, img, r"""
import board
from refund.outbox import Outbox
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"keep_n": 10, "compact_min": 16})
ob.recover()
def done(i):
    r = ob.accept(100 + i, 156, "ORIG%08d" % i)["rid"]
    ob.mark_sent(r); ob.approve(r, "RRN%09d" % i, "AUTH01")
    ob.print_begun(r); ob.printed(r)
    return r
a = [done(i) for i in range(60)]
ob.compact()
print("OPEN1", ob.head["hist_count"], sum(1 for r in a if ob.get(r)))
ob.cut()
b = [done(100 + i) for i in range(30)]
ob.close(1)
for i in range(40):
    done(200 + i)
ob.compact()
print("AFTER", ob.head["hist_count"], sum(1 for r in a if ob.get(r)), sum(1 for r in b if ob.get(r)))
""")
    m = re.search(r"OPEN1 (\d+) (\d+)", out)
    assert m and int(m.group(1)) >= 60 and m.group(2) == "60", out
    m = re.search(r"AFTER (\d+) (\d+) (\d+)", out)
    # batch 1 closed: trimmed to the last keep_n (+25%); batch 2 (open) all kept
    assert m and m.group(2) == "0" and m.group(3) == "30" and int(m.group(1)) <= 30 + 40, out


def test_rid_resolves_only_in_its_own_form(mp, tmp_path):
    # rid = GGGG-NNNNNN ("%06d": past 999999 the number has more digits). seq_of once
    # checked a minimum length of 6 and took the last 6 characters: a 7-digit entry
    # number was unknown, and int() mapped "+00001", " 00001", "1_0000" to real entries.
    img = str(tmp_path / "f.img")
    out = run(mp, img, r"""
import board
from refund.outbox import Outbox
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print)
ob.recover()
first = ob.accept(100, 156, "ORIG00000001")["rid"]
ob.next_seq = 10000  # numbers are leased: a crash skips some too
ob.accept(101, 156, "ORIG00000002")
ob.next_seq = ob.seq_limit = 999999
a = ob.accept(102, 156, "ORIG00000003")["rid"]
b = ob.accept(103, 156, "ORIG00000004")["rid"]
print("FIRST", first, ob.get(first)["amount"])
print("SIX", a, ob.get(a)["amount"])
print("SEVEN", b, ob.get(b)["amount"], ob.state(b))
g = ob.gen
for bad in (g + "-+00001", g + "- 00001", g + "-00001 ", g + "-1_0000", g + "--00001", g + "-0010000",
            g + "-00001", g + "-000001x", "XXXX-000001", g + "000001", 1, None, first.encode()):
    print("BAD", repr(bad), ob.seq_of(bad), ob.get(bad) is None)
""")
    assert re.search(r"FIRST \S+-000001 100", out), out
    assert re.search(r"SIX \S+-999999 102", out), out
    assert re.search(r"SEVEN \S+-1000000 103 1", out), out
    bad = [l for l in out.splitlines() if l.startswith("BAD")]
    assert len(bad) == 13 and all(l.endswith(" None True") for l in bad), out


def test_compaction_moves_every_completed_entry_to_the_history_in_completion_order(mp, tmp_path):
    # Compaction opens only the latest record of each entry the index holds as completed
    # (a tombstone), in completion order; an entry whose earlier records are damaged and
    # only its printed record whole gets its tombstone at recovery all the same.
    img = str(tmp_path / "f.img")
    out = run(mp, img, r"""
import os
import board
from refund.outbox import Outbox
from refund import record as R
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"compact_min": 1000, "compact_max": 1000})
ob.recover()
rids = [ob.accept(100 + i, 156, "ORIG%08d" % i, "01")["rid"] for i in range(8)]
for r in rids[:6]:
    ob.mark_sent(r)
    ob.approve(r, "RRN000000001", "AUTH01")
# Completion order is not entry order: 4, 1, 3 print; 0 first, 5 last.
for k in (0, 4, 1, 3, 5):
    ob.print_begun(rids[k])
    ob.printed(rids[k])
ob.print_begun(rids[2])
ob.printed(rids[2])
mine = []  # entry 2's records; all but its last (printed) are damaged
for v in ob.j.versions():
    typ, p = ob.j.read(v)
    if typ == R.T_ENTRY and R.entry_head(p)[1] == ob.seq_of(rids[2]):
        mine.append(v)
for v in mine[:-1]:
    with open(ob.j.path(v), "rb") as f:
        b = bytearray(f.read())
    b[10] ^= 1
    with open(ob.j.path(v), "wb") as f:
        f.write(b)
print("RIDS", " ".join(rids))
""")
    rids = re.search(r"RIDS (.*)", out).group(1).split()
    out = run(mp, img, r"""
import board
from refund.outbox import Outbox
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, lambda t, m, level="INFO": print("LOG", level, t, m),
            {"compact_min": 1000, "compact_max": 1000})
r = ob.recover()
print("RECOVER", r["live"], r["damaged"])
ob.compact()
print("AFTER", ob.stats()["journal"])
print("HIST1", " ".join(e["rid"] for e in ob.history()))
rids = "%s".split()
# The next compaction with nothing to recover: tombstones only. The newest entry
# completes first (cancelled unsent), then rids[7] (slip printed); rids[6] stays live.
x = ob.accept(999, 156, "ORIGXXXXXXXX", "01")["rid"]
ob.cancel(x)
for r in rids[6:]:
    ob.mark_sent(r)
    ob.decline(r, "05")
ob.print_begun(rids[7])
ob.slip_printed(rids[7])
print("X", x)
ob.compact()
print("HIST2", " ".join(e["rid"] for e in ob.history()))
print("LIVE", " ".join(ob.rid(s) for s in ob.seqs(None)))
""" % " ".join(rids))
    assert "RECOVER 2 4" in out, out
    assert "AFTER 0" in out, out
    order = [rids[k] for k in (0, 4, 1, 3, 5, 2)]
    assert re.search(r"HIST1 (.*)", out).group(1).split() == order, out
    hist2 = re.search(r"HIST2 (.*)", out).group(1).split()
    x = re.search(r"X (.*)", out).group(1)
    assert hist2 == order + [x, rids[7]], out
    assert re.search(r"LIVE (.*)", out).group(1).split() == [rids[6]], out
