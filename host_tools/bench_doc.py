"""docs/benchmarks.json -> docs/benchmarks.md (and the growth plot): the document is made
from the figures, never typed. `python -m host_tools.benchmarks` measures and writes the
JSON; `markdown(doc)` here renders it, one function per section (RENDER).

A section's JSON: {"command", "machine": {"platform", "cpus"}, "interpreter", "date",
"data"}; or, for a section carried over from a Markdown document that had no JSON yet,
{"verbatim_markdown": [lines], ...}: its lines are kept as they were (flagged, not
re-rendered)."""
import json
import os

from host_tools import REPO

JSON_OUT = os.path.join(REPO, "docs", "benchmarks.json")
MD_OUT = os.path.join(REPO, "docs", "benchmarks.md")
PLOT = os.path.join("img", "bench_growth.png")  # relative to docs/
PLOT_OUT = os.path.join(REPO, "docs", PLOT)

# Section name -> the '## ' headings its Markdown has (to carry a section over from a
# Markdown document verbatim).
HEADINGS = {
    "outbox": ("## Outbox: flash wear per refund lifecycle", "## Outbox: recovery time on boot",
               "## Outbox: RAM per live entry"),
    "compaction": ("## Outbox: one compaction with 500 live",),
    "growth": ("## Recovery and drain against the backlog",),
    "drain": ("## Host link: draining 500 queued refunds",),
    "poison": ("## Host link: one poisoned entry",),
    "receipt": ("## Host approval to the first receipt byte",),
    "terminal": ("## Terminal application: RAM on the bench heap",),
    "svc": ("## Service link: log pull",),
    "memory": ("## Memory per build",),
    "mpl": ("## micropython-lib against our own code",),
    "settle": ("## Settlement: one batch",),
}


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def pct(xs, p):
    """The p-th percentile, nearest rank (p99 of 100 samples = the 99th smallest)."""
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, -(-len(xs) * p // 100) - 1))
    return xs[int(k)]


def provenance(sec):
    m = sec["machine"]
    load = (", load average %.1f before / %.1f after" % tuple(m["load_1min"])) if "load_1min" in m else ""
    return "(`%s`, %s, %s, %d CPUs%s, %s.)" % (sec["command"], sec["date"], m["platform"], m["cpus"], load,
                                              sec["interpreter"])


# ---- one renderer per section: data -> Markdown lines -------------------------------------

def outbox_md(d):
    L = ["## Outbox: flash wear per refund lifecycle (issue 3)", "",
         "One lifecycle = intake, sent, approved, print begun, printed (5 durable changes), "
         "measured over 50 lifecycles with N other live entries waiting. Baseline: the naive "
         "outbox that rewrites one JSON file (tmp + rename) on every change, on the same "
         "1 MiB / 4 KiB-block littlefs device in the same run.", "",
         "| live N | ours: bytes programmed | naive: bytes | ratio | ours: erases | naive: erases | ratio |",
         "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in d["wear"]:
        o, b = row["ours"], row["naive"]
        L.append("| %d | %d | %d | %.1fx | %.2f | %.2f | %.1fx |" % (
            row["live"], o["bytes_per_lifecycle"], b["bytes_per_lifecycle"],
            b["bytes_per_lifecycle"] / o["bytes_per_lifecycle"], o["erases_per_lifecycle"],
            b["erases_per_lifecycle"], b["erases_per_lifecycle"] / max(o["erases_per_lifecycle"], 1e-9)))
    L += ["", "(512-block device so the naive baseline fits at 500 live.)", "",
          "## Outbox: recovery time on boot (issue 3)", "",
          "Fresh interpreter, mount + `Outbox.recover()`, median of 5 boots, `-X heapsize=1m`. "
          "Baseline: the 10-record journal, same run.", "",
          "| journal | records written | journal files at boot | live | boot ms (median) | runs ms |",
          "|---|---:|---:|---:|---:|---|"]
    med = {}
    for b in d["boots"]:
        med[b["label"]] = _median(b["boot_us"])
        L.append("| %s | %d | %d | %d | %.1f | %s |" % (
            b["label"], b["records"], b["journal_files"], b["live"], med[b["label"]] / 1000,
            " ".join("%.1f" % (x / 1000) for x in b["boot_us"])))
    small = med[d["boots"][0]["label"]]
    L += [""] + ["- %s / %s: **%.1fx**%s" % (b["label"], d["boots"][0]["label"], med[b["label"]] / small,
                                              " (goal <= 20)" if b["records"] >= 1000 and b["live"] == 0 else "")
                 for b in d["boots"][1:]]
    L += ["", "## Outbox: RAM per live entry (issue 3)", "",
          "Heap in use after `gc.collect()` once recovery has rebuilt the index (64-bit unix port).", "",
          "| live | heap in use (B) |", "|---:|---:|"]
    m = {int(k): v for k, v in d["mem"].items()}
    for n in sorted(m):
        L.append("| %d | %d |" % (n, m[n]))
    L += ["", "500 minus 10 live: %d B = %.1f KiB (goal < 16 KiB), %.1f B per entry. The outbox "
          "makes its index for `max_live` (500) + 32 slots at boot, so what it holds does not grow "
          "with the queue: %d B at 500 live is %.1f B per entry of capacity."
          % (m[500] - m[10], (m[500] - m[10]) / 1024, (m[500] - m[10]) / 490, m[500], m[500] / 500.0), ""]
    return L


def compaction_md(d):
    b, t = d["before"], d["total"]
    live_b = b["snap"] + b["journal_bytes"]
    L = ["## Outbox: one compaction with 500 live (issue 14)", "",
         "`host_tools/mp/bench_outbox.py compact %d %d`: %d queued entries in the snapshot, then "
         "lifecycles until the journal holds %d records (what `maybe_compact` waits for with %d "
         "live: max(compact_min, live / 2)), then one `Outbox.compact()`; the virtual board's "
         "`FlashDev` counts every block-device read. littlefs mounted as the 64-bit bench does "
         "(%s). Baseline: the bytes compaction has to read, the snapshot plus the journal files "
         "(%d + %d B = %d B)." % (d["live"], b["journal_files"], d["live"], b["journal_files"], d["live"],
                                  ", ".join("%s %s" % kv for kv in sorted(d["lfs"].items())),
                                  b["snap"], b["journal_bytes"], live_b), "",
         "| step | ms | device reads | bytes read | read / data to read | bytes programmed | erases |",
         "|---|---:|---:|---:|---:|---:|---:|",
         "| **`Outbox.compact()`, whole** | %.1f | %d | %d | **%.0fx** | %d | %d |" % (
             t["us"] / 1000, t["reads"], t["bytes_read"], t["bytes_read"] / live_b, t["bytes_programmed"],
             t["erases"])]
    for name, s in d["steps"]:
        L.append("| %s | %.1f | %d | %d | %.0fx | %d | %d |" % (
            name, s["us"] / 1000, s["reads"], s["bytes_read"], s["bytes_read"] / live_b, s["bytes_programmed"],
            s["erases"]))
    j, s = d["one_journal_read"], d["one_snap_seek_read"]
    nj = d["before2"]["journal_files"]
    L += ["", "(The steps: the same state made again, `Outbox.compact()`'s calls made one by one.) "
          "Unit costs in the same run: opening and reading one %d-byte journal record "
          "(`Journal.read`, path `ob/j/GGGGGGG/NNNNNNNN`) reads %d B in %d device reads; opening "
          "`ob/snap` and reading 60 B at its middle reads %d B in %d. The cost is littlefs's "
          "directory lookups, not the records' bytes: every open or remove walks the path's "
          "four directories again. `History.add` opens only the %d completed entries' latest "
          "records (the index's tombstones name them), `Journal.drop` still removes each of "
          "the %d records, one path walk each: most of what is left." % (
              b["journal_bytes"] // max(b["journal_files"], 1), j["bytes_read"], j["reads"],
              s["bytes_read"], s["reads"], d.get("moved", 0), nj), ""]
    bf = d.get("before_fix")
    if bf:
        sm = d.get("small_reads")
        L += ["Against the figures before the fix (%s; `History.add` opened every journal record, "
              "`rmdirs` went oldest first):" % bf["date"], "",
              "| mount | before: ms | before: bytes read | after: ms | after: bytes read | bytes read, before / after |",
              "|---|---:|---:|---:|---:|---:|"]
        rows = [("64-bit bench (readsize 512)", bf["total"], t)]
        if sm and bf.get("small_total"):
            rows.append(("32-bit board (readsize 32)", bf["small_total"], sm["total"]))
        for name, x, y in rows:
            L.append("| %s | %.1f | %d | %.1f | %d | **%.2fx** |" % (
                name, x["us"] / 1000, x["bytes_read"], y["us"] / 1000, y["bytes_read"],
                x["bytes_read"] / max(y["bytes_read"], 1)))
        L.append("")
    if d.get("stat_walk"):
        L += ["`os.stat` of each prefix of one journal record's path (littlefs keeps no directory "
              "metadata between calls: each walk fetches every directory's metadata pair again):", "",
              "| path | device reads | bytes read |", "|---|---:|---:|"]
        L += ["| `%s` | %d | %d |" % (q, c["reads"], c["bytes_read"]) for q, c in d["stat_walk"]]
        L.append("")
    sm = d.get("small_reads")
    if sm:
        t = sm["total"]
        L += ["The same compaction with the 32-bit board's littlefs mount (`REFUND_LFS_READ=32`: %s; same interpreter): %.1f ms, "
              "%d device reads, %d B read = **%.0fx** the data to read; one journal record read %d B "
              "in %d reads. Smaller caches read fewer bytes per lookup but the same metadata logs "
              "again on every call." % (", ".join("%s %s" % kv for kv in sorted(sm["lfs"].items())),
                                        t["us"] / 1000, t["reads"], t["bytes_read"], t["bytes_read"] / live_b,
                                        sm["one_journal_read"]["bytes_read"], sm["one_journal_read"]["reads"]),
              ""]
    return L


def growth_md(d):
    L = ["## Recovery and drain against the backlog (issue 14)", "",
         "Same run, backlog = live entries queued on the flash image. Recovery: fresh interpreter, "
         "mount + `Outbox.recover()` (`bench_outbox.py boot`), median of %d boots. Drain: "
         "`host_tools/mp/host_run.py` (outbox + host link + sender) with the host simulator at "
         "%d ms latency, window %d, until every entry is approved. Baselines: the smallest "
         "backlog's time scaled linearly, and backlog x %d ms (one request at a time)."
         % (d["boots"], d["latency_ms"], d["window"], d["latency_ms"]), "",
         "![recovery and drain time against the backlog](%s)" % PLOT.replace(os.sep, "/"), "",
         "| backlog | recovery ms | per entry us | drain ms | per entry ms | backlog x %d ms |" % d["latency_ms"],
         "|---:|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        rec = _median(r["boot_us"]) / 1000
        L.append("| %d | %.1f | %.1f | %d | %.2f | %d |" % (
            r["backlog"], rec, 1000 * rec / r["backlog"], r["drain_ms"], r["drain_ms"] / r["backlog"],
            r["backlog"] * d["latency_ms"]))
    a, z = d["rows"][0], d["rows"][-1]
    k = z["backlog"] / a["backlog"]
    L += ["", "From %d to %d entries (%.0fx): recovery %.1fx, drain %.1fx." % (
        a["backlog"], z["backlog"], k, _median(z["boot_us"]) / _median(a["boot_us"]),
        z["drain_ms"] / a["drain_ms"]), ""]
    return L


def drain_md(d):
    base = d["n"] * d["latency_ms"]
    L = ["## Host link: draining 500 queued refunds (issue 4)", "",
         "%d refunds queued on the virtual board, host simulator with %d ms latency, "
         "real TCP on loopback; time until every refund is approved (durably). Baseline: "
         "%d x %d ms = %d ms (one request at a time, zero processing)."
         % (d["n"], d["latency_ms"], d["n"], d["latency_ms"], base), "",
         "| case | window | ms | ratio to %d ms |" % base, "|---|---:|---:|---:|"]
    for r in d["rows"]:
        L.append("| %s (%d approved) | %d | %d | %.2f |" % (r["label"], r["approved"], r["window"], r["ms"],
                                                            r["ms"] / base))
    return L + [""]


def settle_md(d):
    lat = d["latency_ms"]
    rows = d["rows"]
    agree = [r for r in rows if not r["upload"]]
    up = [r for r in rows if r["upload"]]
    base = agree[0]
    L = ["## Settlement: one batch (issue 13)", "",
         "The terminal's own parts (`refund.app.Terminal`: outbox, sender, settlement task; "
         "`host_tools/mp/settle_run.py`), a batch of N approved refunds, the host simulator "
         "with %d ms latency on loopback; time from the start (the batch cut) to the batch "
         "closed durably (no printer: the slip is not in it). Agreeing: one 0500 per currency, "
         "whatever N (goal: within 1.5x of the %d-refund batch). Full upload: the host lost one "
         "refund, so 0500 -> 95, a 0320 for every refund, then 0500 960000 (goal: <= 1.5 x N x "
         "%d ms)." % (lat, base["n"], lat), "",
         "| batch | refunds | ms | ratio | goal | list pass (ms, blocking) | upload ms | window |",
         "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in agree:
        L.append("| agreeing (00) | %d | %d | %.2f x the %d-refund batch | <= 1.5 | - | - | - |"
                 % (r["n"], r["ms"], r["ms"] / float(base["ms"]), base["n"]))
    for r in up:
        L.append("| full upload (95, %d differences) | %d | %d | %.2f x N x %d ms | <= 1.5 | %d | %d | %d |"
                 % (r["diff_n"], r["n"], r["ms"], r["ms"] / float(r["n"] * lat), lat,
                    r.get("collect_ms", 0), r.get("upload_ms", 0), r.get("window", 0)))
    L += ["", "The list pass reads the batch's approved refunds from the history, the journal "
          "and the live entries into the upload list on flash in one go, without yielding (so "
          "no other task changes the outbox under it): the only part of settlement that holds "
          "the terminal, once per upload.", ""]
    return L


def poison_md(d):
    L = ["## Host link: one poisoned entry (issue 4)", "",
         "Same drain (window 4, %d ms latency); the host never answers the first refund. "
         "Time until the other %d are approved." % (d["latency_ms"], d["n"] - 1), "",
         "| case | approved | ms | poisoned entry |", "|---|---:|---:|---|"]
    for r in d["rows"]:
        L.append("| %s | %d | %d | %s |" % (r["label"], r["approved"], r["ms"], r["state"]))
    L += ["", "Ratio poisoned / clean: %.2f (1.0 = the stuck entry costs the others nothing)."
          % (d["rows"][1]["ms"] / d["rows"][0]["ms"]), ""]
    return L


def receipt_md(d):
    xs = d["ms"]
    L = ["## Host approval to the first receipt byte (issue 14)", "",
         "The terminal application on the virtual board (`refund-bench terminal`, heap %s) with "
         "the host simulator (no latency) and the printer emulator on a %d-baud null-modem "
         "(`host_tools.shop.Shop`). %d REFUNDs on the ECR one after another (refundctl), each "
         "after both copies of the previous receipt were cut. Timed from the host simulator writing the approving "
         "0210 to its socket to the printer emulator's first read of print data (status polls "
         "left out) on the same monotonic clock. Baseline: the goal, median <= 50 ms."
         % (d["heap"], d["printer_baud"], len(xs)), "",
         "| samples | median ms | p90 ms | p99 ms | max ms | min ms |", "|---:|---:|---:|---:|---:|---:|",
         "| %d | %.1f | %.1f | %.1f | %.1f | %.1f |" % (len(xs), pct(xs, 50), pct(xs, 90), pct(xs, 99), max(xs),
                                                       min(xs)),
         "", "Median %.1f ms against the 50 ms goal: **%s**.%s" % (
             pct(xs, 50), "met" if pct(xs, 50) <= 50 else "missed",
             (" %d refunds gave no sample: %s." % (len(d["missing"]), ", ".join(d["missing"])))
             if d["missing"] else ""), ""]
    return L


def terminal_md(d):
    heap_b = int(d["heap"][:-1]) * 1024
    mods = d["modules"]
    code = sum(mods.values())
    L = ["## Terminal application: RAM on the bench heap (issue 6)", "",
         "`refund-bench terminal` (`-X heapsize=%s`, the firmware as mpy-cross output), printer "
         "emulator at 115200 baud, host simulator without latency. Heap free is read from the "
         "READY line and from STATUS (both after `gc.collect()`), polled every 0.5 s while a "
         "full outbox drains." % d["heap"], "",
         "Module bytecode and module-level buffers after import: %d B (%.0f%% of the heap; "
         "largest: %s). A board loading .mpy files pays the same share; freezing the package "
         "into the firmware moves it to flash." % (
             code, 100.0 * code / heap_b,
             ", ".join("%s %d" % kv for kv in sorted(mods.items(), key=lambda kv: (-kv[1], kv[0]))[:4])), "",
         "| live at boot | boots | heap free at READY | lowest heap free while draining | drain s |",
         "|---:|---|---:|---:|---:|"]
    for r in d["rows"]:
        L.append("| %d | %s | %d | %d | %.1f |" % (r["live"], "yes" if r["boots"] else "NO", r["ready"], r["low"],
                                                  r["drain_s"]))
    return L + [""]


def svc_md(d, sec):
    from host_tools import bench_svc

    return bench_svc.lines(d)  # the date is in the provenance line


def memory_md(d):
    L = ["## Memory per build: the 1,000-refund run (issue 11)", "",
         "(Measured %s.) `python -m host_tools.memrun --interp I --heap H`: the whole terminal "
         "(ECR intake, sender, printer, housekeeping, service link) takes 500 refunds over the "
         "ECR link while the host is down (all queued at once, a pending notice printed for "
         "each), the host comes back and the queue drains while the printer runs out of paper "
         "and is reloaded, 500 more refunds in service, then a full event-log pull over the "
         "service link. Pass: every refund accepted, approved exactly once in the host's "
         "ledger and printed; no MemoryError, no task restart, no refusal for memory "
         "(`heap_headroom` on: 8 KiB on 32-bit, 16 KiB on 64-bit). Heaps tried from small to "
         "large; the first that passes is the figure. Peak = heap size less the lowest "
         "`gc.mem_free()` after `gc.collect()` seen by STATUS during the run." % d["date"], "",
         "| build | smallest passing heap | failed below it | READY free there | peak after "
         "collection | modules after import | tables for max_live 500 | heap per live entry "
         "| firmware flash (text+data) |",
         "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for b in d["builds"]:
        ok, t = b["ok"], b["tables"]
        L.append("| %s | %s | %s | %s | %s | %d B | %d B | %.0f B | %s |" % (
            b["name"], ok["heap"] if ok else "none of %s" % ", ".join("%dk" % k for k in b["heaps"]),
            "; ".join(b["failed"]) or "-", ok["ready_free"] if ok else "-",
            ok["peak_alloc"] if ok else "-", t["modules"], t["tables_500"], t["per_live"], b["flash"]))
    t, z = d["qemu_tables"], d["qemu_size"]
    L.append("| Cortex-M3 (ports/qemu MPS2_AN385), firmware frozen | not run: the qemu port has no "
             "network or UART for ECR and host; its 96 KiB heap runs the board-independent tests "
             "(`make qemu`) | - | - | - | %d B | %d B | %.0f B | %d B (%d B with, %d B without) |" % (
                 t["modules"], t["tables_500"], t["per_live"], z["firmware"], z["with_firmware"],
                 z["without_firmware"]))
    L += ["", "Heap per live entry: the tables the terminal makes at boot for `max_live` (outbox "
          "index, recent list, retry schedule), (size at 500 - size at 100) / 400; nothing else "
          "grows with the queue. Modules: every firmware module imported, after collection "
          "(frozen: function and class objects only, the bytecode stays in flash).", ""]
    return L


def mpl_md(d):
    def row(job, ours, mpl, verdict):
        return "| %s | %.1f us, %d B | %.1f us, %d B | %.2fx, %.2fx | %s |" % (
            job, d[ours]["us"], d[ours]["bytes"], d[mpl]["us"], d[mpl]["bytes"],
            d[mpl]["us"] / d[ours]["us"], (d[mpl]["bytes"] / d[ours]["bytes"]) if d[ours]["bytes"] else 1.0,
            verdict)

    return ["## micropython-lib against our own code (issue 11)", "",
            "(Measured %s on the 32-bit frozen build.) `host_tools/mp/mpl_compare.py`: per call, time "
            "and heap allocated; micropython-lib's module where the firmware could use it instead of "
            "its own code. Used where it does not measure worse (ARCHITECTURE.md, \"micropython-lib\")."
            % d["date"], "",
            "| job | ours | micropython-lib | mpl / ours (time, heap) | decision |", "|---|---:|---:|---:|---|",
            row("HMAC-SHA256 of a 304-byte request (`refund.mac.Mac.hmac` vs `hmac.new(...).digest()`)",
                "hmac_ours", "hmac_mpl", "ours: pads made once per key, no per-call key schedule"),
            row("search a 500-entry sorted array (the hand-written loop vs `bisect.bisect_left`)",
                "bisect_ours", "bisect_mpl", "micropython-lib `bisect` (require()d; the three loops went)"),
            ""]


RENDER = {"outbox": outbox_md, "compaction": compaction_md, "growth": growth_md, "drain": drain_md,
          "poison": poison_md, "receipt": receipt_md, "terminal": terminal_md, "memory": memory_md,
          "mpl": mpl_md, "settle": settle_md}
ORDER = ("outbox", "compaction", "growth", "drain", "poison", "settle", "receipt", "terminal", "svc", "memory",
         "mpl")


def section_md(name, sec):
    if "verbatim_markdown" in sec:
        return list(sec["verbatim_markdown"])
    if name == "svc":
        body = svc_md(sec["data"], sec)
    else:
        body = RENDER[name](sec["data"])
    # The provenance line under the heading: command, date, machine, interpreter build.
    return body[:2] + [provenance(sec), ""] + body[2:]


def markdown(doc):
    """The whole docs/benchmarks.md text for a benchmarks.json document."""
    secs = doc["sections"]
    L = ["# Benchmarks", "",
         "Generated from `docs/benchmarks.json` by `host_tools/bench_doc.py`; the figures come from "
         "`make bench` (`python -m host_tools.benchmarks`, or `--only NAME,...` for some sections: "
         "the others keep their figures from the previous file). Each section says the command, "
         "date, machine and interpreter build it was measured with. Regenerate; do not edit by "
         "hand (tests/test_benchmarks_doc.py checks it).", ""]
    for name in ORDER:
        if name in secs:
            body = section_md(name, secs[name])
            while body and body[-1] == "":
                body.pop()
            L += body + [""]
    return "\n".join(L).rstrip("\n") + "\n"


def load(path=JSON_OUT):
    with open(path) as f:
        return json.load(f)


def dump(doc, path=JSON_OUT):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")


def from_markdown(text):
    """Sections of an older docs/benchmarks.md (before the JSON) as verbatim blocks:
    {name: {"verbatim_markdown": lines, "note": ...}}."""
    lines = text.split("\n")
    heads = [i for i, s in enumerate(lines) if s.startswith("## ")] + [len(lines)]
    out = {}
    for name, prefixes in HEADINGS.items():
        got = []
        for a, b in zip(heads, heads[1:]):
            if lines[a].startswith(prefixes):
                got += lines[a:b]
        if got:
            while got and got[-1] == "":
                got.pop()
            out[name] = {"verbatim_markdown": got,
                         "note": "carried over verbatim from docs/benchmarks.md as it was before "
                                 "benchmarks.json existed; not re-rendered from figures"}
    return out


# ---- the plot (Pillow: matplotlib is not a dependency) --------------------------------

def plot_growth(d, path=PLOT_OUT):
    """Line chart of recovery and drain time against the backlog, two y axes (ms)."""
    from PIL import Image, ImageDraw, ImageFont

    W, H, ml, mr, mt, mb = 760, 440, 80, 80, 50, 70
    im = Image.new("RGB", (W, H), "white")
    g = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    xs = [r["backlog"] for r in d["rows"]]
    series = (("recovery (boot) ms", [_median(r["boot_us"]) / 1000 for r in d["rows"]], (200, 40, 40), ml),
              ("drain ms", [r["drain_ms"] for r in d["rows"]], (30, 80, 200), W - mr))
    x0, x1, y0, y1 = ml, W - mr, H - mb, mt
    xmax = max(xs)

    def px(x):
        return x0 + (x1 - x0) * x / xmax

    g.rectangle((x0, y1, x1, y0), outline="black")
    for x in xs:
        g.line((px(x), y0, px(x), y0 + 5), fill="black")
        g.text((px(x) - 10, y0 + 8), str(x), fill="black", font=font)
    g.text(((x0 + x1) // 2 - 90, y0 + 30), "backlog (live entries queued)", fill="black", font=font)
    for label, ys, color, ax in series:
        top = _nice(max(ys))
        for k in range(6):
            v = top * k / 5
            y = y0 - (y0 - y1) * k / 5
            left = ax == ml
            g.line((ax - 5 if left else ax, y, ax if left else ax + 5, y), fill=color)
            txt = ("%.0f" if top >= 10 else "%.1f") % v
            g.text((ax - 8 - 7 * len(txt) if left else ax + 8, y - 6), txt, fill=color, font=font)
        pts = [(px(x), y0 - (y0 - y1) * y / top) for x, y in zip(xs, ys)]
        g.line(pts, fill=color, width=2)
        for x, y in pts:
            g.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        g.text((ax - 60 if ax == ml else ax - 40, y1 - 18), label, fill=color, font=font)
    g.text((x0, 10), "Recovery and drain time against the backlog (%d ms host latency, window %d)"
           % (d["latency_ms"], d["window"]), fill="black", font=font)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path)
    return path


def _nice(v):
    """A round axis top >= v."""
    m = 1
    while m * 10 < v:
        m *= 10
    for k in (1, 2, 2.5, 5, 10):
        if k * m >= v:
            return k * m
    return 10 * m


def main():
    """Re-render docs/benchmarks.md (and the plot) from docs/benchmarks.json alone."""
    doc = load()
    with open(MD_OUT, "w") as f:
        f.write(markdown(doc))
    if "growth" in doc["sections"] and "data" in doc["sections"]["growth"]:
        plot_growth(doc["sections"]["growth"]["data"])


if __name__ == "__main__":
    main()
