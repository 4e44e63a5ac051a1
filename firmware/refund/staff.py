# Staff: operators and supervisors, their PINs and the lockout after wrong PINs.
# The config holds for each one: id, role, salt (hex), iterations, hash (hex) =
# PBKDF2-HMAC-SHA256(PIN, salt, iterations, 32 bytes); never a PIN.
# host_tools/staffhash.py makes entries. PINs are never logged or stored.
# Lockout: `tries` wrong PINs in a row lock that id for `lock_s` seconds. The counters
# live in a small file on flash (atomic rename), so a reboot does not reset them.
import os
import json
from binascii import unhexlify
from micropython import const
from refund.mac import Mac, equal
from refund.errors import Refused
from refund.chars import digits, printable

OPERATOR = "operator"
SUPERVISOR = "supervisor"
ROLES = (OPERATOR, SUPERVISOR)
# 2000 iterations: 11 ms on the unix port (x86-64); expect ~0.3-0.5 s on an ESP32.
# A 4-digit PIN space is small whatever the count: the lockout is the real defence.
ITERATIONS = const(2000)
PIN_MIN = const(4)
PIN_MAX = const(12)
_DKLEN = const(32)


def _b(s):
    return s.encode() if isinstance(s, str) else bytes(s)


def pbkdf2(pin, salt, iterations, dklen=_DKLEN):
    """PBKDF2-HMAC-SHA256 (RFC 8018) -> dklen bytes; = CPython hashlib.pbkdf2_hmac."""
    m = Mac(_b(pin))
    salt = _b(salt)
    out = b""
    block = 1
    while len(out) < dklen:
        u = m.hmac(salt + bytes((block >> 24, (block >> 16) & 255, (block >> 8) & 255, block & 255)))
        acc = int.from_bytes(u, "big")
        for _ in range(iterations - 1):
            u = m.hmac(u)
            acc ^= int.from_bytes(u, "big")
        out += acc.to_bytes(32, "big")
        block += 1
    return out[:dklen]


def pin_ok(pin):
    return digits(pin, PIN_MIN, PIN_MAX)


def matches(entry, pin):
    """True if pin is this config staff entry's PIN (no lockout bookkeeping)."""
    try:
        want = unhexlify(entry["hash"])
        got = pbkdf2(pin, unhexlify(entry["salt"]), entry["iterations"], len(want))
    except (KeyError, ValueError, TypeError):
        return False
    return equal(got, want)


class Staff:
    """Staff(cfg, path, log, now): cfg is the terminal config (its "staff" list,
    "lockout_tries", "lockout_s"); path the lockout file (None: RAM only); now() UTC s."""

    def __init__(self, cfg, path, log, now):
        self._by_id = {}
        for e in cfg.get("staff") or ():
            self._by_id[e["id"]] = e
        self.path = path
        self.now = now
        self.log = log
        self.tries = cfg.get("lockout_tries", 5)
        self.lock_s = cfg.get("lockout_s", 900)
        self._st = {}  # id -> [wrong PINs in a row, locked until (UTC s)]
        self._load()

    def __repr__(self):
        return "<Staff %d>" % len(self._by_id)

    def role(self, sid):
        e = self._by_id.get(sid)
        return e["role"] if e else None

    # ---- lockout state on flash --------------------------------------------------

    def _load(self):
        if not self.path:
            return
        try:
            with open(self.path) as f:
                d = json.load(f)
            for k in d:
                v = d[k]
                self._st[k] = [int(v[0]), int(v[1])]
        except OSError:
            pass  # no file: nobody has a wrong PIN
        except (ValueError, TypeError, IndexError, KeyError):
            self.log("staff", "lockout file unreadable: counters start again", level="WARN")

    def _save(self):
        if not self.path:
            return
        d = {}
        for k in self._st:
            if self._st[k][0] or self._st[k][1]:
                d[k] = self._st[k]
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(d))
            os.rename(tmp, self.path)
        except OSError as e:
            # Still enforced in RAM; only a reboot would forget it.
            self.log("staff", "cannot save lockout counters: %s" % e, level="ERROR")

    def locked(self, sid):
        """Seconds left on sid's lock, 0 if not locked."""
        st = self._st.get(sid)
        if not st or not st[1]:
            return 0
        now = self.now()
        left = st[1] - now
        if left > self.lock_s:
            # The clock went back (RTC reset): never lock for longer than lock_s.
            st[1] = now + self.lock_s
            self._save()
            left = self.lock_s
        if left <= 0:
            self._st[sid] = [0, 0]  # lock over: a fresh set of tries
            self._save()
            return 0
        return left

    def unlock(self, sid):
        if sid in self._st:
            del self._st[sid]
            self._save()

    # ---- checks --------------------------------------------------------------------

    def check(self, sid, pin, need_role=OPERATOR):
        """Raise Refused(unknown_staff | bad_pin | locked | not_supervisor) unless sid's
        PIN is pin and sid has need_role (a supervisor may also act as an operator).
        The wrong PIN that locks an id is still answered bad_pin (its text says the id
        is now locked); every attempt while locked is answered locked."""
        e = self._by_id.get(sid) if isinstance(sid, str) else None
        if e is None:
            raise Refused("unknown_staff", "staff id %s is not configured" % _shown(sid))
        left = self.locked(sid)
        if left:
            raise Refused("locked", "staff %s is locked for %d s after %d wrong PINs"
                          % (sid, left, self.tries))
        if not pin_ok(pin):
            raise Refused("bad_pin", "a PIN is %d to %d digits" % (PIN_MIN, PIN_MAX))
        if not matches(e, pin):
            st = self._st.get(sid) or [0, 0]
            st[0] += 1
            if st[0] >= self.tries:
                st[1] = self.now() + self.lock_s
                self._st[sid] = st
                self._save()
                self.log("staff", "staff %s locked for %d s after %d wrong PINs"
                         % (sid, self.lock_s, st[0]), level="WARN")
                raise Refused("bad_pin", "wrong PIN: staff %s is now locked for %d s"
                              % (sid, self.lock_s))
            self._st[sid] = st
            self._save()
            self.log("staff", "wrong PIN for staff %s (%d of %d)" % (sid, st[0], self.tries), level="WARN")
            raise Refused("bad_pin", "wrong PIN for staff %s (%d tries left)"
                          % (sid, self.tries - st[0]))
        if sid in self._st:
            del self._st[sid]
            self._save()
        if need_role == SUPERVISOR and e["role"] != SUPERVISOR:
            raise Refused("not_supervisor", "staff %s is not a supervisor" % sid)
        return e["role"]

    def verify(self, sid, pin, need_role=OPERATOR):
        """"ok" or the refusal code (see check)."""
        try:
            self.check(sid, pin, need_role)
            return "ok"
        except Refused as r:
            return r.code


def _shown(sid):
    # An id from the ECR is shown in a refusal text: printable and short only.
    s = str(sid)[:8]
    return s if printable(s, forbid=b" ") else "?"
