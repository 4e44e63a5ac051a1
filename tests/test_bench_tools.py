"""The measuring parts of `make bench` that issue 14 added, run small: the compaction
counters (bench_outbox.py compact) and the approval -> receipt taps (bench_receipt).
No figure is asserted (speed is never a timed assert): only that they measure."""
from host_tools import bench_receipt, benchmarks


def test_compaction_cost_counts_every_step(tmp_path):
    d = benchmarks.mp(["compact", 40, 64], str(tmp_path / "c.img"), blocks=256)
    assert d["live"] == 40 and d["before"]["journal_files"] >= 64
    assert [s[0].split(":")[0] for s in d["steps"]] == ["hist.add", "snapshot.write", "journal.drop of each compacted record",
                                                        "rmdirs (newest first) + index squeeze"]
    for _name, s in d["steps"] + [("total", d["total"])]:
        assert s["reads"] > 0 and s["bytes_read"] > 0
    # compaction did its job: the journal is gone into snap + hist
    assert d["after"]["journal_files"] < 10 and d["after"]["hist"] > 0
    assert d["stat_walk"][-1][0].startswith("/flash/ob/j/")


def test_receipt_latency_taps_pair_each_approval_with_its_receipt(tmp_path):
    d = bench_receipt.measure(str(tmp_path), n=3)
    assert d["missing"] == [] and len(d["ms"]) == 3
    assert all(x >= 0 for x in d["ms"])
