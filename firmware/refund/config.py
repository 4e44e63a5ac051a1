# Terminal config: a JSON file on flash merged over the board's and these defaults,
# validated at boot. Every bad key is reported (all of them, in one ConfigError).
# Reference: docs/config.md. The MAC key never leaves this dict: use redacted(cfg)
# for logs and the service link.
import json
from binascii import unhexlify
from refund import staff as _staff
from refund.chars import digits, printable

PATH = "/flash/config.json"

DEFAULTS = {
    "merchant_name": "",
    "currency": 156,
    "printer_width": 58,
    "tz_min": 0,
    "pending_notice": True,
    "limits": {"max_live": 500, "max_amount": 5000000, "max_pending": 50000000,
               "low_water": 65536, "stale_s": 72 * 3600, "keep_n": 1000, "keep_s": 30 * 86400},
    "supervisor_above": 100000,
    "staff": [],
    "lockout_tries": 5,
    "lockout_s": 900,
    "duplicate_window_s": 86400,
    "bench": False,
    "host_link": {},
    "tech_key": "",  # technician key for the service link's privileged commands ("" = none)
    "evlog_cap": 262144,  # event log bytes on flash
    "evlog_segments": 8,
    "printer_baud": None,  # the printer's line rate; None: the board's (its UART role table)
    "printer": {},  # printer settings (refund.prlink.DEFAULTS keys)
    "settle_at": "",  # daily settlement at this local time "HH:MM" ("" = off)
}
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
REQUIRED = ("terminal_id", "merchant_id", "mac_key", "host")
KNOWN = REQUIRED + ("currencies",) + tuple(DEFAULTS)
LIMITS = ("max_live", "max_amount", "max_pending", "low_water", "stale_s", "keep_n", "keep_s")
_ZERO_OK = ("low_water", "keep_n")
_SECRET_WORDS = ("key", "secret", "pass", "pin", "hash", "salt", "token")

# Bench test staff (boards/unix/bench-config.json): never valid on a real board.
TEST_STAFF = (("01", "1234"), ("99", "9999"))


class ConfigError(Exception):
    """errors: list of "key: what is wrong" lines."""

    def __init__(self, errors):
        super().__init__("bad config: " + "; ".join(errors))
        self.errors = errors


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _ans(v, n, exact=True):
    # ISO 8583 "ans": printable ASCII
    return printable(v, n if exact else 1, n)


def _hex_bytes(v):
    if not isinstance(v, str) or len(v) % 2:
        return None
    try:
        return unhexlify(v)
    except ValueError:
        return None


def _int_in(errs, key, v, lo, hi):
    if not _is_int(v) or not lo <= v <= hi:
        errs.append("%s: must be an integer from %d to %d" % (key, lo, hi))
        return False
    return True


def merge(file_cfg, board_defaults=None):
    """defaults <- board defaults <- file. limits merge key by key."""
    c = {}
    for src in (DEFAULTS, board_defaults or {}, file_cfg):
        for k in src:
            v = src[k]
            if k == "limits" and isinstance(v, dict) and isinstance(c.get(k), dict):
                m = dict(c[k])
                for lk in v:
                    m[lk] = v[lk]
                v = m
            elif isinstance(v, dict):
                v = dict(v)
            elif isinstance(v, list):
                v = list(v)
            c[k] = v
    if "currencies" not in c and _is_int(c.get("currency")):
        c["currencies"] = [c["currency"]]
    return c


def _check_staff(errs, staff):
    if not isinstance(staff, list):
        errs.append("staff: must be a list of {id, role, salt, iterations, hash}")
        return
    seen = {}
    for i in range(len(staff)):
        e = staff[i]
        where = "staff[%d]" % i
        if not isinstance(e, dict):
            errs.append(where + ": must be an object")
            continue
        sid = e.get("id")
        if not printable(sid, 1, 8, b" ;="):
            errs.append(where + ".id: must be 1 to 8 printable characters (no ; =)")
        else:
            where = "staff[%d] (%s)" % (i, sid)
            if sid in seen:
                errs.append(where + ".id: duplicate")
            seen[sid] = 1
        if e.get("role") not in _staff.ROLES:
            errs.append(where + ".role: must be operator or supervisor")
        salt = _hex_bytes(e.get("salt"))
        if salt is None or len(salt) < 8:
            errs.append(where + ".salt: must be hex, at least 8 bytes")
        it = e.get("iterations")
        if not _is_int(it) or not 1 <= it <= 1000000:
            errs.append(where + ".iterations: must be an integer from 1 to 1000000")
        h = _hex_bytes(e.get("hash"))
        if h is None or len(h) != 32:
            errs.append(where + ".hash: must be 64 hex characters (PBKDF2-HMAC-SHA256)")
        if "pin" in e:
            errs.append(where + ": plain PINs are not accepted (use host_tools/staffhash)")
        for k in e:
            if k not in ("id", "role", "salt", "iterations", "hash", "pin", "name"):
                errs.append("%s.%s: unknown key" % (where, k))


