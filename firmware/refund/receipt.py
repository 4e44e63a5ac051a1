# Receipt composer: refund receipt (two copies), decline slip, pending notice,
# reprint, queue report, as ESC/POS bytes for a 58 mm (32 columns) or 80 mm
# (48 columns) thermal printer. Every composer is a generator of bytes chunks (about
# a line each) so a driver can stream them under XON/XOFF; render() joins them.
#
# A refund is a plain dict (the outbox's record):
#   rid       str  refund id, unique on the terminal
#   stan      int  system trace audit number (printed as 6 digits; str kept as is)
#   amount    int  amount in MINOR units of `currency` (1234 with 156 = ¥12.34 CNY);
#                  never a float: a float raises TypeError
#   currency  int  ISO 4217 numeric (156 CNY, 840 USD, 978 EUR, 392 JPY, see CURRENCIES)
#   orrn      str  retrieval reference number of the original purchase
#   rrn       str  RRN the host gave the refund
#   auth      str  authorization code ("" when the host gave none)
#   operator  str  operator (cashier) id
#   ts        int  time of the refund, Unix epoch seconds (UTC); printed in cfg tz
#   state     str  "approved", "printed", "pending", "declined", ...
#   code      str  host response code ("00" approved; the decline code otherwise)
#   pan       str  optional card number: always masked (first 6, last 4)
# Missing optional fields print as "-".
#
# Terminal config (dict): merchant_name, merchant_id, terminal_id, printer_width
# (58 or 80, default 58), tz_min (local time offset in minutes, default 0; 480 for
# China).
#
# Chinese text goes out in GB18030 double-byte mode through refund.gbk (table built
# by host_tools/gbtable.py from the string constants of THIS file plus the merchant
# name): a character outside the table prints as "?" and is logged.
from micropython import const
from refund import escpos as P
from refund import gbk
from refund.chars import cp_at, seqlen

_COLS_58 = const(32)
_COLS_80 = const(48)
_QR_MODULE_58 = const(4)
_QR_MODULE_80 = const(6)
_TAIL_FEED = const(4)
_REPORT_LINES = const(40)  # queue report: entries listed one per line (the rest counted)

# ISO 4217 numeric -> (alpha, symbol, minor unit exponent)
CURRENCIES = {
    156: ("CNY", "¥", 2),
    344: ("HKD", "HK$", 2),
    446: ("MOP", "MOP$", 2),
    901: ("TWD", "NT$", 2),
    840: ("USD", "$", 2),
    978: ("EUR", "€", 2),
    826: ("GBP", "£", 2),
    392: ("JPY", "¥", 0),
    410: ("KRW", "", 0),
    702: ("SGD", "S$", 2),
    36: ("AUD", "A$", 2),
    124: ("CAD", "C$", 2),
    48: ("BHD", "", 3),
    414: ("KWD", "", 3),
}

# Host response codes (ISO 8583 / CUP usage) -> (Chinese, English)
DECLINE_CODES = {
    "01": ("请联系发卡行", "REFER TO CARD ISSUER"),
    "03": ("无效商户", "INVALID MERCHANT"),
    "05": ("不予承兑", "DO NOT HONOUR"),
    "12": ("无效交易", "INVALID TRANSACTION"),
    "13": ("无效金额", "INVALID AMOUNT"),
    "14": ("无效卡号", "INVALID CARD NUMBER"),
    "25": ("找不到原始交易", "ORIGINAL NOT FOUND"),
    "30": ("报文格式错误", "FORMAT ERROR"),
    "40": ("不支持的交易", "FUNCTION NOT SUPPORTED"),
    "51": ("余额不足", "INSUFFICIENT FUNDS"),
    "54": ("卡已过期", "EXPIRED CARD"),
    "57": ("不允许持卡人进行此交易", "NOT PERMITTED TO CARDHOLDER"),
    "58": ("不允许终端进行此交易", "NOT PERMITTED TO TERMINAL"),
    "61": ("超出金额限制", "EXCEEDS AMOUNT LIMIT"),
    "64": ("原始金额不符", "ORIGINAL AMOUNT INCORRECT"),
    "91": ("发卡行不能操作", "ISSUER UNAVAILABLE"),
    "94": ("重复交易", "DUPLICATE TRANSMISSION"),
    "96": ("系统故障", "SYSTEM MALFUNCTION"),
    "A0": ("校验错", "MAC ERROR"),
}
_UNKNOWN_CODE = ("未知应答码", "UNKNOWN RESPONSE CODE")

