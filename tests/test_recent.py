"""The duplicate guard's RAM list (firmware/refund/recent.py) on the real MicroPython
interpreter: 16-bit created minutes and entry-number offsets, their rebasing over
months of uptime and across entry-number gaps, and the `cut` that sends the guard to the
flash whenever a refund inside the window had to leave the list."""
import json

DAY = 86400

SCRIPT = r"""
import json
from refund.recent import Recent
out = {}
T = 1764000000

# in order, with a gap of 40000 entry numbers (a lease skipped after power cuts)
r = Recent(8)
r.add(T + 1, 100, "ORIG1", 5)
r.add(T + 30, 200, "ORIG2", 6)
r.add(T + 61, 100, "ORIG1", 40006)
out["find"] = r.find(100, "ORIG1")
out["other"] = r.find(200, "ORIG2")
out["none"] = r.find(300, "ORIG1")
# created is rounded up to the minute: never pruned before its time (T + 1 -> T + 60)
r.prune(T + 2)
out["after_prune_T1"] = r.find(100, "ORIG1")
r.prune(T + 61)
out["after_prune_T61"] = r.find(100, "ORIG1")

# a number far beyond s0: the old ones that no longer fit leave, counted in cut
r = Recent(8)
r.add(T, 1, "A", 10)
r.add(T + 5, 1, "B", 11)
r.add(T + 10, 1, "C", 200000)
out["far"] = [r.find(1, "A"), r.find(1, "B"), r.find(1, "C")]
out["far_cut"] = r.cut

# an older number loaded after newer ones (recovery reads history, journal, live)
r = Recent(8)
r.add(T, 1, "N", 50000)
r.add(T, 1, "O", 20000)
r.add(T, 1, "P", 20001)
r.add(T, 1, "Q", 10)  # below s0: every offset moves up
out["older"] = [r.find(1, "N"), r.find(1, "O"), r.find(1, "P"), r.find(1, "Q")]
r.add(T, 1, "R", 90000)  # too far above 10 for 16 bits: the oldest leave, counted in cut
out["older2"] = [r.find(1, "Q"), r.find(1, "O"), r.find(1, "N"), r.find(1, "R")]
out["older_cut"] = r.cut

# 60 days of uptime, an entry a day: t0 moves on, the last 31 days stay findable
r = Recent(100)
for d in range(60):
    r.add(T + d * 86400, 7, "D%d" % d, 1000 + d)
r.prune(T + 59 * 86400 - 30 * 86400)
out["days"] = [d for d in range(60) if r.find(7, "D%d" % d)]

# full: the oldest leaves for the newest and cut says until when the flash is needed
r = Recent(3)
for i in range(5):
    r.add(T + i * 60, 1, "F%d" % i, 100 + i)
out["full"] = [i for i in range(5) if r.find(1, "F%d" % i)]
out["full_cut"] = r.cut
print(json.dumps(out))
"""


def test_recent_list_keeps_every_refund_of_the_window_findable(mp):
    r = mp(SCRIPT)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    T = 1764000000
    assert out["find"] == [5, 40006] and out["other"] == [6] and out["none"] == []
    assert out["after_prune_T1"] == [5, 40006]  # created T+1 is kept as T+60: still in
    assert out["after_prune_T61"] == [40006]
    assert out["far"] == [[], [], [200000]]
    assert out["far_cut"] == T + 5 + 55  # B's created rounded up to its minute
    assert out["older"] == [[50000], [20000], [20001], [10]]
    assert out["older2"] == [[], [], [50000], [90000]] and out["older_cut"] == T
    assert out["days"] == list(range(29, 60))
    assert out["full"] == [2, 3, 4]
    assert out["full_cut"] == T + 60
