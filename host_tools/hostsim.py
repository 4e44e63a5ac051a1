"""refund-hostsim: a conforming payment host for the bench (docs/host-link.md).

  refund-hostsim --listen HOST:PORT --mac-key HEX [--sales FILE] [--ledger FILE]
                 [--seed N] [fault options]

Host duties (docs/host-link.md, "Host duties"):
- 0200/0201 -> 0210. The first answer for each (terminal id, rid) is kept; a later
  0200/0201 with the same rid and the same amount, currency and orrn gets the same
  fields 37, 38, 39 again and moves no money; with a different amount, currency or orrn
  it gets `94` (the kept answer is not touched).
- 0420/0421 -> 0430 `00`. The refund named by `rid` (field 62), or else by the original
  STAN in field 90, is reversed if it was approved and not reversed yet.
- 0800 (70 = 301) -> 0810 `00` with a field 128 MAC.
- Settlement (host_tools/hostsim_settle.py has the details). Each approved refund is
  filed under the `batch` (field 62) of its 0200. 0500/0501 `920000` -> 0510: `00` with
  field 15 when the count and total (fields 74, 86) agree with the host's for that
  terminal, batch and currency (approved, not reversed), the batch closes; else `95`
  with `diff=N`. 0320/0321 -> 0330 `00` with `host=ok|missing|amount:N`; the upload is
  recorded, moves no money, and anything but ok is a difference. 0500/0501 `960000` ->
  `00` with field 15, `extra=RID,...` (refunds only the host has, as many as fit) and
  `extra_n=N`; the batch closes. The same 0500/0501 gets the same answer again; a 0500
  for a closed batch gets the answer that closed it.
- --sales FILE (JSON object: orrn -> amount in minor units, or -> {"amount": N}):
  unknown orrn -> `25`; refunds above the sale's amount (approved, not reversed
  refunds counted) -> `13`. Without it every refund is approved.
- Messages with a bad MAC, that do not decode or break the spec's field rules are
  logged and dropped. A frame length of 0 or above 4096 closes the connection.
- Several requests may be outstanding on a connection; each answer is sent when it is
  ready (latency), so answers are matched by STAN, not by order.

Ledger (--ledger FILE): JSON Lines, one line per money movement:
  {"time": "2026-11-05T10:00:00.123Z", "type": "refund" | "reversal", "tid": ...,
   "rid": ..., "amount": 1234 (minor units, positive), "delta": +1234 | -1234,
   "currency": "156", "rrn": ..., "auth": ..., "orrn": ..., "stan": ..., "batch": ...}
and one per settlement record (no "delta": no money moves): "upload" (the first 0320 of
a rid and the host's view), "difference" (per rid: kind missing | amount | extra, both
amounts), "settlement" (a batch closed, with the answer that closed it); the formats
are in host_tools/hostsim_ledger.py. An existing ledger is read back at start, so
approvals and reversals (not declines), uploads, differences and closed batches survive
a restart of the simulator.

Fault options. Every random decision is a hash of (--seed, fault, message identity),
where the identity of a request is (terminal id, STAN, MTI, how many times that triple
arrived before): the same seed gives the same faults for the same traffic, whatever the
timing or interleaving of connections.
  --latency-ms MEAN[,JITTER]  answer delay, uniform in [MEAN-JITTER, MEAN+JITTER] ms
  --drop-request P            ignore the request (nothing processed, no answer)
  --drop-answer P             process the request (money moves) but send no answer
  --close-mid-frame P         send the length and half of the answer, then close
  --garbage P                 send a frame of junk before the answer
  --bad-mac P                 send the answer with a wrong MAC
  --duplicate-answer P        send the answer twice
  --decline CODE:P            decline a new refund with CODE (repeatable; kept as the
                              answer for that rid; 91/96 are not kept)
  --unavailable CODE:START_S:DURATION_S
                              answer 0200/0201 with CODE (91 or 96) during that period
                              after start, without processing (repeatable)
  --out-of-order [N]          hold answers and send each group of N (default 4, or what
                              has gathered 100 ms after the first) in reverse order of
                              arrival of their requests
  --slow-accept MS            a new connection is served only after MS milliseconds
  --outage START_S:DURATION_S stop listening and close every connection during that
                              period after start (repeatable)
  --never-answer RID          ignore every request for that rid (a poisoned entry)
  --settle-fault missing:RID  the host "lost" that refund from its batch: reconciliation
                              gives 95 and its upload host=missing (repeatable)
  --settle-fault extra        the host invents one approved refund (XTRA-<batch>-<currency>)
                              in each batch at its first reconciliation: 95, then named
                              in the closing 0510's extra=
  --settle-fault drop-answer  process every 0500 and 0320 but drop its first answer:
                              the terminal must repeat with 0501 / 0321

Counters (HostSim.stats, and the last line the command prints on exit): connections,
refused, frames_in, frame_errors, decode_errors, invalid, bad_mac_in, requests,
in_<MTI> (in_0200, in_0201, ...), dropped_requests, dropped_answers, unavailable,
repeats, dup_mismatch, approved, declined, declined_fault, reversed, reversal_noop,
bad_mac_out, garbage, closed_mid_frame, duplicated, reordered, answers_out,
answers_lost_closed, outages, internal_errors; settlement: settled, settle_mismatch,
settle_repeats, settle_closed_repeats, settle_invented, uploads, upload_repeats,
uploads_after_close, differences, settle_dropped_answers. A counter is absent until it
is 1.

Parts: hostsim_msg (MAC, framing, the request rules), hostsim_service (the host duties,
one handler per MTI), hostsim_settle (the settlement handlers), hostsim_ledger, hostsim_faults (Faults and their seeded draws),
hostsim_server (HostSim: the TCP server that ties them). This module is the command line
and the public import path of all of them.

Library use (tests, benches):
  sim = HostSim(mac_key=bytes.fromhex(...), sales={...}, seed=1,
                faults=Faults(drop_answer=0.3))
  sim.start(); port = sim.port; ...; sim.ledger; sim.stats; sim.stop()
  settlement: Faults(settle_missing=["R-1"], settle_extra=True, settle_drop_answer=True);
  sim.batch(tid, "000001", "156"); sim.differences(tid); sim.settlements
"""
import argparse
import json
import logging
import signal
import sys
import threading

