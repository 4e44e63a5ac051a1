"""make bench: measure on the virtual board, write the figures to docs/benchmarks.json and
docs/benchmarks.md generated from them (host_tools/bench_doc.py), and the growth plot.

Every figure is compared against a baseline measured in the same run."""
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from host_tools import REPO, bench_doc, vboard

MP = os.path.join(REPO, "host_tools", "mp")


def mp(args, img, blocks=256, heap="1m", env=None):
    env = dict(vboard.board_env(img, blocks=blocks), **(env or {}))
    env["MICROPYPATH"] = vboard.mp_path(vboard.FIRMWARE, MP)
    r = subprocess.run([vboard.micropython(), "-X", "heapsize=" + heap,
                        os.path.join(MP, "bench_outbox.py")] + [str(a) for a in args],
                       env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise SystemExit("benchmark failed: %s\n%s%s" % (args, r.stdout, r.stderr))
    return json.loads(r.stdout.strip().splitlines()[-1])


def outbox_section(tmp):
    wear = []
    for n in (10, 100, 500):
        row = {"live": n}
        for kind in ("ours", "naive"):
            img = os.path.join(tmp, "w-%d-%s.img" % (n, kind))
            row[kind] = mp(["flash", n, 50, kind], img, blocks=512)
        wear.append(row)
    boots = []
    for label, n, opts in (("10 records", 10, []), ("1000 records, default compaction", 1000, []),
                           ("1000 records, compaction off (worst case)", 1000, ["nocompact"]),
                           ("500 live, then 1000 records in all, default compaction", 1000, ["live=500"])):
        img = os.path.join(tmp, "boot-%d-%s.img" % (n, "-".join(opts)))
        f = mp(["fill", n] + opts, img, blocks=512)
        times = [mp(["boot"], img, blocks=512)["boot_us"] for _ in range(5)]
        boots.append({"label": label, "records": f["records"], "journal_files": f["journal_files"],
                      "live": f["live"], "boot_us": times})
    mems = {str(n): mp(["mem", n], os.path.join(tmp, "mem-%d.img" % n), blocks=512)["heap_in_use"] for n in (10, 500)}
    return {"wear": wear, "boots": boots, "mem": mems}


def compaction_section(tmp):
    """Issue 14: one compaction with 500 live, time and bytes read (FlashDev counters)."""
    d = mp(["compact", 500, 250], os.path.join(tmp, "compact.img"), blocks=512)
    # The same on the 32-bit board's mount (REFUND_LFS_READ=32: 128-byte littlefs caches).
    env = {"REFUND_LFS_READ": "32"}
    d["small_reads"] = mp(["compact", 500, 250], os.path.join(tmp, "compact32.img"), blocks=512, env=env)
    d["before_fix"] = _compaction_before_fix()
    return d


def _compaction_before_fix():
    """The figures of the last run before issue 14's fix (History.add opened every journal
    record, rmdirs went oldest first), kept from docs/benchmarks.json for comparison."""
    try:
        sec = bench_doc.load()["sections"]["compaction"]
    except (FileNotFoundError, KeyError):
        return None
    d = sec.get("data") or {}
    if "before_fix" in d:
        return d["before_fix"]
    if "total" not in d:
        return None
    return {"date": sec["date"], "total": d["total"], "small_total": d["small_reads"]["total"]}


GROWTH = (10, 100, 500, 1000)


def growth_section(tmp):
    """Issue 14: recovery and drain time at backlogs 10 .. 1000 (and the plot)."""
    from host_tools.fwrun import KEY, run_terminal
    from host_tools.hostsim import Faults, HostSim

    lat, window, nboot = 10, 4, 3
    rows = []
    for n in GROWTH:
        img = os.path.join(tmp, "g-%d.img" % n)
        mp(["fill", n, "live=%d" % n], img, blocks=512)
        boot_us = [mp(["boot", 2000], img, blocks=512)["boot_us"] for _ in range(nboot)]
        sim = HostSim(bytes.fromhex(KEY), seed=3, faults=Faults(latency_ms=lat))
        sim.start()
        try:
            res = run_terminal(os.path.join(tmp, "gd-%d.img" % n), sim.port, n, timeout=600,
                               host={"window": window, "response_ms": 2000, "backoff_base_ms": 500},
                               deadline_ms=120000)
        finally:
            sim.stop()
        approved = sum(1 for v in res["entries"].values() if v[0] == "approved")
        rows.append({"backlog": n, "boot_us": boot_us, "drain_ms": res["elapsed_ms"], "approved": approved})
        print("growth: %d: boot %s us, drain %d ms, %d approved" % (n, boot_us, res["elapsed_ms"], approved),
              file=sys.stderr, flush=True)
    return {"latency_ms": lat, "window": window, "boots": nboot, "rows": rows}


def drain_section(tmp):
    from host_tools.fwrun import KEY, run_terminal
    from host_tools.hostsim import Faults, HostSim

    n, lat = 500, 10
    rows = []

    def one(label, window, faults, **kw):
        sim = HostSim(bytes.fromhex(KEY), seed=3, faults=faults)
        sim.start()
        try:
            res = run_terminal(os.path.join(tmp, "drain.img"), sim.port, n, timeout=600,
                               host={"window": window, "response_ms": 2000, "backoff_base_ms": 500,
                                     "echo_base_ms": 100, "echo_cap_ms": 400},
                               deadline_ms=120000, **kw)
        finally:
            sim.stop()
            for ext in ("", ".json"):
                try:
                    os.remove(os.path.join(tmp, "drain.img" + ext))
                except OSError:
                    pass
        ms = res["elapsed_ms"] - kw.get("minus_ms", 0)
        approved = sum(1 for v in res["entries"].values() if v[0] == "approved")
        rows.append({"label": label, "approved": approved, "window": window, "ms": ms})

    for w in (1, 4, 8):
        one("host up, queue woken", w, Faults(latency_ms=lat))
    one("zero latency: CPU floor of the terminal", 4, Faults())
    one("after a 2 s outage (echo probing; time after the outage ends)", 4,
        Faults(latency_ms=lat, outage=[(0, 2.0)]), minus_ms=2000)
    return {"n": n, "latency_ms": lat, "rows": rows}


def settle_section(tmp):
    """Settlement of a batch of N refunds on the terminal's own parts (host_tools/mp/
    settle_run.py), host simulator at 10 ms latency: agreeing (00) and with a full upload
    (the host lost one refund: 95, every refund uploaded, 960000)."""
    from host_tools.fwrun import KEY
    from host_tools.hostsim import Faults, HostSim
    from host_tools.shop import BENCH_CFG

    lat = 10
    script = os.path.join(REPO, "host_tools", "mp", "settle_run.py")
    rows = []

    def run(img, cfg, **env):
        e = vboard.board_env(img)
        e["MICROPYPATH"] = vboard.mp_path(vboard.FIRMWARE)
        e["REFUND_CONFIG"] = cfg
        e.update({k: str(v) for k, v in env.items()})
        r = subprocess.run([vboard.micropython(), "-X", "heapsize=512k", script], env=e,
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(r.stdout[-3000:] + r.stderr[-3000:])
        return r.stdout

    for n, upload in ((10, False), (100, False), (500, False), (100, True), (500, True)):
        sim = HostSim(bytes.fromhex(KEY), seed=3, faults=Faults())
        sim.start()
        img = os.path.join(tmp, "settle-%d.img" % n)
        try:
            with open(BENCH_CFG) as f:
                c = json.load(f)
            c["host"] = "127.0.0.1:%d" % sim.port
            cfg = img + ".config.json"
            with open(cfg, "w") as f:
                json.dump(c, f)
            run(img, cfg, SETTLE_MODE="fill", SETTLE_N=n)
            sim.faults.latency_ms = lat
            if upload:  # the host lost the first refund: 95, then the whole batch is uploaded
                sim.faults.settle_missing.append(sorted(r for (_t, r) in sim.refunds)[0])
            out = run(img, cfg, SETTLE_MODE="settle")
            res = json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][7:])
        finally:
            sim.stop()
            for p in (img, img + ".config.json"):
                if os.path.exists(p):
                    os.remove(p)
        res.update(n=n, upload=upload)
        rows.append(res)
        print("bench settle: %d refunds%s: %d ms" % (n, " with upload" if upload else "", res["ms"]),
              file=sys.stderr, flush=True)
    return {"latency_ms": lat, "rows": rows}


