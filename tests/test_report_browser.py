"""The bundle's report.html (host_tools/report.py) opened in headless Debian Chromium via
selenium + chromedriver: self-contained (no external URL), the timeline plot decodes
(naturalWidth > 0), the status and stuck-refund tables have rows. A screenshot goes to
docs/img/report.png with REFUND_SAVE_SCREENSHOT=1, else to the test's tmp dir.
Chromium missing is a failure, not a skip (`apt-get install chromium chromium-driver`)."""
import json
import os
import re
import tempfile
import zipfile

import pytest

from host_tools import REPO, report

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T0 = 1767434400  # 2026-01-03 10:00 UTC


def rec(seq, name, rid="", t=0, level="I", up=None, **fields):
    return {"seq": seq, "wall": t, "up_ms": (t - T0 + 5) * 1000 if up is None else up, "level": level,
            "name": name, "rid": rid, "fields": fields}


def fixture_data():
    """A morning at a shop: refunds, a host outage with failed sends, a printer out of paper."""
    rs, seq = [], 0

    def add(name, rid="", dt=0, **kw):
        nonlocal seq
        seq += 1
        rs.append(rec(seq, name, rid, T0 + dt, **kw))

    add("boot", reset="power_on", fw="0.1.0", board="unix", up=0)
    for i in range(6):
        rid = "K7Q2-%06d" % (i + 1)
        add("captured", rid, 60 + i * 300, op="01", amount=1000 + i, cur=156, orrn="ORIG%08d" % i)
        add("send", rid, 61 + i * 300, mti="0200", stan="%06d" % (i + 1), attempt=1)
        if i in (2, 3):
            add("send_fail", rid, 81 + i * 300, level="W", cause="timeout", attempt=1)
            if i == 2:
                add("host_down", "", 82 + i * 300, level="W", cause="ECONNREFUSED")
            continue
        add("answer", rid, 62 + i * 300, mti="0210", rc="00", rrn="%012d" % (i + 1), auth="A%05d" % i)
        add("approved", rid, 62 + i * 300, rrn="%012d" % (i + 1), auth="A%05d" % i)
        if i == 5:
            add("print_fault", rid, 63 + i * 300, level="E", cause="paper_out")
            add("printer", "", 63 + i * 300, level="W", state="paper_out", detail="")
        else:
            add("print_begun", rid, 63 + i * 300, copy="original")
            add("printed", rid, 64 + i * 300)
    add("host_up", "", 1500)
    entries = [
        {"rid": "K7Q2-000003", "state": "queued", "amount": 1002, "currency": 156, "created": T0 + 660,
         "sent": T0 + 661, "orrn": "ORIG00000002", "op": "01", "sup": "", "stan": 3, "rrn": "", "auth": "",
         "code": "", "flags": 1, "stale": False},
        {"rid": "K7Q2-000004", "state": "queued", "amount": 1003, "currency": 156, "created": T0 + 960,
         "sent": T0 + 961, "orrn": "ORIG00000003", "op": "01", "sup": "", "stan": 4, "rrn": "", "auth": "",
         "code": "", "flags": 1, "stale": True},
        {"rid": "K7Q2-000006", "state": "approved", "amount": 1005, "currency": 156, "created": T0 + 1560,
         "sent": T0 + 1561, "orrn": "ORIG00000005", "op": "01", "sup": "", "stan": 6, "rrn": "000000000006",
         "auth": "A00005", "code": "00", "flags": 3, "stale": False},
    ]
    return {"info": {"fw": "0.1.0", "board": "unix", "uid": "fde4104e087c", "reset": "power_on",
                     "uptime_ms": 1700000, "time": T0 + 1700},
            "status": {"states": {"queued": 2, "approved": 1}, "live": 3, "pending_total": 2005,
                       "oldest_s": 1040, "stale": 1, "host": {"up": True, "connected": True},
                       "printer": {"state": "paper_out", "detail": None}},
            "metrics": {"counters": {"sends": 6, "timeouts": 2, "prints": 4, "print_faults": 1}},
            "config": {"terminal_id": "TERM0001", "mac_key": "***"},
            "outbox": entries, "records": rs}