_COPIES = (("商户存根", "MERCHANT COPY"), ("持卡人存根", "CARDHOLDER COPY"))
_REFUND = "退货 REFUND"
_APPROVED = "批准 APPROVED"
REPRINT = _REPRINT = "重打印 REPRINT"
_PENDING = "退款处理中 REFUND PENDING"
_NOT_RECEIPT = "— NOT A REFUND RECEIPT —"
_NOT_RECEIPT_CN = "本单不是退款凭证"
_DECLINED = "退货失败 REFUND DECLINED"
_NOT_APPROVED = "未批准 NOT APPROVED"
_QUEUE = "退款队列报告 REFUND QUEUE REPORT"


# ---- formatting -----------------------------------------------------------------
def columns(cfg):
    return _COLS_80 if cfg.get("printer_width", 58) == 80 else _COLS_58


def _digits(s, n):
    s = str(s)
    return "0" * (n - len(s)) + s if len(s) < n else s


def money(amount, currency):
    """'¥12.34 CNY' from integer minor units; integer arithmetic only."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError("amount must be an int of minor units, got %r" % (amount,))
    c = CURRENCIES.get(currency)
    sign = "-" if amount < 0 else ""
    a = -amount if amount < 0 else amount
    if c is None:
        # Unknown exponent: print exactly what we hold rather than guess a decimal point.
        return "%s%d (minor units) ISO %s" % (sign, a, _digits(currency, 3))
    alpha, sym, exp = c
    if exp == 0:
        s = str(a)
    else:
        unit = 10 ** exp
        s = "%d.%s" % (a // unit, _digits(a % unit, exp))
    return sign + sym + s + " " + alpha


def civil(ts):
    """(year, month, day, hour, minute, second) from Unix seconds, any port's epoch."""
    days, sec = divmod(int(ts), 86400)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    return y, m, d, sec // 3600, (sec // 60) % 60, sec % 60


def datetime(ts, cfg):
    y, mo, d, h, mi, s = civil(int(ts) + 60 * cfg.get("tz_min", 0))
    return "%04d-%02d-%02d %02d:%02d:%02d" % (y, mo, d, h, mi, s)


def age(seconds):
    seconds = max(0, int(seconds))
    d, r = divmod(seconds, 86400)
    h, r = divmod(r, 3600)
    m, s = divmod(r, 60)
    t = "%02d:%02d:%02d" % (h, m, s)
    return ("%dd %s" % (d, t)) if d else t


def mask_pan(pan):
    """First 6 and last 4 digits; never the whole number."""
    p = bytes([c for c in str(pan).encode() if 0x30 <= c <= 0x39]).decode()
    if len(p) < 13:
        return "*" * max(0, len(p) - 4) + p[-4:]
    return p[:6] + "*" * (len(p) - 10) + p[-4:]


def field(r, key):
    v = r.get(key)
    if v is None or v == "":
        return "-"
    return str(v)


def _stan(r):
    v = r.get("stan")
    if isinstance(v, int):
        return _digits(v, 6)
    return field(r, "stan")


def wrap(text, width):
    """Lines of at most `width` columns; breaks at a space in the second half of a
    line, else mid-word. Nothing is dropped. Walks the UTF-8 bytes (refund/chars.py)."""
    b = text.encode()
    out = []
    s = 0  # byte offset where the line starts
    nch = 0  # characters in the line
    w = 0  # its columns
    sp = -1  # byte offset of its last space, and that space's index and columns
    spc = spw = 0
    i = 0
    while i < len(b):
        k = seqlen(b[i])
        cw = gbk.cp_cols(cp_at(b, i))
        if w + cw > width and nch:
            if sp > s and spc >= nch // 2:
                out.append(b[s:sp].decode())
                s = sp + 1
                nch -= spc + 1
                w -= spw + 1
            else:
                out.append(b[s:i].decode())
                s = i
                nch = w = 0
            sp = -1
            if not nch and b[i] == 0x20:
                i += 1
                s = i
                continue
        if b[i] == 0x20:
            sp, spc, spw = i, nch, w
        nch += 1
        w += cw
        i += k
    if nch or not out:
        out.append(b[s:].decode())
    return out


def kv(label, value, cols):
    """'label      value' on one line when it fits, else the label, then the value
    right-aligned (wrapped if longer than a line)."""
    value = str(value)
    lw = gbk.cols(label)
    vw = gbk.cols(value)
    if lw + 1 + vw <= cols:
        return [label + " " * (cols - lw - vw) + value]
    out = wrap(label, cols)
    for part in wrap(value, cols):
        out.append(" " * (cols - gbk.cols(part)) + part)
    return out


