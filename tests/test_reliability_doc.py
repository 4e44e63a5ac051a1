"""docs/reliability.md is generated from docs/reliability.json (host_tools/reliability.py,
written by `make soak`): nothing typed by hand; the fuzz campaigns' figures are there.
No campaign is run here."""
import json

from host_tools import reliability

CAMPAIGNS = ("fuzz_host_frames", "fuzz_ecr_frames", "fuzz_service_frames", "fuzz_printer_status",
             "fuzz_config")


def test_markdown_is_what_the_json_makes():
    with open(reliability.MD_PATH) as f:
        text = f.read()
    assert text == reliability.markdown(reliability.load()), \
        "docs/reliability.md differs from its JSON: run python -m host_tools.reliability"


def test_every_fuzz_campaign_ran_at_least_10000_cases_without_a_violation():
    doc = reliability.load()
    for name in CAMPAIGNS:
        r = doc[name]
        assert r["campaign"] == name and r["n"] >= 10000 and isinstance(r["seed"], int), name
        assert r["violations"] == [], (name, r["violations"][:3])
        assert sum(r["categories"].values()) >= 1 and len(r["categories"]) >= 5, name
    assert all(k.startswith("fuzz_") for k in doc if k in reliability.FUZZ)


def test_results_lines_are_collected_and_rendered(tmp_path, monkeypatch):
    # record() writes nothing without REFUND_SOAK_DIR (make test), one line with it (make
    # soak); collect() merges the lines under the campaign's key, keeping other keys.
    monkeypatch.delenv("REFUND_SOAK_DIR", raising=False)
    assert reliability.record("fuzz_x", 3, 7, {"a": 2, "b": 1}, []) is None
    monkeypatch.setenv("REFUND_SOAK_DIR", str(tmp_path))
    path = reliability.record("fuzz_config", 12000, 7, {"truncated": 5, "non_utf8": 7}, ["case 3: boom"],
                              checked={"loaded": 4}, seconds=9)
    with open(path) as f:
        assert json.loads(f.readline())["n"] == 12000
    doc = reliability.collect(str(tmp_path), {"soak_terminal": {"refunds": 1000}})
    assert set(doc) == {"soak_terminal", "fuzz_config"}
    md = reliability.markdown(doc)
    assert "| non_utf8 | 7 |" in md and "12,000" in md and "seed **7**" in md
    assert "violations: **1**" in md and "case 3: boom" in md
    assert "REFUND_FUZZ_N=12000 REFUND_FUZZ_SEED=7" in md and "tests/test_fuzz_config.py" in md