from host_tools.hostsim_faults import FaultPlan, Faults
from host_tools.hostsim_ledger import Ledger, Refund
from host_tools.hostsim_msg import (ANSWER_MTI, FIELDS, MAC_LEN, MAX_FRAME, NUMERIC, REQUESTS, RULES,
                                    Invalid, Rule, check_request, encode, frame, mac_field, mac_of,
                                    parse62, verify)
from host_tools.hostsim_server import HostSim
from host_tools.hostsim_service import Service

__all__ = ["HostSim", "Faults", "FaultPlan", "Ledger", "Refund", "Service", "Invalid", "Rule",
           "RULES", "REQUESTS", "ANSWER_MTI", "FIELDS", "NUMERIC", "MAX_FRAME", "MAC_LEN",
           "check_request", "encode", "frame", "mac_field", "mac_of", "parse62", "verify",
           "parse_args", "from_args", "main"]


# ---- command line ----

def _spec_pairs(text, name, kinds):
    """'A:B:C' -> tuple converted by kinds."""
    parts = text.split(":")
    if len(parts) != len(kinds):
        raise argparse.ArgumentTypeError("%s wants %s, got %r" % (name, ":".join(k.__name__ for k in kinds), text))
    try:
        return tuple(k(p) for k, p in zip(kinds, parts))
    except ValueError:
        raise argparse.ArgumentTypeError("bad %s %r" % (name, text)) from None


def _prob(text):
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a probability: %r" % text) from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError("probability must be 0..1: %r" % text)
    return p


def _latency(text):
    mean, _, jitter = text.partition(",")
    try:
        return float(mean), float(jitter or 0)
    except ValueError:
        raise argparse.ArgumentTypeError("--latency-ms MEAN[,JITTER]: %r" % text) from None