def _check_printer(errs, baud, pr):
    if baud is not None and (not _is_int(baud) or baud not in BAUDS):
        errs.append("printer_baud: must be one of %s (the printer's line rate), or null for "
                    "the board's" % ", ".join(str(b) for b in BAUDS))
    if not isinstance(pr, dict):
        errs.append("printer: must be an object (printer settings)")
    elif pr:
        from refund.prlink import DEFAULTS as known  # only when there is something to check

        for k in sorted(pr):
            if k not in known:
                errs.append("printer.%s: unknown key" % k)
            elif not _is_int(pr[k]) or pr[k] < 1:
                errs.append("printer.%s: must be a positive integer" % k)


def validate(c, file_keys=None):
    """List of errors (empty when c is good). file_keys: keys that came from the file
    (only those are checked for being unknown; board defaults may add their own)."""
    errs = []
    for k in REQUIRED:
        if k not in c:
            errs.append("%s: missing" % k)
    for k in sorted(file_keys or ()):
        if k not in KNOWN and not k.startswith("_"):
            errs.append("%s: unknown key" % k)
    if "terminal_id" in c and not _ans(c["terminal_id"], 8):
        errs.append("terminal_id: must be 8 printable ASCII characters (ans8)")
    if "merchant_id" in c and not _ans(c["merchant_id"], 15):
        errs.append("merchant_id: must be 15 printable ASCII characters (ans15)")
    name = c.get("merchant_name")
    if not isinstance(name, str) or len(name) > 40 or "\n" in name or "\r" in name:
        errs.append("merchant_name: must be text of at most 40 characters on one line")
    if "mac_key" in c:
        key = _hex_bytes(c["mac_key"])
        if key is None or len(key) < 16:
            # never echo the value: it is the MAC key
            errs.append("mac_key: must be hex, at least 16 bytes (32 hex characters)")
    if "host" in c:
        h = c["host"]
        ok = isinstance(h, str) and ":" in h
        if ok:
            name, port = h.rsplit(":", 1)
            ok = bool(name) and " " not in name and 1 <= len(port) <= 5 and \
                ("0" <= port[0] <= "9")
            if ok:
                try:
                    ok = 1 <= int(port) <= 65535
                except ValueError:
                    ok = False
        if not ok:
            errs.append("host: must be \"HOST:PORT\" (port 1-65535)")
    cur_ok = _int_in(errs, "currency", c.get("currency"), 1, 999)
    cs = c.get("currencies")
    if not isinstance(cs, list) or not cs:
        errs.append("currencies: must be a non-empty list of ISO 4217 numeric codes")
    else:
        for x in cs:
            if not _is_int(x) or not 1 <= x <= 999:
                # an integer is echoed, anything else not: it may be a key pasted here
                errs.append("currencies: %s is not an ISO 4217 numeric code"
                            % (x if _is_int(x) else "a " + type(x).__name__))
                break
        else:
            if cur_ok and c["currency"] not in cs:
                errs.append("currencies: must include currency %d" % c["currency"])
    if c.get("printer_width") not in (58, 80) or isinstance(c.get("printer_width"), bool):
        errs.append("printer_width: must be 58 or 80 (mm)")
    _int_in(errs, "tz_min", c.get("tz_min"), -720, 840)
    for k in ("pending_notice", "bench"):
        if not isinstance(c.get(k), bool):
            errs.append("%s: must be true or false" % k)
    lim = c.get("limits")
    if not isinstance(lim, dict):
        errs.append("limits: must be an object {%s}" % ", ".join(LIMITS))
    else:
        for k in LIMITS:
            if k not in lim:
                errs.append("limits.%s: missing" % k)
            elif not _is_int(lim[k]) or lim[k] < (0 if k in _ZERO_OK else 1):
                errs.append("limits.%s: must be a %s integer" % (k, "non-negative" if k in _ZERO_OK
                                                                  else "positive"))
        for k in sorted(lim):
            if k not in LIMITS:
                errs.append("limits.%s: unknown key" % k)
        if _is_int(lim.get("max_amount")) and lim["max_amount"] > 2147483647:
            errs.append("limits.max_amount: must be below 2**31 (minor units)")
        if _is_int(lim.get("max_amount")) and _is_int(lim.get("max_pending")) and \
                lim["max_pending"] < lim["max_amount"]:
            errs.append("limits.max_pending: must be at least limits.max_amount")
    _int_in(errs, "supervisor_above", c.get("supervisor_above"), 0, 10 ** 15)
    _check_staff(errs, c.get("staff"))
    _int_in(errs, "lockout_tries", c.get("lockout_tries"), 1, 100)
    _int_in(errs, "lockout_s", c.get("lockout_s"), 1, 7 * 86400)
    _int_in(errs, "duplicate_window_s", c.get("duplicate_window_s"), 0, 31 * 86400)
    if not isinstance(c.get("host_link"), dict):
        errs.append("host_link: must be an object (sender settings)")
    tk = c.get("tech_key")
    if tk != "":
        key = _hex_bytes(tk)
        if key is None or len(key) < 16:
            errs.append("tech_key: must be hex, at least 16 bytes (32 hex characters), or \"\"")
    _check_printer(errs, c.get("printer_baud"), c.get("printer"))
    _int_in(errs, "evlog_cap", c.get("evlog_cap"), 16384, 16 * 1024 * 1024)
    _int_in(errs, "evlog_segments", c.get("evlog_segments"), 2, 64)
    try:
        settle_minutes(c.get("settle_at"))
    except ValueError:
        errs.append("settle_at: must be a local time \"HH:MM\" (00:00 to 23:59) or \"\" (off)")
    return errs


