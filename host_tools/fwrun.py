"""Run the firmware (outbox + host link + sender) on MicroPython against a host:
shared by the host-link tests and `make bench`."""
import json
import os
import subprocess

from host_tools import REPO, vboard

RUNNER = os.path.join(REPO, "host_tools", "mp", "host_run.py")
KEY = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"
TID = "TERM0001"
MID = "MERCHANT0000001"
FAST = {"response_ms": 400, "backoff_base_ms": 30, "backoff_cap_ms": 300, "echo_base_ms": 50,
        "echo_cap_ms": 300, "connect_ms": 1000}


def run_terminal(img, port, n, host=None, timeout=120, **extra):
    cfg = {"port": port, "key": KEY, "tid": TID, "mid": MID, "n": n, "host": dict(FAST, **(host or {}))}
    cfg.update(extra)
    env = vboard.board_env(img)
    env["MICROPYPATH"] = vboard.mp_path(vboard.FIRMWARE)
    cfg_path = img + ".json"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    # The firmware is compiled from source here (not the board's frozen or .mpy code): its
    # compile leaves the heap fragmented, and the 8 KB arrays of max_live 2000 need room.
    r = subprocess.run([vboard.micropython(), "-X", "heapsize=" + extra.get("heap", "320k"), RUNNER,
                        cfg_path], env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")][-1]
    res = json.loads(line[7:])
    res["entries"] = {}
    for l in r.stdout.splitlines():
        if l.startswith("E "):
            _, rid, state, rrn, auth, code, amount = l.split()
            res["entries"][rid] = [state, "" if rrn == "-" else rrn, "" if auth == "-" else auth,
                                   "" if code == "-" else code, int(amount)]
    res["log"] = r.stdout
    return res


def ledger_net(sim):
    """rid -> net money moved (refunds minus reversals), and rid -> refund lines."""
    net, lines = {}, {}
    for rec in sim.ledger:
        net[rec["rid"]] = net.get(rec["rid"], 0) + rec["delta"]
        if rec["type"] == "refund":
            lines.setdefault(rec["rid"], []).append(rec)
    return net, lines


def check_exactly_once(res, sim):
    """The ledger shows each approved rid exactly once; nothing else moved money."""
    net, lines = ledger_net(sim)
    for rid, (state, rrn, auth, code, amount) in res["entries"].items():
        if state in ("approved", "printed"):
            assert len(lines.get(rid, [])) == 1, (rid, lines.get(rid))
            assert net[rid] == amount and lines[rid][0]["rrn"] == rrn and lines[rid][0]["auth"] == auth
        else:
            assert net.get(rid, 0) == 0, (rid, state, net.get(rid))
    for rid in net:
        assert rid in res["entries"], rid


_FILL = """
import board
from refund.outbox import Outbox
board.mount_flash(print)
ob = Outbox("/flash/ob", board.now, print, {"max_live": %d})
ob.recover()
for i in range(%d):
    ob.accept(100 + i, 156, "FILL%%08d" %% i, "01")
print("FILLED", ob.stats()["live"])
"""


def fill_outbox(img, n):
    """Queue n refunds (amounts 100.., original RRNs FILL00000000..) on a flash image, as
    an outage would leave them; the terminal then boots on it."""
    env = dict(vboard.board_env(img), MICROPYPATH=vboard.mp_path(vboard.FIRMWARE))
    r = subprocess.run([vboard.micropython(), "-X", "heapsize=1m", "-c", _FILL % (max(n, 1), n)],
                       env=env, capture_output=True, text=True, timeout=120)
    if "FILLED %d" % n not in r.stdout:
        raise RuntimeError("filling the outbox failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