# ---- byte helpers (also used by refund.settleslip) ----------------------------
def _lines(lines):
    b = bytearray()
    for s in lines:
        b.extend(gbk.encode(s))
        b.extend(P.LF)
    return bytes(b)


def styled(text, cols, w=1, h=1, strong=False, where=P.ALIGN_CENTER):
    b = P.align(where) + P.size(w, h) + P.bold(strong)
    b += _lines(wrap(text, cols // w))
    return b + P.size(1, 1) + P.bold(False) + P.align(P.ALIGN_LEFT)


def rule(cols, ch="-"):
    return _lines((ch * cols,))


def kv_bytes(label, value, cols):
    return _lines(kv(label, value, cols))


def tail():
    return P.feed(_TAIL_FEED) + P.CUT


def ids(cfg, cols):
    """The merchant and terminal numbers, as every slip prints them."""
    return (kv_bytes("商户编号 MERCHANT NO.", field(cfg, "merchant_id"), cols)
            + kv_bytes("终端编号 TERMINAL NO.", field(cfg, "terminal_id"), cols))


def head(cfg, cols):
    return P.START + styled(cfg.get("merchant_name") or "-", cols, 2, 2, True)


# ---- refund receipt -------------------------------------------------------------
def refund(r, cfg, reprint=False):
    """Both copies of the receipt of an APPROVED refund. A refund already printed is
    composed only as a reprint: an original never comes out twice."""
    state = r.get("state")
    if state not in ("approved", "printed"):
        raise ValueError("no refund receipt for a refund in state %r" % (state,))
    if state == "printed" and not reprint:
        raise ValueError("refund %s already printed: only a REPRINT" % r.get("rid"))
    amount = money(r["amount"], r["currency"])  # validates before any byte goes out
    for cn, en in _COPIES:
        yield from _refund_copy(r, cfg, cn + " " + en, amount, reprint)


def _refund_copy(r, cfg, copy, amount, reprint):
    cols = columns(cfg)
    yield head(cfg, cols)
    if reprint:
        yield styled(_REPRINT, cols, 2, 2, True)
    yield styled(copy, cols)
    yield styled(_REFUND, cols, 1, 2, True)
    yield rule(cols)
    yield ids(cfg, cols)
    yield kv_bytes("操作员 OPERATOR", field(r, "operator"), cols)
    if r.get("pan"):
        yield kv_bytes("卡号 CARD NO.", mask_pan(r["pan"]), cols)
    yield kv_bytes("交易类型 TYPE", _REFUND, cols)
    yield kv_bytes("日期时间 DATE/TIME", datetime(r.get("ts", 0), cfg), cols)
    yield kv_bytes("凭证号 STAN", _stan(r), cols)
    yield kv_bytes("授权码 AUTH CODE", field(r, "auth"), cols)
    yield kv_bytes("原参考号 ORIG RRN", field(r, "orrn"), cols)
    yield kv_bytes("参考号 RRN", field(r, "rrn"), cols)
    yield kv_bytes("退款编号 RID", field(r, "rid"), cols)
    yield rule(cols)
    yield _lines(("金额 AMOUNT",))
    yield styled(amount, cols, 1, 2, True, P.ALIGN_RIGHT)
    yield rule(cols)
    yield styled(_APPROVED, cols, 1, 1, True)
    yield P.align(P.ALIGN_CENTER) + P.qr(qr_payload(r), _QR_MODULE_80 if cols == _COLS_80 else _QR_MODULE_58) + P.LF + P.align(P.ALIGN_LEFT)
    if copy.startswith(_COPIES[0][0]):
        yield _lines(("持卡人签名 CARDHOLDER SIGNATURE", "", "_" * cols))
    if reprint:
        yield styled(_REPRINT, cols, 1, 1, True)
    yield tail()


def qr_payload(r):
    return "rid=%s;rrn=%s" % (field(r, "rid"), field(r, "rrn"))


# ---- decline slip, pending notice ----------------------------------------------
def decline(r, cfg):
    """One slip for a refund the host declined: code and meaning, clearly no receipt."""
    if r.get("state") in ("approved", "printed"):
        raise ValueError("refund %s is approved: no decline slip" % r.get("rid"))
    cols = columns(cfg)
    code = field(r, "code")
    cn, en = DECLINE_CODES.get(code, _UNKNOWN_CODE)
    yield head(cfg, cols)
    yield styled(_DECLINED, cols, 1, 2, True)
    yield rule(cols)
    yield ids(cfg, cols)
    yield kv_bytes("操作员 OPERATOR", field(r, "operator"), cols)
    yield kv_bytes("日期时间 DATE/TIME", datetime(r.get("ts", 0), cfg), cols)
    yield kv_bytes("退款编号 RID", field(r, "rid"), cols)
    yield kv_bytes("凭证号 STAN", _stan(r), cols)
    yield kv_bytes("原参考号 ORIG RRN", field(r, "orrn"), cols)
    yield kv_bytes("金额 AMOUNT", money(r["amount"], r["currency"]), cols)
    yield rule(cols)
    yield kv_bytes("应答码 RESPONSE CODE", code, cols)
    yield _lines(wrap(cn + " " + en, cols))
    yield rule(cols)
    yield styled(_NOT_APPROVED, cols, 1, 2, True)
    yield styled(_NOT_RECEIPT_CN, cols)
    yield styled(_NOT_RECEIPT, cols)
    yield tail()


def pending_notice(r, cfg):
    """Notice for a refund sent but not yet answered (optional by config)."""
    if r.get("state") in ("approved", "printed", "declined"):
        raise ValueError("refund %s is final (%s): no pending notice" % (r.get("rid"), r.get("state")))
    cols = columns(cfg)
    yield head(cfg, cols)
    yield styled(_PENDING, cols, 1, 2, True)
    yield styled(_NOT_RECEIPT, cols, 1, 1, True)
    yield styled(_NOT_RECEIPT_CN, cols)
    yield rule(cols)
    yield kv_bytes("退款编号 RID", field(r, "rid"), cols)
    yield ids(cfg, cols)
    yield kv_bytes("日期时间 DATE/TIME", datetime(r.get("ts", 0), cfg), cols)
    yield kv_bytes("原参考号 ORIG RRN", field(r, "orrn"), cols)
    yield kv_bytes("金额 AMOUNT", money(r["amount"], r["currency"]), cols)
    yield rule(cols)
    yield _lines(wrap("结果待定, 请稍后查询 RESULT NOT YET KNOWN, DO NOT REPEAT THE REFUND", cols))
    yield tail()


# ---- queue report ---------------------------------------------------------------
def queue_report(entries, cfg, now, max_lines=_REPORT_LINES):
    """Staff report of the live outbox entries: per state, totals per currency, oldest
    age, then one line per entry for the oldest max_lines (and how many more).
    entries: dicts (rid, state, amount, currency, ts), oldest first, iterated twice: a
    list, or an object whose __iter__ reads the outbox again, so RAM holds one entry."""
    cols = columns(cfg)
    states = {}
    totals = {}
    oldest = None
    count = 0
    for e in entries:
        count += 1
        s = e.get("state") or "-"
        states[s] = states.get(s, 0) + 1
        cur = e.get("currency")
        n, total = totals.get(cur, (0, 0))
        amt = e.get("amount", 0)
        if not isinstance(amt, int):
            raise TypeError("amount must be int minor units")
        totals[cur] = (n + 1, total + amt)
        ts = e.get("ts")
        if ts is not None and (oldest is None or ts < oldest):
            oldest = ts
    yield head(cfg, cols)
    yield styled(_QUEUE, cols, 1, 2, True)
    yield rule(cols)
    yield kv_bytes("终端编号 TERMINAL NO.", field(cfg, "terminal_id"), cols)
    yield kv_bytes("日期时间 DATE/TIME", datetime(now, cfg), cols)
    yield kv_bytes("条目 LIVE ENTRIES", count, cols)
    for s in sorted(states):  # dicts have no order on MicroPython: sort
        yield kv_bytes("  " + s, states[s], cols)
    for cur in sorted(totals, key=lambda c: -1 if c is None else c):
        n, total = totals[cur]
        yield kv_bytes("合计 TOTAL (%d)" % n, money(total, cur) if cur is not None else "%d" % total, cols)
    yield kv_bytes("最早 OLDEST AGE", age(now - oldest) if oldest is not None else "-", cols)
    yield rule(cols)
    shown = 0
    for e in entries:
        if shown >= max_lines:
            break
        amt = money(e.get("amount", 0), e.get("currency"))
        yield _lines(kv(field(e, "rid") + " " + field(e, "state"), amt, cols))
        shown += 1
    if count > shown:
        yield _lines(wrap("... %d more (oldest %d shown; LIST has all)" % (count - shown, shown), cols))
    yield rule(cols)
    yield tail()


def render(gen):
    """All chunks of a composer as one bytes object (tests, small slips)."""
    b = bytearray()
    for chunk in gen:
        b.extend(chunk)
    return bytes(b)
