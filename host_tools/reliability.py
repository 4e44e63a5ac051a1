"""`docs/reliability.md` from `docs/reliability.json` (nothing typed by hand; a test checks
the document is what this makes from the JSON).

The JSON has one top-level key per campaign. Fuzz campaigns are under keys starting
`fuzz_`; other campaigns (the whole-terminal soak, ...) add their own key and a section
function to SECTIONS. Each fuzz test writes one JSON line of its results with `record()`
into $REFUND_SOAK_DIR (make soak: build/soak/fuzz-<campaign>.json); `python -m
host_tools.reliability --collect build/soak` merges those files into the JSON and
renders the Markdown; without --collect it renders only.
"""
import argparse
import glob
import json
import os
import platform
import time

from host_tools import REPO

JSON_PATH = os.path.join(REPO, "docs", "reliability.json")
MD_PATH = os.path.join(REPO, "docs", "reliability.md")

# What each fuzz campaign is, what it checks and how to run it alone; the order is the
# document's.
FUZZ = {
    "fuzz_host_frames": (
        "Host frames against the running host link",
        "A fuzzing TCP server answers the firmware's `refund.hostlink.Link` + "
        "`refund.sender.Sender` (outbox on littlefs, MicroPython) with mutated 0210 / 0430 / "
        "0810 frames while refunds are queued, sent and cancelled: bad MAC, wrong STAN, "
        "truncated, oversized or zero lengths, garbage, valid-MAC answers with rule-breaking "
        "fields, and now and then a genuine answer. Checked: only a genuine (verified, "
        "matching) answer changed an entry, the sender task never died; then the real host "
        "simulator takes the port and every refund ends approved (cancelled ones cancelled) "
        "with the money moved exactly once.",
        "tests/test_fuzz_host.py"),
    "fuzz_ecr_frames": (
        "ECR frames against the running terminal",
        "The whole virtual-board terminal (host simulator, printer emulator) gets fuzzed ECR "
        "frames on its ECR tty: damaged frames (bit flips, cuts, inserted bytes, noise, "
        "oversized headers) and well-framed requests that break the rules (unknown "
        "commands, bad amounts, currencies, RRNs, PINs, seq), among genuine REFUND requests. "
        "Checked: every refund the terminal acknowledged is kept and ends printed, nothing "
        "else was taken, and the ECR task still answers.",
        "tests/test_fuzz_ecr.py"),
    "fuzz_service_frames": (
        "Service frames against the running terminal",
        "Bad CRC, truncated, oversized, Ctrl-C inside frames, garbage between frames, non-JSON "
        "and random JSON requests on the USB console while the till takes refunds. Checked: "
        "the application keeps running, every refund taken is printed, no reply carries a "
        "secret.",
        "tests/test_service_fuzz.py"),
    "fuzz_printer_status": (
        "Printer status bytes against the printer driver",
        "The firmware's `refund.printer.Printer` (outbox on littlefs, MicroPython) over a real "
        "pty whose other end answers every status request with random bytes, wrong replies, "
        "noise and silence, while approved refunds wait to print. Checked: no receipt is "
        "marked printed without a genuine completion (the model's GS I 67 frame, which the "
        "noise never sends once the driver has learnt it), the printer task never dies; then "
        "the printer emulator takes the line and every approved refund ends printed, with one "
        "complete original of each copy, or only REPRINTs if its print had begun on the noisy "
        "line (never an original after that).",
        "tests/test_fuzz_printer.py"),
    "fuzz_config": (
        "Config files through `refund.config.load`",
        "Random mutations of the bench config (wrong types, out-of-range values, missing and "
        "unknown keys, huge strings, bad JSON, truncation, non-UTF-8 bytes) loaded on "
        "MicroPython. Checked: each case loads a config that validates or raises ConfigError "
        "with one `key: what` line per problem; never another exception; no secret (mac_key, "
        "tech_key, PIN hashes, salts) in any message.",
        "tests/test_fuzz_config.py"),
}