def chromium_driver(tmp):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("headless Chromium is needed: apt-get install -y chromium chromium-driver "
                    "(%s, %s)" % (CHROMIUM, CHROMEDRIVER))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              "--window-size=1280,2200", "--user-data-dir=" + tempfile.mkdtemp(dir=tmp, prefix="chromium-")):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=o)


def render(html_path, tmp, shot=None):
    """Open html_path in headless Chromium; returns what the page shows. Saves a screenshot."""
    d = chromium_driver(str(tmp))
    try:
        d.get("file://" + os.path.abspath(html_path))
        img = d.execute_script("var i = document.getElementById('timeline');"
                               "return i && i.complete ? [i.naturalWidth, i.naturalHeight] : [0, 0];")
        rows = d.execute_script("var o = {}; document.querySelectorAll('table').forEach(function (t) {"
                                "o[t.id] = t.querySelectorAll('tbody tr').length; }); return o;")
        text = d.execute_script("return document.body.innerText;")
        if shot is None and os.environ.get("REFUND_SAVE_SCREENSHOT") == "1":
            shot = os.path.join(REPO, "docs", "img", "report.png")  # the fixture's report, for the docs
            os.makedirs(os.path.dirname(shot), exist_ok=True)
        shot = shot or os.path.join(str(tmp), "report.png")
        d.save_screenshot(shot)
        return {"img": img, "rows": rows, "text": text, "shot": shot}
    finally:
        d.quit()


def self_contained(page):
    """Every src/href of the page is a data: URI or a #fragment; no url(...) to anywhere."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    return all(r.startswith("data:") or r.startswith("#") for r in refs) and "url(" not in page \
        and not re.search(r"https?://", page)


def test_bundle_report_renders_in_chromium(tmp_path):
    z = tmp_path / "case.zip"
    report.write_bundle(str(z), fixture_data())
    with zipfile.ZipFile(z) as f:
        names = set(f.namelist())
        assert names == {"logs.jsonl", "outbox.json", "info.json", "status.json", "metrics.json",
                         "config.json", "report.html"}
        page = f.read("report.html").decode()
        assert len(f.read("logs.jsonl").decode().splitlines()) == len(fixture_data()["records"])
        f.extract("report.html", tmp_path)
    assert self_contained(page)
    seen = render(tmp_path / "report.html", tmp_path)
    assert seen["img"][0] > 0 and seen["img"][1] > 0, seen["img"]
    assert seen["rows"]["status"] >= 6 and seen["rows"]["stuck"] == 3, seen["rows"]
    for rid in ("K7Q2-000003", "K7Q2-000004", "K7Q2-000006"):
        assert rid in seen["text"]
    assert "STUCK" in seen["text"] and os.path.getsize(seen["shot"]) > 10000


def test_report_without_stuck_refunds_and_without_a_clock():
    data = fixture_data()
    data["outbox"] = []
    for r in data["records"]:
        r["wall"] = 0
    page = report.report_html(data)
    assert 'id="nothing-stuck"' in page and "uptime only" in page and self_contained(page)
    ts, relative = report.event_times(data["records"])
    assert relative and all(t is not None for t in ts) and ts == sorted(ts)


def test_times_without_a_clock_are_estimated_from_the_same_boot():
    rs = [rec(1, "boot", t=0, up=100), rec(2, "captured", "R1", t=0, up=5000),
          rec(3, "approved", "R1", t=T0, up=6000)]
    ts, relative = report.event_times(rs)
    assert not relative and ts == [T0 - 5.9, T0 - 1.0, float(T0)]


def test_config_secrets_never_reach_the_bundle(tmp_path):
    data = fixture_data()
    data["config"] = report.scrub({"mac_key": "00112233", "tech_key": "7EC4", "staff": [{"id": "01", "hash": "ab",
                                                                                           "salt": "cd"}]})
    z = tmp_path / "b.zip"
    report.write_bundle(str(z), data)
    with zipfile.ZipFile(z) as f:
        cfg = json.loads(f.read("config.json"))
    assert cfg == {"mac_key": "***", "tech_key": "***", "staff": [{"id": "01", "hash": "***", "salt": "***"}]}