def poison_section(tmp):
    from host_tools.fwrun import KEY, run_terminal
    from host_tools.hostsim import Faults, HostSim

    n, lat = 500, 10
    img = os.path.join(tmp, "poison.img")
    # Boot once with no refunds to learn the outbox's rid generation on this image.
    sim = HostSim(bytes.fromhex(KEY), seed=3, faults=Faults())
    sim.start()
    try:
        gen = run_terminal(img, sim.port, 0)["gen"]
    finally:
        sim.stop()
    rid = "%s-%06d" % (gen, 1)
    rows = []
    for label, faults in (("no poisoned entry", Faults(latency_ms=lat)),
                          ("entry %s never answered" % rid, Faults(latency_ms=lat, never_answer=[rid]))):
        img2 = os.path.join(tmp, "p2.img")
        shutil.copy(img, img2)
        sim = HostSim(bytes.fromhex(KEY), seed=3, faults=faults)
        sim.start()
        try:
            res = run_terminal(img2, sim.port, n, timeout=600, done_when_left=1 if faults.never_answer else 0,
                               host={"window": 4, "response_ms": 2000, "backoff_base_ms": 500},
                               deadline_ms=120000)
        finally:
            sim.stop()
        approved = sum(1 for v in res["entries"].values() if v[0] == "approved")
        rows.append({"label": label, "approved": approved, "ms": res["elapsed_ms"],
                     "state": res["entries"][rid][0]})
    return {"n": n, "latency_ms": lat, "rows": rows}


