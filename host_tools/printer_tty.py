"""The printer emulator (host_tools/printer_emu.py) on a serial line: a tty opened raw (or a
new pty), and the thread that moves bytes between it and the emulator at paper speed.

The thread uses three calls of the emulator, all under `emu.lock`: `receive(data)` for
bytes from the host, `process(now)` (True while paper speed holds back work due at
`emu.paper.next_ready`) and `emu.tx`, the bytes waiting for the line.
"""
import os
import pty
import select
import termios
import threading
import time
import tty


def set_baud(fd, baud):
    speed = getattr(termios, "B%d" % baud, None)
    if speed is None:
        raise SystemExit("unsupported baud rate %d" % baud)
    a = termios.tcgetattr(fd)
    a[4] = a[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, a)


class TtyPort:
    def __init__(self, emu, tty_path=None, baud=None):
        """Open tty_path raw (at baud), or a new pty when None."""
        self.emu = emu
        if tty_path is None:
            m, s = pty.openpty()
            tty.setraw(s)
            self.fd = m
            self.path = os.ttyname(s)
            self._own_fds = [m, s]  # keep the slave open: the master never reads EIO
        else:
            fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(fd)
            if baud:
                set_baud(fd, baud)
            self.fd = fd
            self.path = tty_path
            self._own_fds = [fd]
        os.set_blocking(self.fd, False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._own_fds += [self._wake_r, self._wake_w]
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._serve, name="printer", daemon=True)
        self._thread.start()
        return self

    def kick(self):
        """Wake the thread: something changed (faults, bytes to send)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def stop(self):
        """End the thread (the tty stays open until close())."""
        self._stop.set()
        self.kick()
        if self._thread:
            self._thread.join(3)
            self._thread = None

    def close(self):
        for fd in self._own_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._own_fds = []

    def _serve(self):
        emu, fd = self.emu, self.fd
        while not self._stop.is_set():
            with emu.lock:
                now = time.monotonic()
                busy = emu.process(now)
                want_write = bool(emu.tx)
                timeout = 0.2
                if busy:
                    timeout = max(0.0005, min(0.2, emu.paper.next_ready - now))
            try:
                r, w, _ = select.select([fd, self._wake_r], [fd] if want_write else [], [], timeout)
            except (OSError, ValueError):
                return
            if self._wake_r in r:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            if fd in r:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:
                    data = b""
                    time.sleep(0.01)
                if data:
                    with emu.lock:
                        emu.receive(data)
            if fd in w or emu.tx:
                # Replies and XOFF go out right after reception, like a UART interrupt
                # handler would send them, not after the next round of printing.
                with emu.lock:
                    try:
                        k = os.write(fd, bytes(emu.tx))
                    except (BlockingIOError, InterruptedError):
                        k = 0
                    except OSError:
                        k = len(emu.tx)
                    del emu.tx[:k]
