"""refund-deploy: compile firmware + board HAL with mpy-cross, copy with mpremote.

  refund-deploy --board unix|esp32|rp2040 [--port DEV] [--build-only]

Layout on the device (root = the board's flash; /flash on the virtual board):
  main.py            entry point (kept as source: boards run main.py, not main.mpy)
  lib/refund/*.mpy   the firmware package
  lib/board.mpy      the board HAL (real boards only; the virtual board's HAL is its ROM)
"""
import argparse
import os
import subprocess
import sys

from host_tools import BOARDS, REPO

ARCH = {"unix": None, "esp32": "xtensawin", "rp2040": "armv6m"}
ROOT = {"unix": "/flash", "esp32": "", "rp2040": ""}


def tool(name):
    exe = os.path.join(os.path.dirname(sys.executable), name)
    return exe if os.path.exists(exe) else name


def sources(board):
    """(source path, device path) for every file deployed to `board`."""
    out = [(os.path.join(REPO, "firmware", "main.py"), "main.py")]
    pkg = os.path.join(REPO, "firmware", "refund")
    for dirpath, _dirs, files in os.walk(pkg):
        for f in sorted(files):
            src = os.path.join(dirpath, f)
            rel = os.path.relpath(src, os.path.join(REPO, "firmware"))
            if f.endswith(".py"):
                out.append((src, "lib/" + rel[:-3] + ".mpy"))
            elif f.endswith(".bin"):
                out.append((src, "lib/" + rel))  # data files (e.g. the GB18030 table) as is
    if board != "unix":
        out.append((os.path.join(REPO, "boards", board, "board.py"), "lib/board.mpy"))
    from host_tools import mpbuild

    for d in mpbuild.mpl_dirs():  # micropython-lib, from the pinned source
        name = os.path.basename(d)
        out.append((os.path.join(d, name + ".py"), "lib/%s.mpy" % name))
    return out


def check_all():
    """Compile-check every firmware and board file (all boards) with mpy-cross."""
    failures = []
    n = 0
    for top in ("firmware", "boards"):
        for dirpath, _dirs, files in os.walk(os.path.join(REPO, top)):
            for f in sorted(files):
                if f.endswith(".py"):
                    src = os.path.join(dirpath, f)
                    n += 1
                    r = subprocess.run([tool("mpy-cross"), "-o", os.devnull, src],
                                       capture_output=True, text=True)
                    if r.returncode:
                        failures.append("%s: %s" % (os.path.relpath(src, REPO),
                                                    (r.stderr or r.stdout).strip()))
    if failures:
        raise SystemExit("mpy-cross rejected:\n" + "\n".join(failures))
    return n


def build(board, out_dir):
    """Compile with mpy-cross; raise SystemExit listing every file it rejects."""
    failures = []
    built = []
    for src, dst in sources(board):
        target = os.path.join(out_dir, dst)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not dst.endswith((".py", ".mpy")):
            with open(src, "rb") as f, open(target, "wb") as g:
                g.write(f.read())
            built.append(dst)
            continue
        if dst.endswith(".py"):
            # Still compile-checked, but shipped as source.
            cmd = [tool("mpy-cross"), "-o", os.devnull, src]
            with open(src, "rb") as f, open(target, "wb") as g:
                g.write(f.read())
        else:
            cmd = [tool("mpy-cross"), "-o", target, src]
            if ARCH[board]:
                cmd.insert(1, "-march=" + ARCH[board])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            failures.append("%s: %s" % (os.path.relpath(src, REPO), (r.stderr or r.stdout).strip()))
        built.append(dst)
    if failures:
        raise SystemExit("mpy-cross rejected:\n" + "\n".join(failures))
    return built


def cached_build(board="unix"):
    """A compiled tree of the current sources, built once per source content.

    The virtual board runs this as a board runs what `make deploy` copied (bytecode, not
    source: compiling 20 modules on the device would need more heap than a board has).
    Keyed by a hash of every source, built in a temporary directory and renamed into
    place, so concurrent benches never see a half-built tree.
    """
    import hashlib
    import shutil
    import tempfile

    h = hashlib.sha256(board.encode())
    for src, dst in sources(board):
        with open(src, "rb") as f:
            h.update(dst.encode() + b"\0" + f.read())
    top = os.path.join(REPO, "build", "mpy-cache")
    out = os.path.join(top, "%s-%s" % (board, h.hexdigest()[:16]))
    if os.path.isdir(out):
        return out
    os.makedirs(top, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=top, prefix=".tmp-")
    try:
        build(board, tmp)
        os.rename(tmp, out)
    except OSError:
        if not os.path.isdir(out):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def deploy(board, port, out_dir):
    built = build(board, out_dir)
    root = ROOT[board]
    cmd = [tool("mpremote"), "connect", port, "resume"]
    dirs = set()
    for d in built:
        parts = d.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    dirs = sorted(dirs)
    for d in dirs:  # parents first; "mkdir" of an existing dir is not an error here
        cmd += ["exec", "import os\ntry:\n os.mkdir('%s/%s')\nexcept OSError:\n pass" % (root, d), "+"]
    for d in built:
        cmd += ["fs", "cp", os.path.join(out_dir, d), ":%s/%s" % (root, d), "+"]
    cmd = cmd[:-1]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise SystemExit("mpremote failed (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    return built


def package_json():
    """The mip package description of the firmware (kept in step by a test)."""
    import json

    fw = os.path.join(REPO, "firmware")
    from host_tools import mpbuild

    urls = sorted([os.path.relpath(src, fw), os.path.relpath(src, REPO)]
                  for src, _dst in sources("unix")
                  if src.startswith(fw + os.sep) and not src.endswith("main.py"))
    deps = [[m, "latest"] for m in mpbuild.MPL_MODULES]  # mip takes them from micropython-lib
    with open(os.path.join(REPO, "firmware", "refund", "__init__.py")) as f:
        version = f.read().split('VERSION = "')[1].split('"')[0]
    return json.dumps({"version": version, "deps": deps, "urls": urls}, indent=2) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(prog="refund-deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", required=True)
    p.add_argument("--port", default="")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--package-json", action="store_true", help="rewrite package.json")
    a = p.parse_args(argv)
    if a.board not in BOARDS:
        raise SystemExit("unknown board %r; boards: %s" % (a.board, ", ".join(BOARDS)))
    out = a.out or os.path.join(REPO, "build", "mpy", a.board)
    if a.package_json:
        with open(os.path.join(REPO, "package.json"), "w") as f:
            f.write(package_json())
        return 0
    if a.build_only:
        checked = check_all()
        built = build(a.board, out)
        print("checked %d firmware/board files; compiled %d files for %s into %s"
              % (checked, len(built), a.board, os.path.relpath(out, REPO)))
        return 0
    if not a.port:
        raise SystemExit("deploy needs PORT=DEV (a tty path or pyserial URL)")
    built = deploy(a.board, a.port, out)
    print("deployed %d files to %s on %s" % (len(built), a.board, a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