def terminal_section(tmp):
    """The whole application's RAM on the bench heap: code, at boot, draining a full outbox."""
    import time

    from host_tools.deploy import cached_build
    from host_tools.fwrun import fill_outbox
    from host_tools.shop import Shop

    build = cached_build("unix")
    env = dict(os.environ, MICROPYPATH=vboard.mp_path(os.path.join(build, "lib"), MP))
    r = subprocess.run([vboard.micropython(), "-X", "heapsize=2m", os.path.join(MP, "mem_modules.py")],
                       env=env, capture_output=True, text=True, timeout=120)
    mods = json.loads(r.stdout.strip().splitlines()[-1])
    rows = []
    for n in (0, 500):
        d = os.path.join(tmp, "term-%d" % n)
        os.makedirs(d)
        img = os.path.join(d, "terminal.img")
        if n:
            fill_outbox(img, n)
        s = Shop(d)
        try:
            ready = s.status.get("heap_free", 0)
            low, t0, st = ready, time.time(), {}
            while time.time() - t0 < 120:
                st = s.ctl("status")
                low = min(low, st.get("heap", low))
                if st.get("pending", 1) == 0:
                    break
                time.sleep(0.5)
            rows.append({"live": n, "boots": bool(s.status.get("terminal")), "ready": ready, "low": low,
                         "drain_s": round(time.time() - t0, 2)})
        finally:
            s.close()
    return {"heap": vboard.TERMINAL_HEAP, "modules": mods, "rows": rows}


def svc_section(tmp):
    """Issue 10: log pull over the 115200-baud console vs mpremote, resume, refunds meanwhile."""
    from host_tools import bench_svc

    res = bench_svc.measure(tmp, baud=115200, log=lambda msg: print("svc: " + msg, file=sys.stderr))
    bench_svc.lines(res)  # renders (fails here, not at generation, if a figure is missing)
    return json.loads(json.dumps(res))


def _tables(interp):
    """host_tools/mp/mem_tables.py on a build -> its JSON (modules, tables, per live entry)."""
    script = os.path.join(MP, "mem_tables.py")
    if interp == "qemu":
        from host_tools.qemurun import Qemu

        q = Qemu()
        try:
            with open(script) as f:
                out = q.run(f.read(), timeout=300)[0]
        finally:
            q.close()
    else:
        env = dict(os.environ)
        if interp == "64":
            from host_tools.deploy import cached_build

            env["MICROPYPATH"] = vboard.mp_path(os.path.join(cached_build("unix"), "lib"), MP)
        else:
            env["MICROPYPATH"] = ".frozen"
        r = subprocess.run([vboard.interpreter(interp), "-X", "heapsize=2m", script], env=env,
                           capture_output=True, text=True, timeout=300)
        out = r.stdout
    return json.loads(out.strip().splitlines()[-1])


# (build, interpreter, heaps tried from small to large: the smallest that passes is reported)
MEM_BUILDS = (("64-bit unix, firmware as .mpy on flash", "64", (288, 320, 384)),
              ("32-bit unix, firmware frozen", "32", (88, 96, 104)))


def memory_section(tmp):
    """Issue 11: the 1,000-refund run (host_tools/memrun.py) per build, smallest heap."""
    from host_tools import memrun, mpbuild

    say = lambda m: print("memory: " + m, file=sys.stderr, flush=True)  # noqa: E731
    sizes = mpbuild.sizes()
    qemu_tables = _tables("qemu")
    builds = []
    for name, interp, heaps in MEM_BUILDS:
        t = _tables(interp)
        ok, failed = None, []
        for kb in heaps:
            r = memrun.run("%dk" % kb, interp, workdir=os.path.join(tmp, "mem-%s-%d" % (interp, kb)), log=say)
            say("%s %dk: %s %s" % (interp, kb, "pass" if r["ok"] else "FAIL", r["why"]))
            if r["ok"]:
                ok = r
                break
            failed.append("%dk: %s" % (kb, r["why"][:90]))
        if interp == "32":
            z = sizes["vboard32"]
            flash = "%d B (%d B with, %d B without the package)" % (z["firmware"], z["with_firmware"],
                                                                    z["without_firmware"])
        else:
            flash = "n/a (not frozen: bytecode loaded into the heap)"
        builds.append({"name": name, "heaps": list(heaps), "failed": failed, "tables": t, "flash": flash,
                       "ok": None if ok is None else {k: ok[k] for k in ("heap", "ready_free", "peak_alloc")}})
    return {"date": _now(), "builds": builds, "qemu_tables": qemu_tables, "qemu_size": sizes["qemu"]}