def _listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("--listen HOST:PORT: %r" % text)
    return host or "0.0.0.0", int(port)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="refund-hostsim",
                                description="Payment host simulator for the refund terminal "
                                            "(docs/host-link.md).")
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 8583), metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8583; port 0 = any)")
    p.add_argument("--mac-key", required=True, metavar="HEX", help="the terminals' MAC key, hex")
    p.add_argument("--sales", metavar="FILE", help="JSON {orrn: amount}: enables declines 25 and 13")
    p.add_argument("--ledger", metavar="FILE", help="JSON Lines ledger of money movements (appended)")
    p.add_argument("--seed", type=int, help="seed of every fault decision (default: random, logged)")
    p.add_argument("--latency-ms", type=_latency, default=(0.0, 0.0), metavar="MEAN[,JITTER]")
    p.add_argument("--drop-request", type=_prob, default=0.0, metavar="P")
    p.add_argument("--drop-answer", type=_prob, default=0.0, metavar="P",
                   help="process the request, send no answer")
    p.add_argument("--close-mid-frame", type=_prob, default=0.0, metavar="P")
    p.add_argument("--garbage", type=_prob, default=0.0, metavar="P",
                   help="send a junk frame before the answer")
    p.add_argument("--bad-mac", type=_prob, default=0.0, metavar="P")
    p.add_argument("--duplicate-answer", type=_prob, default=0.0, metavar="P")
    p.add_argument("--decline", action="append", default=[], metavar="CODE:P",
                   type=lambda t: _spec_pairs(t, "--decline", (str, float)))
    p.add_argument("--unavailable", action="append", default=[], metavar="CODE:START_S:DURATION_S",
                   type=lambda t: _spec_pairs(t, "--unavailable", (str, float, float)))
    p.add_argument("--out-of-order", type=int, nargs="?", const=4, default=0, metavar="N",
                   help="answer groups of N (default 4) in reverse order of arrival")
    p.add_argument("--slow-accept", type=float, default=0.0, metavar="MS")
    p.add_argument("--outage", action="append", default=[], metavar="START_S:DURATION_S",
                   type=lambda t: _spec_pairs(t, "--outage", (float, float)))
    p.add_argument("--never-answer", action="append", default=[], metavar="RID",
                   help="ignore every request for this rid (a poisoned entry; repeatable)")
    p.add_argument("--settle-fault", action="append", default=[], metavar="missing:RID|extra|drop-answer",
                   help="settlement fault (repeatable): lose a refund from its batch, invent one, "
                        "or drop the first answer of each 0500/0320")
    p.add_argument("-v", "--verbose", action="store_true", help="log every message")
    return p.parse_args(argv)


def from_args(a):
    try:
        key = bytes.fromhex(a.mac_key)
    except ValueError:
        raise SystemExit("refund-hostsim: --mac-key is not hex") from None
    if not key:
        raise SystemExit("refund-hostsim: --mac-key is empty")
    sales = None
    if a.sales:
        with open(a.sales, encoding="utf-8") as f:
            sales = json.load(f)
    faults = Faults(latency_ms=a.latency_ms[0], jitter_ms=a.latency_ms[1],
                    drop_request=a.drop_request, drop_answer=a.drop_answer,
                    close_mid_frame=a.close_mid_frame, garbage=a.garbage, bad_mac=a.bad_mac,
                    duplicate_answer=a.duplicate_answer, decline=a.decline,
                    unavailable=a.unavailable, out_of_order=a.out_of_order,
                    slow_accept_ms=a.slow_accept, outage=a.outage, never_answer=a.never_answer)
    try:
        for text in a.settle_fault:
            faults.add_settle_fault(text)
        faults.check()
    except ValueError as e:
        raise SystemExit("refund-hostsim: %s" % e) from None
    host, port = a.listen
    return HostSim(key, host, port, sales=sales, ledger_path=a.ledger, seed=a.seed, faults=faults)


def main(argv=None):
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s hostsim %(levelname)s %(message)s")
    sim = from_args(a)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sim.start()
    print(json.dumps({"listen": "%s:%d" % (sim.host, sim.port), "seed": sim.seed}), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        print(json.dumps({"stats": sim.stats, "ledger_lines": len(sim.ledger)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
