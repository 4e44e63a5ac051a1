"""The bench's virtual serial cable: byte-clean both ways, and really throttled."""
import os
import threading
import time

import serial

from host_tools.nullmodem import NullModem


def test_bytes_cross_both_ways_untranslated():
    with NullModem() as nm:
        a = serial.serial_for_url(nm.a, timeout=2)
        b = serial.serial_for_url(nm.b, timeout=2)
        data = bytes(range(256)) * 8
        a.write(data)
        assert b.read(len(data)) == data
        b.write(b"\r\n\x03\x11\x13")
        assert a.read(5) == b"\r\n\x03\x11\x13"
        a.close()
        b.close()


def test_115200_baud_carries_at_most_11520_bytes_per_second():
    n = 11520 * 2
    with NullModem(baud=115200) as nm:
        a = serial.serial_for_url(nm.a, timeout=5)
        b = serial.serial_for_url(nm.b, timeout=5)
        data = os.urandom(n)
        t = time.monotonic()
        # Write from a thread: the kernel's pty buffers hold far less than 2 s of
        # line data on some machines, so a blocking write before reading deadlocks.
        w = threading.Thread(target=a.write, args=(data,), daemon=True)
        w.start()
        got = b""
        while len(got) < n:
            chunk = b.read(n - len(got))
            assert chunk, "stalled after %d bytes" % len(got)
            got += chunk
        dt = time.monotonic() - t
        w.join(5)
        a.close()
        b.close()
    # A rate cap, not a speed goal: 2 s of line time can never arrive sooner.
    assert got == data
    assert dt >= 1.9, dt
