# Refund terminal firmware (MicroPython). Core modules get every piece of
# hardware from the board HAL object they are handed; none imports machine.
VERSION = "0.1.0"


def settings(defaults, given, what):
    """defaults overlaid with given (a dict or None); a key defaults lacks is an error,
    so a typo never falls back to a default silently."""
    c = dict(defaults)
    if given:
        for k in given:
            if k not in c:
                raise ValueError("unknown %s setting %r" % (what, k))
            c[k] = given[k]
    return c
