"""Fixtures that run code on the real MicroPython interpreter and boot the virtual board."""
import os
import subprocess
import sys

import pytest

from host_tools import REPO, vboard

FIRMWARE = os.path.join(REPO, "firmware")


class MPError(AssertionError):
    pass


def mp_exe(interp="64"):
    """The interpreter binary for an `interp` parameter: 64 = the pinned one; 32 = the
    32-bit build with the firmware frozen (made by the session fixture `vboard32`)."""
    if interp == "32":
        from host_tools import mpbuild

        return mpbuild.binary("vboard32")
    return vboard.micropython()


def mp_env_path(interp="64", *path):
    """MICROPYPATH: 64 runs the firmware from the source tree; 32 its frozen modules."""
    return vboard.frozen_path(*path) if interp == "32" else vboard.mp_path(FIRMWARE, *path)


def run_mp(code, heap="256k", env=None, timeout=60, check=True, path=(), interp="64"):
    """Run `code` (a script) on the pinned micropython with firmware + unix board on the path
    (interp="32": on the 32-bit build, firmware and board HAL frozen)."""
    e = dict(os.environ)
    e["MICROPYPATH"] = mp_env_path(interp, *path)
    if env:
        e.update(env)
    r = subprocess.run([mp_exe(interp), "-X", "heapsize=" + heap, "-c", code],
                       capture_output=True, text=True, env=e, timeout=timeout, cwd=REPO)
    if check and r.returncode != 0:
        raise MPError("micropython exited %d\n--- stdout\n%s\n--- stderr\n%s"
                      % (r.returncode, r.stdout[-4000:], r.stderr[-4000:]))
    return r


@pytest.fixture(scope="session")
def vboard32():
    """The 32-bit unix build with the firmware frozen (make vboard32), built once per
    session when missing or out of date. A missing toolchain fails the test, never skips."""
    from host_tools import mpbuild

    try:
        return mpbuild.build("vboard32")
    except SystemExit as e:
        pytest.fail("the 32-bit build (make vboard32) failed: %s" % e, pytrace=False)


@pytest.fixture
def interp(request):
    """Which interpreter a test runs on: "64" (the pinned one) unless the test is
    parametrized with @pytest.mark.parametrize("interp", ["64", "32"], indirect=True)."""
    which = getattr(request, "param", "64")
    if which == "32":
        request.getfixturevalue("vboard32")
    return which


@pytest.fixture
def mp(interp):
    if interp == "64":
        return run_mp

    def run32(code, *args, **kw):
        kw.setdefault("interp", interp)
        return run_mp(code, *args, **kw)

    return run32


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
def shop(tmp_path, interp):
    """A whole shop on the bench: host simulator, printer emulator, terminal, refundctl."""
    from host_tools.shop import Shop

    s = Shop(tmp_path, interp=interp)
    yield s
    s.close()
