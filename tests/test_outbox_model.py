"""Proof 2 of issue 3: hypothesis drives the real outbox (on MicroPython, real littlefs,
reboots = new interpreter on the same image) and a simple reference model side by side."""
import json
import os
import shutil
import subprocess

from hypothesis import HealthCheck, given, settings, strategies as st

from host_tools import REPO, vboard

DRIVER = os.path.join(REPO, "tests", "mp", "outbox_driver.py")
CFG = {"max_live": 6, "max_amount": 5000, "max_pending": 12000, "compact_min": 8,
       "keep_n": 4}
Q, A, P, D, CG, C = 1, 2, 3, 4, 5, 6
SENT, PRINTING, SLIP, REV = 1, 2, 4, 8


class Device:
    def __init__(self, img):
        self.img = img
        self.p = None
        self.boot()

    def boot(self):
        if self.p:
            self.p.stdin.close()
            self.p.wait(10)
        env = vboard.board_env(self.img)
        env["MICROPYPATH"] = vboard.mp_path(vboard.FIRMWARE)
        self.p = subprocess.Popen([vboard.micropython(), "-X", "heapsize=256k", DRIVER, json.dumps(CFG)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert json.loads(self.p.stdout.readline())["ready"] == 1

    def __call__(self, **op):
        self.p.stdin.write(json.dumps(op) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, "driver died on %r" % op
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


class Model:
    """The lifecycle rules, stated plainly."""

    def __init__(self):
        self.e = {}  # rid -> [state, flags, amount]

    def live(self):
        return [r for r, (s, f, _) in self.e.items() if not (s in (P, C) or (s == D and f & SLIP))]

    def pending(self):
        return sum(self.e[r][2] for r in self.live() if self.e[r][0] in (Q, CG))

    def accept(self, amount):
        if amount > CFG["max_amount"]:
            return "amount_limit"
        if len(self.live()) >= CFG["max_live"]:
            return "outbox_full"
        if self.pending() + amount > CFG["max_pending"]:
            return "pending_limit"
        return None

    def apply(self, op, rid):
        """New [state, flags] or None when the transition is refused."""
        if rid not in self.live():
            return None
        s, f, a = self.e[rid]
        nxt = {
            "send": (Q, f | SENT) if s == Q else None,
            "approve": (A, f) if s == Q else None,
            "decline": (D, f) if s == Q else None,
            "print_begun": (s, f | PRINTING) if s in (A, D) else None,
            "printed": (P, f) if s == A else None,
            "slip_printed": (D, f | SLIP) if s == D else None,
            "cancel": ((CG if f & SENT else C), f) if s == Q else (s, f) if s == CG else None,
            "reversal_sent": (CG, f | REV) if s == CG else None,
            "reversal_done": (C, f) if s == CG else None,
        }[op]
        if nxt:
            self.e[rid] = [nxt[0], nxt[1], a]
        return nxt


OPS = ["send", "approve", "decline", "print_begun", "printed", "slip_printed", "cancel", "reversal_sent",
       "reversal_done"]
step = st.one_of(
    st.tuples(st.just("accept"), st.sampled_from([1, 250, 999, 4000, 5000, 5001])),
    st.tuples(st.sampled_from(OPS), st.integers(0, 11)),
    st.tuples(st.just("reboot"), st.just(0)),
    st.tuples(st.just("compact"), st.just(0)),
)


def _base(tmp):
    base = os.path.join(tmp, "base.img")
    if not os.path.exists(base):
        d = Device(base)
        d.close()
    return base


@settings(max_examples=int(os.environ.get("REFUND_MODEL_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(step, min_size=5, max_size=40))
def test_outbox_matches_reference_model(tmp_path, steps):
    img = str(tmp_path / "ex.img")
    shutil.copy(_base(str(tmp_path)), img)
    dev, model, rids = Device(img), Model(), []
    try:
        for op, arg in steps:
            if op == "accept":
                r = dev(op="accept", amount=arg, orrn="ORIG00000001")
                want = model.accept(arg)
                if want:
                    assert r == {"refused": want}, (r, want)
                else:
                    rid = r["ok"]
                    assert rid not in model.e
                    model.e[rid] = [Q, 0, arg]
                    rids.append(rid)
            elif op == "reboot":
                dev.boot()
            elif op == "compact":
                assert dev(op="compact") == {"ok": 1}
            elif rids:
                rid = rids[arg % len(rids)]
                want = model.apply(op, rid)
                r = dev(op=op, rid=rid)
                if want is None:
                    assert "bad" in r, (op, rid, r)
                else:
                    assert r == {"ok": list(want)}, (op, rid, r, want)
        for _ in range(2):  # the same after a reboot
            d = dev(op="dump")
            assert d["entries"] == model.e
            assert d["live"] == len(model.live()) and d["pending"] == model.pending()
            dev.boot()
    finally:
        dev.close()
