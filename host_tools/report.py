"""`refundctl bundle -o FILE.zip`: everything a technician takes away from a terminal
(logs.jsonl, outbox.json, info.json, status.json, metrics.json, config.json) plus
report.html: one self-contained page (no external URL) with the status, the stuck
refunds and a matplotlib timeline (PNG as a data: URI) of refunds, sends, host outages
and printer faults over the logged period."""
import base64
import datetime
import html
import io
import json
import statistics
import time
import zipfile

from host_tools.explain import next_step

STUCK = ("queued", "approved", "cancelling")
_SECRET_WORDS = ("key", "pin", "hash", "salt", "mac", "secret", "pass")


def scrub(v):
    """Belt and braces over the board's config.redacted(): no secret-named value leaves."""
    if isinstance(v, dict):
        return {k: ("***" if any(w in k.lower() for w in _SECRET_WORDS) else scrub(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [scrub(x) for x in v]
    return v


def _strip(rep):
    return {k: v for k, v in rep.items() if k not in ("id", "ok", "_body", "part", "end")}


def collect(c, log=None):
    """Fetch everything for a bundle from an open svclink.Client."""
    from host_tools.svcctl import outbox_entries, pull_logs

    log = log or (lambda m: None)
    data = {}
    for cmd in ("info", "status", "metrics"):
        log("fetching " + cmd)
        data[cmd] = _strip(c.call(cmd))
    log("fetching config")
    data["config"] = scrub(c.call("config").get("config", {}))
    log("fetching outbox")
    data["outbox"] = outbox_entries(c)
    records = []
    log("pulling the event log")
    pull_logs(c, 0, records.append)
    data["records"] = records
    return data


def bundle(c, path, log=None):
    data = collect(c, log)
    write_bundle(path, data)
    return {"output": path, "records": len(data["records"]), "entries": len(data["outbox"])}


def write_bundle(path, data):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("logs.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in data["records"]))
        z.writestr("outbox.json", json.dumps(data["outbox"], indent=1, sort_keys=True))
        for k in ("info", "status", "metrics", "config"):
            z.writestr(k + ".json", json.dumps(data.get(k, {}), indent=1, sort_keys=True))
        z.writestr("report.html", report_html(data))


# ---- times ------------------------------------------------------------------------------

def event_times(records):
    """UTC seconds for each record: its wall time, else estimated from the records of the
    same boot that have one (uptime offset), else None. Returns (times, all_relative)."""
    boots, cur = [], []
    for r in records:
        if cur and (r["name"] == "boot" or r["up_ms"] < cur[-1]["up_ms"]):
            boots.append(cur)
            cur = []
        cur.append(r)
    if cur:
        boots.append(cur)
    out = []
    any_wall = any(r["wall"] for r in records)
    base = 0.0
    for b in boots:
        offs = [r["wall"] - r["up_ms"] / 1000.0 for r in b if r["wall"]]
        off = statistics.median(offs) if offs else None
        for r in b:
            if r["wall"]:
                out.append(float(r["wall"]))
            elif off is not None:
                out.append(off + r["up_ms"] / 1000.0)
            elif not any_wall:
                out.append(base + r["up_ms"] / 1000.0)  # no clock at all: uptime, boots laid end to end
            else:
                out.append(None)
        if not any_wall and b:
            base += b[-1]["up_ms"] / 1000.0 + 1
    return out, not any_wall


def _utc(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


# ---- plot -------------------------------------------------------------------------------

LANES = ("refunds", "sends", "host outages", "printer faults")


def timeline_png(records, end=None):
    """PNG bytes of the timeline plot; an outage still open is drawn up to end (UTC s)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import dates as mdates

    ts, relative = event_times(records)
    conv = (lambda t: t / 60.0) if relative else (
        lambda t: mdates.date2num(datetime.datetime.fromtimestamp(t, datetime.timezone.utc)))
    pts = {k: [] for k in ("captured", "approved", "declined", "send", "send_fail", "print_fault")}
    down, outages, pfault, spans = None, [], None, []
    last = None
    for r, t in zip(records, ts):
        if t is None:
            continue
        last = t
        n = r["name"]
        if n in pts:
            pts[n].append(conv(t))
        elif n == "answer":
            pts["send"].append(conv(t))
        elif n == "host_down" and down is None:
            down = t
        elif n == "host_up" and down is not None:
            outages.append((down, t))
            down = None
        elif n == "printer":
            fine = r["fields"].get("state") in ("ready", "ok", "online")
            if not fine and pfault is None:
                pfault = t
            elif fine and pfault is not None:
                spans.append((pfault, t))
                pfault = None
    if last is not None and end and not relative:
        last = max(last, end)
    if down is not None and last is not None:
        outages.append((down, max(last, down + 1)))
    if pfault is not None and last is not None:
        spans.append((pfault, max(last, pfault + 1)))
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
    y = {lane: len(LANES) - 1 - i for i, lane in enumerate(LANES)}
    ax.plot(pts["captured"], [y["refunds"]] * len(pts["captured"]), "o", color="#1f77b4", label="captured")
    ax.plot(pts["approved"], [y["refunds"] + 0.15] * len(pts["approved"]), "^", color="#2ca02c", label="approved")
    ax.plot(pts["declined"], [y["refunds"] - 0.15] * len(pts["declined"]), "v", color="#d62728", label="declined")
    ax.plot(pts["send"], [y["sends"]] * len(pts["send"]), "|", color="#555555", markersize=12, label="send / answer")
    ax.plot(pts["send_fail"], [y["sends"] - 0.2] * len(pts["send_fail"]), "x", color="#d62728", label="send failed")
    width = (lambda a, b: (b - a) / 60.0) if relative else (lambda a, b: (b - a) / 86400.0)
    if outages:
        ax.broken_barh([(conv(a), width(a, b)) for a, b in outages], (y["host outages"] - 0.3, 0.6),
                       color="#ff7f0e", label="host down")
    if spans:
        ax.broken_barh([(conv(a), width(a, b)) for a, b in spans], (y["printer faults"] - 0.3, 0.6),
                       color="#9467bd", label="printer not ready")
    ax.plot(pts["print_fault"], [y["printer faults"]] * len(pts["print_fault"]), "X", color="#8c564b",
            label="print fault")
    ax.set_yticks([y[l] for l in LANES])
    ax.set_yticklabels(LANES)
    ax.set_ylim(-0.7, len(LANES) - 0.3)
    if relative:
        ax.set_xlabel("minutes of uptime (the terminal's clock was not set)")
    else:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=datetime.timezone.utc))
        ax.set_xlabel("UTC")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=5, fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ---- page -------------------------------------------------------------------------------

CSS = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:left;font-size:13px}th{background:#eee}
.stuck{background:#fff1f0}img{max-width:100%;border:1px solid #ccc}h1{font-size:20px}h2{font-size:16px}"""


def _table(tid, head, rows, mark=False):
    e = html.escape
    out = ['<table id="%s"><thead><tr>%s</tr></thead><tbody>' % (tid, "".join("<th>%s</th>" % e(h) for h in head))]
    for row in rows:
        cls = ' class="stuck"' if mark else ""
        out.append("<tr%s>%s</tr>" % (cls, "".join("<td>%s</td>" % e(str(c)) for c in row)))
    out.append("</tbody></table>")
    return "\n".join(out)


def stuck_rows(outbox, records, now):
    by_rid = {}
    for r in records:
        if r["rid"]:
            by_rid.setdefault(r["rid"], []).append(r)
    rows = []
    for e in outbox:
        if e.get("state") not in STUCK and not e.get("stale"):
            continue
        ev = by_rid.get(e["rid"], [])
        age = (now - e["created"]) if e.get("created") and now else None
        rows.append([e["rid"], e.get("state"), "%d.%02d" % divmod(e.get("amount", 0), 100), _utc(e.get("created")),
                     "%dm" % (age // 60) if age is not None else "-", sum(1 for r in ev if r["name"] == "send"),
                     ev[-1]["name"] if ev else "-", next_step(e, ev)])
    return rows


def report_html(data):
    info, status, metrics = data.get("info", {}), data.get("status", {}), data.get("metrics", {})
    records, outbox = data.get("records", []), data.get("outbox", [])
    now = info.get("time") or int(time.time())
    png = base64.b64encode(timeline_png(records, info.get("time") or None)).decode()
    ts, _rel = event_times(records)
    known = [t for t in ts if t is not None]
    period = "%s .. %s" % (_utc(min(known)), _utc(max(known))) if known and not _rel else "uptime only"
    srows = [["live refunds", status.get("live")], ["pending total (minor units)", status.get("pending_total")],
             ["oldest (s)", status.get("oldest_s")], ["stale", status.get("stale")]]
    for st, n in sorted((status.get("states") or {}).items()):
        srows.append(["state " + st, n])
    host = status.get("host") or {}
    srows.append(["host", "up" if host.get("up") else "DOWN" + (" (connected)" if host.get("connected") else "")])
    p = status.get("printer")
    srows.append(["printer", "none" if not p else "%s %s" % (p.get("state"), p.get("detail") or "")])
    irows = [[k, info.get(k)] for k in ("fw", "board", "uid", "reset", "uptime_ms", "time", "flash_free",
                                         "flash_total", "heap_free") if k in info]
    stuck = stuck_rows(outbox, records, now)
    counts = {}
    for r in records:
        counts[r["name"]] = counts.get(r["name"], 0) + 1
    mrows = sorted((metrics.get("counters") or {}).items())
    title = "Refund terminal %s report" % html.escape(str(info.get("uid", "")))
    parts = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>%s</title><style>%s</style></head><body>"
             % (title, CSS),
             "<h1>%s</h1><p>Generated %s UTC from the terminal's service link; %d event records, %s.</p>"
             % (title, _utc(int(time.time())), len(records), html.escape(period)),
             "<h2>Status</h2>", _table("status", ["item", "value"], srows),
             "<h2>Stuck refunds</h2>",
             _table("stuck", ["rid", "state", "amount", "captured (UTC)", "age", "sends", "last event", "next step"],
                    stuck, mark=True) if stuck else '<p id="nothing-stuck">Nothing is stuck.</p>'
             + _table("stuck", ["rid", "state"], [["-", "nothing is stuck"]]),
             "<h2>Timeline</h2>",
             '<img id="timeline" alt="timeline of refunds, sends, host outages and printer faults" '
             'src="data:image/png;base64,%s">' % png,
             "<h2>Terminal</h2>", _table("info", ["item", "value"], irows),
             "<h2>Events</h2>", _table("events", ["event", "count"], sorted(counts.items())),
             "<h2>Counters</h2>", _table("metrics", ["counter", "value"], mrows),
             "<h2>Outbox</h2>", _table("outbox", ["rid", "state", "amount", "captured", "rrn", "auth"],
                                       [[e.get("rid"), e.get("state"), e.get("amount"), _utc(e.get("created")),
                                         e.get("rrn") or "-", e.get("auth") or "-"] for e in outbox]),
             "</body></html>"]
    return "\n".join(parts)
