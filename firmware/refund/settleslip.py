# The settlement slip (issue 13, docs/host-link.md "Settlement"): printed once a batch is
# closed by the host's last 0510 `00`. Bilingual like the receipts; per currency the
# count and total the host agreed to, the host's settlement date, and after a batch
# upload every difference by rid, marked so that nobody takes the slip for "all well".
from micropython import const
from refund import receipt as RC

_DIFF_LINES = const(40)  # differences listed one per line (the rest counted)

_TITLE = "结算单 SETTLEMENT"
_AGREE = "对账平 TOTALS AGREE"
_DIFFS = "对账不平 DIFFERENCES"
# host=missing | host=amount:N (from 0330) | extra (only the host has it, from 0510)
_WHAT = {"missing": "主机无 HOST MISSING", "amount": "金额不符 AMOUNT", "extra": "仅主机有 HOST ONLY"}


def settlement(s, cfg):
    """s: {"batch": int, "ts": UTC s closed, "date": host MMDD or "", "totals":
    [(currency, count, total minor units), ...] (as closed), "diffs": [(rid, what,
    host amount or None, currency)], "diff_n": differences in all (diffs may hold
    fewer), "again": a copy after one cut short (marked REPRINT)}. Yields ESC/POS chunks."""
    cols = RC.columns(cfg)
    diffs = s.get("diffs") or ()
    n = max(s.get("diff_n", 0), len(diffs))
    yield RC.head(cfg, cols)
    yield RC.styled(_TITLE, cols, 1, 2, True)
    if s.get("again"):
        yield RC.styled(RC.REPRINT, cols, 1, 1, True)  # the first copy was cut short
    yield RC.rule(cols)
    yield RC.ids(cfg, cols)
    yield RC.kv_bytes("批次号 BATCH", "%06d" % s["batch"], cols)
    yield RC.kv_bytes("日期时间 DATE/TIME", RC.datetime(s.get("ts", 0), cfg), cols)
    yield RC.kv_bytes("结算日期 SETTLEMENT DATE", s.get("date") or "-", cols)
    yield RC.rule(cols)
    totals = sorted(s.get("totals") or ())
    if not totals:
        yield RC.kv_bytes("退货笔数 REFUNDS", 0, cols)
    for cur, count, total in totals:
        if not isinstance(total, int):
            raise TypeError("total must be int minor units")
        yield RC.kv_bytes("退货笔数 REFUNDS (%03d)" % cur, count, cols)
        yield RC.kv_bytes("退货金额 TOTAL", RC.money(total, cur), cols)
    yield RC.rule(cols)
    if not n:
        yield RC.styled(_AGREE, cols, 1, 2, True)
    else:
        yield RC.styled("%s (%d)" % (_DIFFS, n), cols, 1, 2, True)
        shown = 0
        for rid, what, amount, cur in diffs:
            if shown >= _DIFF_LINES:
                break
            label = _WHAT.get(what, what)
            if what == "amount" and amount is not None:
                label += " " + RC.money(amount, cur)
            yield RC.kv_bytes("* " + rid, label, cols)
            shown += 1
        if n > shown:
            yield RC.kv_bytes("...", "%d more (explain RID)" % (n - shown), cols)
    yield RC.tail()
