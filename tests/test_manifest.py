"""firmware/manifest.py freezes every firmware file (and asyncio), and the board manifests
(boards/esp32, boards/rp2040: docs/boards.md) add the port's own manifest and the board's
HAL, read with MicroPython's own manifest tool (tools/manifestfile.py) from the pinned
source (host_tools/mpbuild.py finds or extracts it)."""
import os
import re
import subprocess
import sys

import pytest

from host_tools import REPO, mpbuild


def frozen(manifest, tmp_path):
    src, _ident = mpbuild.source()
    port = tmp_path / "port"
    (port / "boards").mkdir(parents=True, exist_ok=True)
    # Stand-in for a port's boards/manifest.py (ports/esp32 and ports/rp2 are not in the
    # pinned tarball): the same asyncio include theirs has, so the dedup is exercised.
    (port / "boards" / "manifest.py").write_text('include("$(MPY_DIR)/extmod/asyncio")\n'
                                                 'module("_boot.py", base_path="$(PORT_DIR)")\n')
    (port / "_boot.py").write_text("")
    r = subprocess.run([sys.executable, os.path.join(src, "tools", "manifestfile.py"), "--freeze",
                        "--top", src, "--lib", os.path.join(src, "lib", "micropython-lib"),
                        "--port", str(port), "--board", str(port), manifest],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return re.findall(r"target_path='([^']*)'", r.stdout)


def firmware_files():
    fw = os.path.join(REPO, "firmware")
    return sorted(os.path.relpath(os.path.join(d, f), fw) for d, _, fs in os.walk(fw)
                  for f in fs if f.endswith(".py") and f != "manifest.py")


def test_firmware_manifest_freezes_every_firmware_file_and_asyncio(tmp_path):
    got = frozen(os.path.join(REPO, "firmware", "manifest.py"), tmp_path)
    assert len(got) == len(set(got))
    assert set(firmware_files()) <= set(got), set(firmware_files()) - set(got)
    assert "refund/gb18030_tab.py" in got and "main.py" in got
    assert {"asyncio/__init__.py", "asyncio/core.py", "asyncio/stream.py"} <= set(got)
    assert "board.py" not in got  # the HAL only when a board is named


@pytest.mark.parametrize("board", ["esp32", "rp2040"])
def test_board_manifest_adds_the_port_manifest_and_the_hal(tmp_path, board):
    got = frozen(os.path.join(REPO, "boards", board, "manifest.py"), tmp_path)
    assert len(got) == len(set(got)), "a file frozen twice"  # asyncio included twice, kept once
    assert set(firmware_files()) | {"board.py", "_boot.py", "asyncio/core.py"} <= set(got)


def test_no_micropython_source_stops_with_the_version_to_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv("MICROPY_SRC", raising=False)
    monkeypatch.setenv("MICROPY_TARBALL", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(SystemExit) as e:
        mpbuild.source()
    msg = str(e.value)
    assert "1c3c201149f3" in msg and "v1.29.0-preview" in msg and "MICROPY_SRC" in msg, msg
    monkeypatch.setenv("MICROPY_SRC", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        mpbuild.source()
    assert "not a MicroPython tree" in str(e.value)
