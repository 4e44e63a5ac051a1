"""`make demo` (host_tools/demo.py) as a newcomer runs it on a fresh machine: no system CJK
font (REFUND_PRINTER_FONT names a file that does not exist), and still every receipt has
its .png; the day reconciles; the technician's bundle is pulled over the USB console and
the summary ends with where the receipts, ledger, bundle and report are. The demo's
directory is made under tmp_path (TMPDIR), so tests/test_zz_secrets.py scans it."""
import os
import re
import subprocess
import sys
import zipfile

from host_tools import REPO


def test_make_demo_without_a_cjk_font_writes_pngs_and_says_where_everything_is(tmp_path):
    env = dict(os.environ, REFUND_PRINTER_FONT=str(tmp_path / "no-such-font.ttc"), TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "host_tools.demo"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    # the printer said once which font it drew with
    assert r.stderr.count("no system CJK font found") == 1, r.stderr
    assert "built-in bitmap font" in r.stderr
    # every receipt line of the summary names a .png that exists
    receipts = re.findall(r"^  (\S+receipt-\d{4}\.\w+)  ", out, re.M)
    assert len(receipts) >= 12, out
    for p in receipts:
        assert p.endswith(".png") and os.path.getsize(p) > 1000, p
    assert "RECONCILED: the host moved exactly what the terminal approved" in out
    # Two days settled: the first agrees, the second finds the refund the host lost.
    sett = out[out.index("== settlement"):out.index("== what happened")]
    host = re.findall(r"^  host: +batch (\d{6}) closed: (\d+) refunds, (\d+) .*; (.*)$", sett, re.M)
    assert [(b, why.split(" ")[0]) for b, _n, _t, why in host] == [("000001", "agreed"), ("000002", "difference")], sett
    lost = re.search(r"difference (\S+) missing", sett).group(1)
    assert "SETTLEMENT DIFFERENCE batch 000002 currency 156" in out and "explain %s" % lost in out
    slips = re.findall(r"^  (\S+receipt-\d{4}\.png)  settlement slip", out, re.M)
    assert len(slips) == 2, out
    with open(slips[1][:-4] + ".txt", encoding="utf-8") as f:
        assert lost in f.read()
    tail = out[out.index("== where it is"):]
    where = dict(re.findall(r"^  (receipts|ledger|bundle|report) +(\S+)", tail, re.M))
    assert set(where) == {"receipts", "ledger", "bundle", "report"}, tail
    m = re.search(r"(\d+) receipts, (\d+) \.png \(emulator's bitmap font", tail)
    assert m and m.group(1) == m.group(2) == str(len(receipts)), tail
    assert os.path.dirname(where["ledger"]) == os.path.dirname(where["bundle"]) \
        == os.path.dirname(where["report"]) and where["ledger"].startswith(str(tmp_path))
    assert sorted(os.listdir(where["receipts"])) == sorted(
        os.path.basename(p)[:-4] + ext for p in receipts for ext in (".json", ".png", ".txt"))
    with zipfile.ZipFile(where["bundle"]) as z:
        assert {"logs.jsonl", "outbox.json", "status.json", "report.html"} <= set(z.namelist())
        assert z.read("report.html") == open(where["report"], "rb").read()
    with open(where["ledger"]) as f:
        assert sum(1 for _ in f) >= 6
    assert "refundctl --port /dev/pts/" in out and "bundle -o %s" % where["bundle"] in out
