"""Fault plans of the host simulator (host_tools/hostsim.py): which faults are asked for
(`Faults`) and, for each message, whether one applies (`FaultPlan`).

Every random decision is a hash of (seed, fault, message identity), where the identity of
a request is (terminal id, STAN, MTI, how many times that triple arrived before): the same
seed gives the same faults for the same traffic, whatever the timing or interleaving of
connections. Tests predict faults with `FaultPlan.roll` (HostSim.roll).
"""
import hashlib
import random
from dataclasses import dataclass, field

from host_tools.hostsim_msg import RID_RE, frame

PROBABILITIES = ("drop_request", "drop_answer", "close_mid_frame", "garbage", "bad_mac",
                 "duplicate_answer")


@dataclass
class Faults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop_request: float = 0.0
    drop_answer: float = 0.0
    close_mid_frame: float = 0.0
    garbage: float = 0.0
    bad_mac: float = 0.0
    duplicate_answer: float = 0.0
    decline: list = field(default_factory=list)  # [(code, p)]
    unavailable: list = field(default_factory=list)  # [(code, start_s, duration_s)]
    out_of_order: int = 0  # window; 0 = answers in the order they are ready
    ooo_hold_ms: float = 100.0
    slow_accept_ms: float = 0.0
    outage: list = field(default_factory=list)  # [(start_s, duration_s)]
    never_answer: list = field(default_factory=list)  # rids ignored for ever (a poisoned entry)
    # settlement (--settle-fault): rids the host "lost" from their batch; invent one
    # approved refund per batch and currency at its first reconciliation; drop the first
    # answer of every 0500 and 0320 (the terminal repeats with 0501 / 0321)
    settle_missing: list = field(default_factory=list)
    settle_extra: bool = False
    settle_drop_answer: bool = False

    def add_settle_fault(self, text):
        """One --settle-fault value: 'missing:RID', 'extra' or 'drop-answer'."""
        kind, sep, rid = text.partition(":")
        if kind == "missing" and sep and RID_RE.match(rid):
            self.settle_missing.append(rid)
        elif text == "extra":
            self.settle_extra = True
        elif text == "drop-answer":
            self.settle_drop_answer = True
        else:
            raise ValueError("--settle-fault %r: missing:RID, extra or drop-answer" % text)

    def check(self):
        for name in PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError("%s must be a probability 0..1" % name)
        for code, p in self.decline:
            if len(code) != 2 or code == "00" or not 0.0 <= p <= 1.0:
                raise ValueError("decline %s:%s" % (code, p))
        for code, start, dur in self.unavailable:
            if code not in ("91", "96") or start < 0 or dur < 0:
                raise ValueError("unavailable %s:%s:%s (code 91 or 96)" % (code, start, dur))
        for start, dur in self.outage:
            if start < 0 or dur < 0:
                raise ValueError("outage %s:%s" % (start, dur))
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.slow_accept_ms < 0 or self.out_of_order < 0:
            raise ValueError("negative latency/jitter/slow-accept/out-of-order")
        for rid in self.settle_missing:
            if not isinstance(rid, str) or not RID_RE.match(rid):
                raise ValueError("settle fault missing:%s: not a rid [A-Z0-9-]{1,32}" % rid)


class FaultPlan:
    """The faults of one simulator run: `faults` drawn with `seed`; `count(name)` counts
    each fault applied (HostSim.stats)."""

    def __init__(self, faults, seed, count):
        self.faults = faults
        self.seed = seed
        self._count = count
        self._settle_dropped = set()  # (tid, STAN, 0500 | 0320) whose answer was dropped

    @staticmethod
    def ident(tid, stan, mti, nth=0):
        """The identity fault decisions use for a request: the nth arrival (from 0) of
        this (terminal id, STAN, MTI)."""
        return "%s|%s|%s|%d" % (tid, stan, mti, nth)

    def roll(self, kind, ident):
        """The deterministic draw in [0, 1) for a fault kind ('drop_request',
        'drop_answer', 'close_mid_frame', 'garbage', 'bad_mac', 'duplicate_answer',
        'latency'; 'decline<CODE>' with ident 'tid|rid'): the fault applies if it is
        below the fault's probability. Tests use it to predict faults."""
        h = hashlib.sha256(("%d|%s|%s" % (self.seed, kind, ident)).encode()).digest()
        return int.from_bytes(h[:8], "big") / 2.0 ** 64

    def hits(self, kind, ident):
        """True if the fault `kind` (one of PROBABILITIES) applies to this message."""
        return self.roll(kind, ident) < getattr(self.faults, kind)

    def unavailable(self, t):
        """The code (91/96) 0200/0201 get at t seconds after start, or None."""
        for code, start, dur in self.faults.unavailable:
            if start <= t < start + dur:
                return code
        return None

    def in_outage(self, t, other_than=None):
        """True if an outage (other than the one given) covers t seconds after start."""
        return any(s <= t < s + d for s, d in self.faults.outage if (s, d) != other_than)

    def decline(self, tid, rid):
        """The decline code (--decline) a new refund gets, or None."""
        for code, p in self.faults.decline:
            if self.roll("decline" + code, "%s|%s" % (tid, rid)) < p:
                self._count("declined_fault")
                return code
        return None

    def settle_lost(self):
        """The rids --settle-fault missing: takes out of their batch."""
        return frozenset(self.faults.settle_missing)

    def settle_drop(self, tid, stan, mti):
        """True (once per request chain: terminal id, STAN, 0500/0501 or 0320/0321) if
        --settle-fault drop-answer drops this settlement answer."""
        if not self.faults.settle_drop_answer or mti[:2] not in ("05", "03"):
            return False
        k = (tid, stan, mti[:3])
        if k in self._settle_dropped:
            return False
        self._settle_dropped.add(k)
        self._count("settle_dropped_answers")
        return True

    def delay_ms(self, ident):
        fl = self.faults
        delay = fl.latency_ms
        if fl.jitter_ms:
            delay += (2.0 * self.roll("latency", ident) - 1.0) * fl.jitter_ms
        return delay

    def wire(self, raw, ident):
        """The bytes to send for one encoded answer (with garbage / bad MAC / duplicate
        faults), and whether to close mid-frame."""
        raw = bytearray(raw)
        if self.hits("bad_mac", ident):
            self._count("bad_mac_out")
            c = raw[-1]
            raw[-1] = ord("0") if c != ord("0") else ord("1")
        out = b""
        if self.hits("garbage", ident):
            self._count("garbage")
            rnd = random.Random("%d|garbage-bytes|%s" % (self.seed, ident))
            junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
            out += frame(junk)
        f = frame(bytes(raw))
        if self.hits("close_mid_frame", ident):
            self._count("closed_mid_frame")
            return out + f[:2 + len(raw) // 2], True
        out += f
        if self.hits("duplicate_answer", ident):
            self._count("duplicated")
            out += f
        return out, False