def record(campaign, n, seed, categories, violations, **extra):
    """One campaign's results as a JSON line in $REFUND_SOAK_DIR/<campaign>.json (only when
    the variable is set: make soak sets it, make test does not)."""
    d = os.environ.get("REFUND_SOAK_DIR")
    if not d:
        return None
    os.makedirs(d, exist_ok=True)
    res = {"campaign": campaign, "n": n, "seed": seed, "categories": categories,
           "violations": violations, "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "machine": "%s, %d cpus" % (platform.machine(), os.cpu_count() or 1)}
    res.update(extra)
    path = os.path.join(d, campaign.replace("fuzz_", "fuzz-") + ".json")
    with open(path, "w") as f:
        f.write(json.dumps(res, sort_keys=True) + "\n")
    return path


def load(path=JSON_PATH):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def collect(src_dir, doc):
    """Merge every results line under src_dir into doc (key = the campaign)."""
    for p in sorted(glob.glob(os.path.join(src_dir, "*.json"))):
        with open(p) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    doc[r["campaign"]] = r
    return doc


def _fmt(n):
    return "{:,}".format(n)


def fuzz_md(key, r):
    title, what, test = FUZZ.get(key, (key, "", ""))
    cats = r.get("categories", {})
    out = ["### %s" % title, ""]
    if what:
        out += [what, ""]
    out += ["- cases: **%s**, seed **%s**, violations: **%d**" % (_fmt(r["n"]), r["seed"],
                                                                   len(r.get("violations", [])))]
    for k in sorted(r.get("checked", {})):
        out.append("- %s: %s" % (k, _fmt(r["checked"][k]) if isinstance(r["checked"][k], int)
                                 else r["checked"][k]))
    if "seconds" in r:
        out.append("- time fuzzing: %d s (%s, %s)" % (r["seconds"], r.get("machine", "?"), r.get("date", "?")))
    if test:
        out.append("- reproduce: `REFUND_FUZZ_N=%d REFUND_FUZZ_SEED=%s .venv/bin/python -m pytest -q -s %s`"
                   % (r["n"], r["seed"], test))
    for f in FOUND.get(key, ()):
        out.append("- found and fixed: " + f)
    out += ["", "| category | cases |", "|---|---:|"]
    for k in sorted(cats):
        out.append("| %s | %s |" % (k, _fmt(cats[k])))
    for v in r.get("violations", [])[:20]:
        out.append("")
        out.append("violation: `%s`" % v)
    return out + [""]


def fuzz_section(doc):
    keys = [k for k in FUZZ if k in doc] + sorted(k for k in doc if k.startswith("fuzz_") and k not in FUZZ)
    if not keys:
        return []
    out = ["## Fuzz campaigns", "",
           "`make soak` runs each campaign at REFUND_FUZZ_N=10000 (seeds fixed, REFUND_FUZZ_SEED "
           "overrides) and regenerates this file; `make test` runs a short version of each. "
           "A failing case prints its seed and the case.", ""]
    total = sum(doc[k]["n"] for k in keys)
    out += ["| campaign | cases | seed | violations |", "|---|---:|---:|---:|"]
    for k in keys:
        out.append("| %s | %s | %s | %d |" % (FUZZ.get(k, (k,))[0], _fmt(doc[k]["n"]), doc[k]["seed"],
                                             len(doc[k].get("violations", []))))
    out += ["| total | %s | | |" % _fmt(total), ""]
    for k in keys:
        out += fuzz_md(k, doc[k])
    return out


# Defects a campaign found, fixed with a test that failed before the fix.
FOUND = {
    "fuzz_host_frames": [
        "An 0800 echo that timed out (host back, its 0810 lost or not verifying) killed the "
        "sender task: the probe read the TIMEOUT result as an answer dict "
        "(`tests/test_fuzz_host.py::test_an_echo_left_unanswered_does_not_kill_the_sender`)."],
    "fuzz_config": [
        "A non-UTF-8 byte in the file raised UnicodeError, and a file too big for the heap "
        "MemoryError, out of `config.load` (the boot catches ConfigError only); both are now "
        "a `config: ...` line "
        "(`tests/test_fuzz_config.py::test_non_utf8_and_too_big_files_are_config_errors`).",
        "A key pasted into `currencies` came back in the error message; a value that is not "
        "an integer is now named by its type "
        "(`tests/test_fuzz_config.py::test_a_secret_pasted_under_another_key_is_not_echoed`)."],
}


POWERCUT = {
    "powercut_settle": ("Power cut at every flash write during a settlement",
                        "The whole terminal settles 100 refunds with a forced upload (the host "
                        "lost one) while three more are taken; cut at the k-th program/erase "
                        "after the start, a fresh interpreter resumes. Checked: the batch closed "
                        "once on both sides with the terminal's totals, every refund in exactly "
                        "one batch, the lost refund on every slip, later copies REPRINT."),
    "powercut_day": ("Power cut at every flash write over a shop day",
                     "A fresh terminal: 6 refunds from the ECR, sent, approved, printed, then "
                     "settled; cut at the k-th write, then the ECR resends every request. "
                     "Checked: each request got the rid it was first given, the host holds each "
                     "once, no copy printed twice as an original, the batch closed once."),
}


def powercut_section(doc):
    keys = sorted(k for k in doc if k.startswith("powercut_"))
    if not keys:
        return []
    out = ["## Power-cut campaigns (tests/test_settle_powercut.py)", "",
           "`make soak` runs every cut point, clean (the write lost) and torn (the block half "
           "written), on the 64-bit build and the 32-bit frozen one (`REFUND_SETTLE_CUTS=all`); "
           "`make test` a sample of clean cuts on 64-bit. The cut points are the flash "
           "programs and erases counted from the start of the session (no seed: every one is "
           "cut).", "",
           "| campaign | build | writes in the session | cut points (clean + torn) | violations |",
           "|---|---|---:|---:|---:|"]
    for k in keys:
        d = doc[k]
        title = POWERCUT.get(d.get("kind", ""), (k,))[0]
        out.append("| %s | %s-bit | %d | %s | %d |" % (title, d.get("interp", "?"), d.get("writes", 0),
                                                      _fmt(d["n"]), len(d.get("violations", []))))
    out.append("")
    for kind in sorted(POWERCUT):
        out += ["- **%s.** %s" % POWERCUT[kind]]
    return out + [""]


def soak_section(doc):
    from host_tools import soak

    return soak.soak_section(doc)


# One function per section, each given the whole JSON: add yours here.
SECTIONS = [fuzz_section, soak_section, powercut_section]


def markdown(doc):
    out = ["# Reliability", "",
           "Generated by `python -m host_tools.reliability` from `docs/reliability.json` "
           "(`make soak` writes both); do not edit by hand.", ""]
    for sec in SECTIONS:
        out += sec(doc)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--collect", metavar="DIR", help="merge the results files of DIR first")
    ap.add_argument("--json", default=JSON_PATH)
    ap.add_argument("--md", default=MD_PATH)
    a = ap.parse_args(argv)
    doc = load(a.json)
    if a.collect:
        doc = collect(a.collect, doc)
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
    with open(a.md, "w") as f:
        f.write(markdown(doc))
    print("wrote %s" % a.md)


if __name__ == "__main__":
    main()