def mpl_section(tmp):
    """Issue 11: micropython-lib against the firmware's own code for the same job."""
    from host_tools import mpbuild

    src = mpbuild.source()[0]
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join((".frozen", os.path.join(src, "lib", "micropython-lib", "python-stdlib",
                                                           "hmac")))
    r = subprocess.run([vboard.interpreter("32"), "-X", "heapsize=256k", os.path.join(MP, "mpl_compare.py")],
                       env=env, capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise SystemExit("mpl_compare failed:\n" + r.stdout + r.stderr)
    d = json.loads(r.stdout.strip().splitlines()[-1])

    d["date"] = _now()
    return d


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


SECTIONS = bench_doc.ORDER
RUN = {"outbox": outbox_section, "compaction": compaction_section, "growth": growth_section,
       "drain": drain_section, "poison": poison_section, "receipt": None, "terminal": terminal_section,
       "svc": svc_section, "memory": memory_section, "mpl": mpl_section, "settle": settle_section}
_BUILD = {}


def interpreter_build(interp="64"):
    """The interpreter a section ran on: MicroPython version, build, word size."""
    if interp not in _BUILD:
        r = subprocess.run([vboard.interpreter(interp), "-c",
                            "import sys\nprint(sys.version)\nprint(getattr(sys.implementation, '_build', ''))\n"
                            "print(64 if sys.maxsize > 1 << 32 else 32)"],
                           env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True, text=True, timeout=60)
        v, b, bits = (r.stdout.strip().split("\n") + ["?", "?", "?"])[:3]
        _BUILD[interp] = "%s (unix port%s, %s-bit)" % (v.partition("; ")[2] or v, ", %s variant" % b if b else "", bits)
    return _BUILD[interp]


# The interpreter each section measures on (the rest run the pinned 64-bit one).
SECTION_INTERP = {"mpl": "32"}


def run_section(name, tmp, command):
    fn = RUN[name]
    if fn is None:
        from host_tools import bench_receipt

        fn = bench_receipt.measure
    load0 = os.getloadavg()
    data = fn(tmp)
    load1 = os.getloadavg()
    interp = interpreter_build(SECTION_INTERP.get(name, "64"))
    if name == "memory":
        interp = "per build: " + ", ".join(b["name"] for b in data["builds"]) + "; " + interp
    return {"command": command, "date": _now(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        # A shared machine: the 1-minute load before and after the section.
                        "load_1min": [round(load0[0], 2), round(load1[0], 2)]},
            "interpreter": interp, "data": data}


def previous():
    """The last benchmarks.json; sections missing from it (none at all before the JSON
    existed) are carried over from docs/benchmarks.md as verbatim Markdown, flagged."""
    try:
        doc = bench_doc.load()
    except FileNotFoundError:
        doc = {"sections": {}}
    try:
        with open(bench_doc.MD_OUT) as f:
            old = bench_doc.from_markdown(f.read())
    except FileNotFoundError:
        old = {}
    for name, sec in old.items():
        doc["sections"].setdefault(name, sec)
    return doc


def write(doc):
    bench_doc.dump(doc)
    doc = bench_doc.load()  # render what the file holds (its key order), as the test does
    text = bench_doc.markdown(doc)
    with open(bench_doc.MD_OUT, "w") as f:
        f.write(text)
    g = doc["sections"].get("growth", {})
    if "data" in g:
        bench_doc.plot_growth(g["data"])
    return text


def main(argv=None):
    import argparse

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m host_tools.benchmarks", description=__doc__)
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help="run only these sections (%s); the others keep their figures from "
                        "docs/benchmarks.json" % ", ".join(SECTIONS))
    p.add_argument("--render", action="store_true",
                   help="measure nothing: regenerate docs/benchmarks.md and the plot from the JSON")
    a = p.parse_args(argv)
    only = [x.strip() for x in a.only.split(",")] if a.only else None
    for name in only or ():
        if name not in SECTIONS:
            p.error("unknown section %r (%s)" % (name, ", ".join(SECTIONS)))
    if a.render:
        print(write(bench_doc.load()))
        return 0
    command = "python -m host_tools.benchmarks" + ("" if not argv else " " + " ".join(argv))
    doc = previous() if only else {"sections": {}}
    tmp = tempfile.mkdtemp(prefix="refund-bench-")
    try:
        for name in only or SECTIONS:
            print("bench: %s ..." % name, file=sys.stderr, flush=True)
            doc["sections"][name] = run_section(name, tmp, command if only else "make bench")
            write(doc)  # after every section: a later failure keeps what was measured
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
