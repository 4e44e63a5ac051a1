"""make mpy / make deploy: every firmware and board file compiles with mpy-cross,
and what `make deploy BOARD=unix` puts on the virtual board's flash boots."""
import json
import re
import os
import subprocess
import sys

import pytest

from host_tools import REPO, deploy


def test_every_firmware_and_board_file_compiles():
    n = deploy.check_all()
    ours = [os.path.join(d, f) for top in ("firmware", "boards")
            for d, _, fs in os.walk(os.path.join(REPO, top)) for f in fs if f.endswith(".py")]
    assert n == len(ours) and n >= 10


def test_mpy_cross_rejects_what_micropython_rejects(tmp_path, monkeypatch):
    bad = tmp_path / "firmware"
    bad.mkdir()
    (bad / "bad.py").write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    monkeypatch.setattr(deploy, "REPO", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        deploy.check_all()
    assert "bad.py" in str(e.value)


@pytest.mark.parametrize("board", ["unix", "esp32", "rp2040"])
def test_make_mpy_builds_each_board(board):
    r = subprocess.run(["make", "-s", "mpy", "BOARD=" + board], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = os.path.join(REPO, "build", "mpy", board)
    assert os.path.exists(os.path.join(out, "main.py"))
    assert os.path.exists(os.path.join(out, "lib", "refund", "app.mpy"))
    assert os.path.exists(os.path.join(out, "lib", "refund", "gb18030_tab.mpy"))  # the GB18030 table
    assert os.path.exists(os.path.join(out, "lib", "board.mpy")) == (board != "unix")


def test_mip_package_json_lists_every_firmware_file():
    with open(os.path.join(REPO, "package.json")) as f:
        text = f.read()
    # Regenerate with: python -m host_tools.deploy --board unix --package-json
    assert text == deploy.package_json()
    pkg = json.loads(text)
    fw = os.path.join(REPO, "firmware")
    want = sorted(os.path.relpath(s, fw) for s, _d in deploy.sources("unix")
                  if s.startswith(fw + os.sep) and not s.endswith("main.py"))
    assert sorted(dst for dst, _src in pkg["urls"]) == want
    for dst, src in pkg["urls"]:
        assert os.path.exists(os.path.join(REPO, src)), src
    # micropython-lib modules are mip dependencies, the ones the manifest require()s.
    with open(os.path.join(fw, "manifest.py")) as f:
        required = sorted(re.findall(r'^require\("([\w-]+)"', f.read(), re.M))
    assert sorted(d[0] for d in pkg["deps"]) == required == ["bisect"]


def test_deploy_to_virtual_board_and_run_it(board_factory, tmp_path):
    b = board_factory()
    b.ready()
    port = b.ends["console"]
    b.console.close()
    r = subprocess.run(["make", "-s", "deploy", "BOARD=unix", "PORT=" + port], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deployed" in r.stdout
    b.console.open()
    ls = b.mpremote("fs", "ls", ":/flash/lib/refund")
    assert "app.mpy" in ls.stdout, ls.stdout + ls.stderr
    b.kill()
    # Boot from what is on flash only: the source tree is not on the path.
    b2 = board_factory(b.flash, args=["--firmware", "flash"])
    st = b2.ready()
    assert st["board"] == "unix" and st["flash"]["formatted"] is False
    r = b2.mpremote("exec", "import refund.app as a; print(a.__file__)")
    assert r.stdout.strip() == "/flash/lib/refund/app.mpy", r.stdout + r.stderr
