"""Issue 13, bad input: a 0510 with a bad MAC, a wrong STAN, wrong totals echoed or an
unknown response code is no answer (repeated later as 0501 with the same STAN), never a
closed batch. The terminal's own parts (host_tools/mp/settle_run.py on MicroPython)
settle an empty batch against a scripted host on real TCP that answers every 0500/0501
with the next bad variant, and the right answer last."""
import json
import os
import socket
import subprocess
import threading

import pytest

from conftest import mp_env_path, mp_exe
from host_tools import REPO, vboard
from host_tools.fwrun import KEY
from host_tools.hostsim_msg import decode, encode, frame, split_frames
from host_tools.shop import BENCH_CFG

RUN = os.path.join(REPO, "host_tools", "mp", "settle_run.py")


def _answer(req, variant):
    key = bytes.fromhex(KEY)
    ans = {"t": "0510", "11": req["11"], "39": "00", "15": "1204", "41": req["41"], "49": req["49"],
           "62": req["62"], "74": req["74"], "86": req["86"], "3": req["3"]}
    if variant == "stan":
        ans["11"] = "%06d" % (int(req["11"]) % 999999 + 1)
    elif variant == "totals":
        ans["86"] = "%016d" % (int(req["86"]) + 100)
    elif variant == "code":
        ans["39"] = "12"
    elif variant == "busy":
        ans["39"] = "91"
    elif variant == "date":
        ans["15"] = "1399"
    raw = bytearray(encode(ans, key))
    if variant == "mac":
        raw[-1] ^= 0x01
    return frame(bytes(raw))


class ScriptedHost:
    """Answers each 0500/0501 with the next variant; records what it got."""

    def __init__(self, variants):
        self.variants = list(variants)
        self.got = []
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        with c:
            buf = b""
            while True:
                data = c.recv(4096)
                if not data:
                    return
                buf += data
                msgs, buf = split_frames(buf)
                for raw in msgs:
                    req = decode(raw)
                    self.got.append((req["t"], req["11"], req["3"]))
                    v = self.variants.pop(0) if self.variants else "good"
                    c.sendall(_answer(req, v))

    def close(self):
        self.srv.close()


@pytest.mark.parametrize("interp", ["64", "32"], indirect=True)
def test_bad_0510s_are_no_answer_and_the_batch_closes_on_the_good_one(tmp_path, interp):
    bad = ["mac", "stan", "totals", "code", "busy", "date"]
    host = ScriptedHost(bad)
    try:
        with open(BENCH_CFG) as f:
            cfg = json.load(f)
        cfg["host"] = "127.0.0.1:%d" % host.port
        cfg["host_link"] = {"response_ms": 300, "backoff_base_ms": 20}
        path = str(tmp_path / "cfg.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        env = vboard.board_env(str(tmp_path / "t.img"))
        env.update(REFUND_CONFIG=path, SETTLE_MODE="settle")
        env["MICROPYPATH"] = mp_env_path(interp)
        r = subprocess.run([mp_exe(interp), "-X", "heapsize=" + ("512k" if interp == "64" else "192k"), RUN], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        res = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    finally:
        host.close()
    # Seven requests: one per bad answer, then the one the good answer closed.
    assert len(host.got) == len(bad) + 1, host.got
    mtis = [m for m, _s, _p in host.got]
    assert mtis == ["0500"] + ["0501"] * len(bad), mtis
    assert len({s for _m, s, _p in host.got}) == 1, host.got  # the same STAN throughout
    assert {p for _m, _s, p in host.got} == {"920000"}
    assert res["count"] == 0 and res["diff_n"] == 0, res
    reasons = [ln.split("not taken: ")[1].split(";")[0] for ln in r.stdout.splitlines()
               if "not taken: " in ln]
    # the MAC and STAN ones never reach the task (the link drops them): they time out
    assert reasons == ["totals", "code", "busy", "date"], r.stdout[-3000:]
    assert "batch 000001 closed: 156 0 for 0" in r.stdout, r.stdout[-2000:]
