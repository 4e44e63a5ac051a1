# Refund terminal firmware (MicroPython). Core modules get every piece of
# hardware from the board HAL object they are handed; none imports machine.
VERSION = "0.1.0"


def zeros(typecode, n):
    """array(typecode) of n zeros in one allocation: array(tc, bytes(k)) would first
    allocate a temporary of the same size, which a fragmented board heap may not have."""
    from array import array

    a = array(typecode, range(n))  # sized from len(range): no temporary
    for i in range(n):
        a[i] = 0
    return a


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
