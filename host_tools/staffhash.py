"""Make a staff entry for the terminal config (firmware/refund/staff.py).

  python -m host_tools.staffhash --id 01 --role operator --pin 1234 [--iterations 2000]
                                 [--salt HEX]

prints one JSON object {"id", "role", "salt", "iterations", "hash"} to paste into the
config's "staff" list. hash = PBKDF2-HMAC-SHA256(PIN, salt, iterations, 32 bytes). The
PIN itself is never written anywhere. --pin - reads the PIN from stdin (keeps it out of
the shell history and the process list).
"""
import argparse
import hashlib
import json
import os
import sys

ITERATIONS = 2000  # = refund.staff.ITERATIONS (11 ms on the unix port)
ROLES = ("operator", "supervisor")


def entry(sid, role, pin, iterations=ITERATIONS, salt=None):
    if role not in ROLES:
        raise ValueError("role must be operator or supervisor")
    if not (isinstance(pin, str) and pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise ValueError("a PIN is 4 to 12 digits")
    if not (isinstance(sid, str) and 0 < len(sid) <= 8 and sid.isascii() and sid.isprintable()
            and " " not in sid and ";" not in sid and "=" not in sid):
        raise ValueError("a staff id is 1 to 8 printable characters (no space ; =)")
    salt = os.urandom(16) if salt is None else salt
    h = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations, 32)
    return {"id": sid, "role": role, "salt": salt.hex(), "iterations": iterations, "hash": h.hex()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="staffhash", description=__doc__.split("\n\n")[0])
    p.add_argument("--id", required=True)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--pin", required=True, help="4-12 digits, or - to read it from stdin")
    p.add_argument("--iterations", type=int, default=ITERATIONS)
    p.add_argument("--salt", help="hex (default: 16 random bytes)")
    a = p.parse_args(argv)
    pin = sys.stdin.readline().strip() if a.pin == "-" else a.pin
    try:
        salt = bytes.fromhex(a.salt) if a.salt else None
        if salt is not None and len(salt) < 8:
            raise ValueError("salt must be at least 8 bytes")
        if not 1 <= a.iterations <= 1000000:
            raise ValueError("iterations must be 1..1000000")
        e = entry(a.id, a.role, pin, a.iterations, salt)
    except ValueError as err:
        p.error(str(err))
    print(json.dumps(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
