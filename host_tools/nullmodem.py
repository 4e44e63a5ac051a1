"""A virtual serial cable: two pty pairs whose masters are bridged.

Each side opens its own pty slave path, as it would open /dev/ttyUSB0. With a
baud rate set, each direction carries at most baud/10 bytes per second
(8N1: 10 bits on the wire per byte), like a real UART link.
"""
import os
import pty
import select
import threading
import time
import tty


class NullModem:
    def __init__(self, baud=None):
        self.baud = baud
        m1, s1 = pty.openpty()
        m2, s2 = pty.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)  # no echo, no CR/LF translation: a byte-clean cable
        self.a = os.ttyname(s1)
        self.b = os.ttyname(s2)
        # Keep the slaves open so a side may close and reopen without the
        # master reading EIO (like unplugging a cable end and plugging it back).
        self._fds = (m1, s1, m2, s2)
        self._m = (m1, m2)
        for fd in self._m:
            os.set_blocking(fd, False)
        self._stop = threading.Event()
        self._thread = None
        self.moved = [0, 0]  # bytes a->b, b->a

    def start(self):
        self._thread = threading.Thread(target=self.serve, daemon=True)
        self._thread.start()
        return self

    def serve(self):
        m1, m2 = self._m
        rate = self.baud / 10.0 if self.baud else None
        pend = [b"", b""]  # bytes read from side i, not yet written to the other
        ready_at = [0.0, 0.0]  # earliest time direction i may move more bytes
        src = (m1, m2)
        dst = (m2, m1)
        while not self._stop.is_set():
            now = time.monotonic()
            rl, wl, wait = [], [], 0.2
            for i in (0, 1):
                if pend[i]:
                    wl.append(dst[i])
                elif now >= ready_at[i]:
                    rl.append(src[i])
                else:
                    wait = min(wait, ready_at[i] - now)
            try:
                r, w, _ = select.select(rl, wl, [], max(wait, 0.0005))
            except (OSError, ValueError):
                return
            for i in (0, 1):
                if src[i] in r:
                    chunk = 4096
                    if rate:
                        # ~10 ms worth of line time per read keeps pacing smooth.
                        chunk = max(1, int(rate / 100))
                    try:
                        data = os.read(src[i], chunk)
                    except (BlockingIOError, InterruptedError):
                        data = b""
                    except OSError:
                        data = b""
                    pend[i] = data
                    if data and rate:
                        ready_at[i] = max(ready_at[i], time.monotonic()) + len(data) / rate
                if dst[i] in w and pend[i]:
                    try:
                        n = os.write(dst[i], pend[i])
                    except (BlockingIOError, InterruptedError):
                        n = 0
                    except OSError:
                        n = len(pend[i])  # far end gone: the line drops the bytes
                    self.moved[i] += n
                    pend[i] = pend[i][n:]

    def close(self):
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
