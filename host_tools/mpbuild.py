"""Build MicroPython with the firmware frozen in (firmware/manifest.py).

  python -m host_tools.mpbuild vboard32 [--base] [--force] [-j N]
  python -m host_tools.mpbuild qemu     [--base] [--force] [-j N]
  python -m host_tools.mpbuild sizes    # flash size with and without the package
  python -m host_tools.mpbuild path vboard32|qemu

vboard32: ports/unix built 32-bit (gcc -m32: Debian's gcc-multilib) with littlefs,
  termios, sockets -> build/mp/unix32/micropython32. `refund-bench ... --interp 32`.
qemu: ports/qemu BOARD=MPS2_AN385 (Cortex-M3; arm-none-eabi-gcc + newlib) with
  littlefs2, asyncio, a RAM block device (boards/qemu/cmod) and a 96 KiB heap ->
  build/mp/qemu/firmware.elf, run by qemu-system-arm (host_tools/qemurun.py).

MicroPython comes from MICROPY_SRC=DIR (a checkout), else from the tarball
MICROPY_TARBALL (default ../shared/micropython/micropython-src.tar.gz beside the repo),
extracted into build/micropython-src/. The pinned version is commit 1c3c201149f3
(v1.29.0-preview). A build is skipped when the MicroPython sources, the manifest, the
firmware files and the build options hash the same as the last successful one.
--base builds the same port without the firmware (asyncio only), for `sizes`.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

from host_tools import REPO

PIN = "1c3c201149f37fe8d81246191b3127bb198d6306"
PIN_NAME = "v1.29.0-preview (commit 1c3c201149f3)"
BUILD = os.path.join(REPO, "build", "mp")
MANIFEST = os.path.join(REPO, "firmware", "manifest.py")
QEMU_DIR = os.path.join(REPO, "boards", "qemu")
DEFAULT_TARBALL = os.path.join(os.path.dirname(REPO), "shared", "micropython", "micropython-src.tar.gz")
VENDORED_TARBALL = os.path.join(REPO, "third_party", "micropython", "micropython-src.tar.gz")
QEMU_HEAP = 98304  # 96 KiB, an ESP32-class heap without PSRAM

UNIX32_ARGS = ["VARIANT=standard", "CFLAGS_EXTRA=-m32", "LDFLAGS_EXTRA=-m32", "MICROPY_PY_FFI=0",
               "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0", "PROG=micropython32"]
QEMU_ARGS = ["BOARD=MPS2_AN385", "MICROPY_VFS_LFS2=1", "MICROPY_HEAP_SIZE=%d" % QEMU_HEAP,
             "USER_C_MODULES=" + os.path.join(QEMU_DIR, "cmod"),
             'CFLAGS_EXTRA=-DMP_CONFIGFILE="<%s>"' % os.path.join(QEMU_DIR, "mpconfig_refund.h")]

NO_SOURCE = """mpbuild: no MicroPython source.
  Give a checkout:  MICROPY_SRC=/path/to/micropython  (at %s)
  or the tarball:   MICROPY_TARBALL=/path/to/micropython-src.tar.gz (looked for %s)
  With a network:   git clone https://github.com/micropython/micropython &&
                    cd micropython && git checkout %s && make -C ports/unix submodules"""


def log(msg):
    sys.stderr.write("mpbuild: %s\n" % msg)
    sys.stderr.flush()


def _hash_tree(h, top, subdirs):
    for sub in subdirs:
        base = os.path.join(top, sub)
        for dirpath, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith("build"))
            for f in sorted(files):
                p = os.path.join(dirpath, f)
                st = os.stat(p)
                h.update(("%s %d %d\n" % (os.path.relpath(p, top), st.st_size, st.st_mtime_ns)).encode())


def source():
    """(MicroPython directory, identity string for the cache)."""
    src = os.environ.get("MICROPY_SRC")
    if src:
        src = os.path.abspath(src)
        if not os.path.isfile(os.path.join(src, "py", "mpconfig.h")):
            raise SystemExit("mpbuild: MICROPY_SRC=%s is not a MicroPython tree (no py/mpconfig.h)" % src)
        h = hashlib.sha256(src.encode())
        _hash_tree(h, src, ("py", "extmod", "shared", "ports/unix", "ports/qemu", "lib/littlefs"))
        return src, "dir:" + h.hexdigest()
    tarball = os.environ.get("MICROPY_TARBALL")
    if not tarball:
        tarball = DEFAULT_TARBALL if os.path.isfile(DEFAULT_TARBALL) else VENDORED_TARBALL
    tarball = os.path.abspath(tarball)
    if not os.path.isfile(tarball):
        raise SystemExit(NO_SOURCE % (PIN_NAME, tarball, PIN[:12]))
    h = hashlib.sha256()
    with open(tarball, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()[:16]
    top = os.path.join(REPO, "build", "micropython-src")
    out = os.path.join(top, digest)
    done = os.path.join(out, ".extracted")
    if not os.path.exists(done):
        log("extracting %s" % tarball)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        with tarfile.open(tarball) as t:
            t.extractall(out, filter="data")
        open(done, "w").close()
    names = [n for n in os.listdir(out) if not n.startswith(".")]
    if len(names) != 1 or not os.path.isfile(os.path.join(out, names[0], "py", "mpconfig.h")):
        raise SystemExit("mpbuild: %s does not hold one MicroPython tree" % tarball)
    return os.path.join(out, names[0]), "tar:" + digest


# micropython-lib modules the firmware uses (firmware/manifest.py require()s them; the
# bench, mpremote deploys and mip get the same source from the pinned tree).
MPL_MODULES = ("bisect",)
_mpl_dir = []


def mpl_dirs():
    """Directories holding the micropython-lib modules of MPL_MODULES, from the pinned
    source (extracted once)."""
    if not _mpl_dir:
        src = source()[0]
        _mpl_dir.extend(os.path.join(src, "lib", "micropython-lib", "python-stdlib", m)
                        for m in MPL_MODULES)
    return list(_mpl_dir)


def _run(cmd, cwd=None, what=""):
    t0 = time.time()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("mpbuild: %s failed (%d): %s\n%s\n%s" % (what, r.returncode, " ".join(cmd),
                                                                  r.stdout[-4000:], r.stderr[-6000:]))
    return time.time() - t0


def _need(tool, hint):
    if not shutil.which(tool):
        raise SystemExit("mpbuild: %s not found: %s" % (tool, hint))


def _firmware_hash(h, with_firmware):
    paths = [os.path.abspath(__file__)]
    if with_firmware:
        for top in ("firmware", os.path.join("boards", "unix"), os.path.join("boards", "qemu")):
            for dirpath, dirs, files in os.walk(os.path.join(REPO, top)):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                paths += [os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".py")]
    for dirpath, dirs, files in os.walk(QEMU_DIR):
        dirs.sort()
        paths += [os.path.join(dirpath, f) for f in sorted(files)]
    for p in paths:
        with open(p, "rb") as f:
            h.update(os.path.relpath(p, REPO).encode() + b"\0" + f.read())


def _manifest(target, base):
    """The manifest file this build freezes (written under build/mp)."""
    opts = {"vboard32": "board=\"unix\"", "qemu": "board=\"qemu\""}[target]
    path = os.path.join(BUILD, "%s%s-manifest.py" % (target, "-base" if base else ""))
    if base:
        text = 'include("$(MPY_DIR)/extmod/asyncio")\n'
    else:
        text = "include(%r, %s)\n" % (MANIFEST, opts)
    os.makedirs(BUILD, exist_ok=True)
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return path


def build_dir(target, base=False):
    return os.path.join(BUILD, target + ("-base" if base else ""))


def binary(target, base=False):
    d = build_dir(target, base)
    return os.path.join(d, "micropython32" if target == "vboard32" else "firmware.elf")


def build(target, base=False, force=False, jobs=None):
    """Build (or find cached) target; returns the binary's path. One build at a time
    per checkout (a lock file): concurrent benches and test sessions wait for it."""
    import fcntl

    os.makedirs(BUILD, exist_ok=True)
    with open(os.path.join(BUILD, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(target, base, force, jobs)


def _build(target, base, force, jobs):
    if target == "vboard32":
        _need("gcc", "install gcc and gcc-multilib (apt-get install -y gcc-multilib)")
    else:
        _need("arm-none-eabi-gcc", "apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi")
    src, ident = source()
    jobs = jobs or os.cpu_count() or 2
    out = build_dir(target, base)
    manifest = _manifest(target, base)
    args = (UNIX32_ARGS if target == "vboard32" else QEMU_ARGS) + ["FROZEN_MANIFEST=" + manifest,
                                                                    "BUILD=" + out]
    h = hashlib.sha256((ident + "\0" + "\0".join(args)).encode())
    with open(manifest, "rb") as f:
        h.update(f.read())
    _firmware_hash(h, not base)
    key = h.hexdigest()
    # Build options, C sources and config headers (boards/qemu) changed: build from
    # clean (the port's qstr extraction does not notice a changed MP_CONFIGFILE).
    c = hashlib.sha256((ident + "\0" + "\0".join(args)).encode())
    _firmware_hash(c, False)
    cfg_stamp = os.path.join(out, ".refund-config")
    if os.path.isdir(out) and (not os.path.exists(cfg_stamp) or open(cfg_stamp).read() != c.hexdigest()):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    with open(cfg_stamp, "w") as f:
        f.write(c.hexdigest())
    stamp = os.path.join(out, ".refund-build")
    exe = binary(target, base)
    if not force and os.path.exists(exe) and os.path.exists(stamp) and open(stamp).read() == key:
        return exe
    t0 = time.time()
    if not os.path.exists(os.path.join(src, "mpy-cross", "build", "mpy-cross")):
        log("building mpy-cross")
        _run(["make", "-C", os.path.join(src, "mpy-cross"), "-j%d" % jobs], what="mpy-cross")
    port = os.path.join(src, "ports", "unix" if target == "vboard32" else "qemu")
    log("building %s%s (%s)" % (target, " without the firmware" if base else "", src))
    if os.path.exists(stamp):
        os.remove(stamp)
    # The frozen-content C file is regenerated when the manifest's inputs change; make
    # notices through mpy-tool's own dependency on the .mpy files it freezes.
    _run(["make", "-C", port, "-j%d" % jobs] + args, what="the %s build" % target)
    if target == "vboard32":
        r = subprocess.run(["file", exe], capture_output=True, text=True)
        if r.returncode == 0 and "32-bit" not in r.stdout:
            raise SystemExit("mpbuild: %s is not a 32-bit binary: %s" % (exe, r.stdout))
    with open(stamp, "w") as f:
        f.write(key)
    log("built %s in %.0f s" % (os.path.relpath(exe, REPO), time.time() - t0))
    return exe


def size(exe):
    """(text, data, bss) of an ELF file, with `size` (Berkeley format)."""
    tool = "arm-none-eabi-size" if exe.endswith(".elf") else "size"
    r = subprocess.run([tool, exe], capture_output=True, text=True, check=True)
    text, data, bss = (int(x) for x in r.stdout.splitlines()[1].split()[:3])
    return text, data, bss


def sizes(targets=("vboard32", "qemu"), jobs=None):
    out = {}
    for t in targets:
        full = size(build(t, jobs=jobs))
        base = size(build(t, base=True, jobs=jobs))
        out[t] = {"with_firmware": full[0] + full[1], "without_firmware": base[0] + base[1],
                  "firmware": (full[0] + full[1]) - (base[0] + base[1]),
                  "text_data_bss": list(full), "base_text_data_bss": list(base)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="mpbuild", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=("vboard32", "qemu", "sizes", "path"))
    p.add_argument("which", nargs="?", choices=("vboard32", "qemu"))
    p.add_argument("--base", action="store_true", help="build without the firmware (asyncio only)")
    p.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    p.add_argument("-j", "--jobs", type=int, default=None)
    a = p.parse_args(argv)
    if a.target == "path":
        print(binary(a.which or "vboard32"))
        return 0
    if a.target == "sizes":
        print(json.dumps(sizes(jobs=a.jobs), indent=1))
        return 0
    exe = build(a.target, base=a.base, force=a.force, jobs=a.jobs)
    t, d, b = size(exe)
    print("%s: text %d data %d bss %d (flash text+data %d)" % (os.path.relpath(exe, REPO), t, d, b, t + d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
