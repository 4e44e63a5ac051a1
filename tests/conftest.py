"""Fixtures that run code on the real MicroPython interpreter and boot the virtual board."""
import os
import subprocess
import sys

import pytest

from host_tools import REPO, vboard

FIRMWARE = os.path.join(REPO, "firmware")


class MPError(AssertionError):
    pass


def run_mp(code, heap="256k", env=None, timeout=60, check=True, path=()):
    """Run `code` (a script) on the pinned micropython with firmware + unix board on the path."""
    e = dict(os.environ)
    e["MICROPYPATH"] = vboard.mp_path(FIRMWARE, *path)
    if env:
        e.update(env)
    r = subprocess.run([vboard.micropython(), "-X", "heapsize=" + heap, "-c", code],
                       capture_output=True, text=True, env=e, timeout=timeout, cwd=REPO)
    if check and r.returncode != 0:
        raise MPError("micropython exited %d\n--- stdout\n%s\n--- stderr\n%s"
                      % (r.returncode, r.stdout[-4000:], r.stderr[-4000:]))
    return r


@pytest.fixture
def mp():
    return run_mp


@pytest.fixture
def board_factory(tmp_path):
    boards = []

    def start(flash=None, args=(), env=None, cmd="board"):
        b = vboard.Board(str(flash or tmp_path / "flash.img"), args, env, cmd)
        boards.append(b)
        return b

    yield start
    for b in boards:
        b.kill()


@pytest.fixture
def shop(tmp_path):
    """A whole shop on the bench: host simulator, printer emulator, terminal, refundctl."""
    from host_tools.shop import Shop

    s = Shop(tmp_path)
    yield s
    s.close()
