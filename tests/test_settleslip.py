"""The settlement slip (firmware/refund/settleslip.py) composed on MicroPython (64 and the
32-bit frozen build) and printed by the printer emulator."""
import binascii
import json

import pytest

from host_tools.printer_emu import PrinterEmulator
from test_receipt import CFG, LOCAL, TS, check_layout, joined

SLIP = """
import json, binascii
from refund import settleslip, receipt, gbk
s, cfg = json.loads(%r)
s["totals"] = [tuple(t) for t in s["totals"]]
s["diffs"] = [tuple(d) for d in s["diffs"]]
print("HEX:" + binascii.hexlify(receipt.render(settleslip.settlement(s, cfg))).decode())
print("UNKNOWN:%%d" %% gbk.unknown)
"""


def slip(mp, tmp_path, s, cfg=CFG):
    out = mp(SLIP % json.dumps([s, cfg], ensure_ascii=False)).stdout
    data = binascii.unhexlify([l for l in out.splitlines() if l.startswith("HEX:")][0][4:])
    assert "UNKNOWN:0" in out
    e = PrinterEmulator(str(tmp_path / "slip"), width=58, font="none", log=lambda m: None)
    e.feed(data)
    assert len(e.receipts) == 1
    rec = e.receipts[0]
    check_layout(rec, 32)
    return joined(rec)


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_an_agreeing_batch(mp, tmp_path, interp):
    t = slip(mp, tmp_path, {"batch": 7, "ts": TS, "date": "1204",
                            "totals": [[156, 3, 12345], [840, 1, 500]], "diffs": [], "diff_n": 0})
    for want in ("结算单 SETTLEMENT", "批次号 BATCH", "000007", "结算日期 SETTLEMENT DATE", "1204",
                 CFG["terminal_id"], CFG["merchant_id"], LOCAL, "退货笔数 REFUNDS (156)", "¥123.45 CNY",
                 "退货笔数 REFUNDS (840)", "对账平 TOTALS AGREE"):
        assert want in t, (want, t)
    assert "DIFFERENCES" not in t
    assert t.index("(156)") < t.index("(840)")  # currencies in order, not dict order


def test_differences_are_listed_by_rid_and_counted(mp, tmp_path):
    diffs = [["AB12-%06d" % i, "missing", None, 156] for i in range(45)]
    diffs[1] = ["AB12-000001", "amount", 999, 156]
    diffs[2] = ["XTRA-000007-156", "extra", None, 156]
    t = slip(mp, tmp_path, {"batch": 8, "ts": TS, "date": "1205", "totals": [[156, 44, 8800]],
                            "diffs": diffs, "diff_n": 47})
    assert "对账不平 DIFFERENCES (47)" in t and "TOTALS AGREE" not in t
    assert "AB12-000000" in t and "主机无 HOST MISSING" in t
    assert "金额不符 AMOUNT ¥9.99 CNY" in t and "XTRA-000007-156" in t and "仅主机有 HOST ONLY" in t
    assert "AB12-000039" in t and "AB12-000040" not in t  # 40 listed
    assert "7 more (explain RID)" in t
