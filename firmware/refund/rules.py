# What a refund must be, checked in one place: the ECR intake applies these before it
# asks staff for anything, and the outbox applies them again to whatever calls it (a
# tool, a test, the REPL). Each raises errors.Refused with its reason code.
from refund.chars import alnum, printable
from refund.errors import Refused
from refund.record import STR_MAX


def positive(amount):
    """amount: minor units, an int above zero."""
    if not isinstance(amount, int) or amount <= 0:
        raise Refused("bad_amount", "amount must be a positive integer in minor units")


def within(amount, most):
    """The per-refund cap (limits.max_amount)."""
    if amount > most:
        raise Refused("amount_limit", "amount %d above the per-refund limit %d" % (amount, most))


def currency(c):
    """ISO 4217 numeric: 1..999."""
    if not isinstance(c, int) or not 0 < c < 1000:
        raise Refused("bad_currency", "currency must be an ISO 4217 numeric code")


def orrn(s):
    """The original purchase's RRN: 12 ASCII letters or digits."""
    if not alnum(s, 12):
        raise Refused("bad_orrn", "original RRN must be 12 letters or digits")


def field(k, v):
    """op, sup, ecr: at most their record length of printable ASCII, no ; or = (they go
    into field 62 as key=value;...)."""
    if not printable(v, 0, STR_MAX[k], b";="):
        raise Refused("bad_" + k, "%s must be at most %d printable characters" % (k, STR_MAX[k]))