def settle_minutes(v):
    """settle_at "HH:MM" -> minutes after local midnight; None for "" (off); ValueError."""
    if v == "":
        return None
    if not isinstance(v, str) or len(v) != 5 or v[2:3] != ":" or not digits(v[:2] + v[3:], 4, 4):
        raise ValueError("settle_at")
    h, m = int(v[:2]), int(v[3:])
    if h > 23 or m > 59:
        raise ValueError("settle_at")
    return h * 60 + m


def from_dict(file_cfg, board_defaults=None):
    """Merge + validate; the config dict or ConfigError."""
    if not isinstance(file_cfg, dict):
        raise ConfigError(["config: must be a JSON object"])
    c = merge(file_cfg, board_defaults)
    errs = validate(c, file_cfg.keys())
    if errs:
        raise ConfigError(errs)
    for k in list(c):
        if k.startswith("_"):
            del c[k]  # comments
    return c


def load(path=PATH, board_defaults=None):
    """Read the JSON config at path, merged over board_defaults and DEFAULTS."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(["config: cannot read %s (%s)" % (path, e)])
    except UnicodeError:  # the boot catches ConfigError only
        raise ConfigError(["config: %s is not UTF-8 text" % path])
    except MemoryError:
        raise ConfigError(["config: %s is too large for the heap" % path])
    try:
        d = json.loads(text)
    except ValueError:
        raise ConfigError(["config: %s is not valid JSON" % path])
    except MemoryError:
        text = None
        raise ConfigError(["config: %s is too large for the heap" % path])
    return from_dict(d, board_defaults)


def _secret(k):
    k = k.lower()
    for w in _SECRET_WORDS:
        if w in k:
            return True
    return False


def redacted(v):
    """Copy of a config (or any part of one) safe for logs and the service link: every
    value under a key naming a secret (mac_key, salts, hashes, ...) is replaced."""
    if isinstance(v, dict):
        out = {}
        for k in v:
            out[k] = "***" if _secret(k) else redacted(v[k])
        return out
    if isinstance(v, (list, tuple)):
        return [redacted(x) for x in v]
    return v


def test_credentials(c):
    """True if the bench test staff (operator 01 PIN 1234, supervisor 99 PIN 9999) can
    log in with this config: a real board must then refuse refunds."""
    for e in c.get("staff") or ():
        for sid, pin in TEST_STAFF:
            if isinstance(e, dict) and e.get("id") == sid and _staff.matches(e, pin):
                return True
    return False
