"""The service link's log pull on the running terminal (issue 10), a small version of
`make bench`'s "Service link: log pull" (no timing here: speed is the benchmark's):
a 32 KiB event log in 8 segments, written with refund.evlog on the flash image, pulled
over the (unthrottled) console with svclink `logs` requests until next == head: every
record arrives once, seqs contiguous, CRCs good (evdecode); a pull cut inside a frame
and resumed from `next` of the last whole frame re-sends at most that one frame."""
from host_tools import bench_svc


def _shop(tmp_path):
    info = bench_svc.prefill(str(tmp_path / "terminal.img"), 32768, cap=32768, segments=8)
    assert len(info["segments"]) >= 4, info  # the pull crosses segment files
    return info, bench_svc.SvcShop(tmp_path, baud=None)


def test_full_pull_then_resumed_pull(tmp_path):
    info, s = _shop(tmp_path)
    try:
        con = s.board.ends["console"]
        c = bench_svc.TapClient(con, timeout=5)
        log = c.call("info")["log"]
        r = bench_svc.pull(c, 0, max_bytes=8192)
        c.close()
        seqs, st = bench_svc.check_records(r["body"])  # CRCs good, contiguous
        assert seqs[0] == log["first"] == info["first"]
        assert r["next"] == r["head"] and seqs[-1] == r["head"] - 1
        assert st["records"] == r["head"] - log["first"] >= info["head"] - info["first"]
        assert r["requests"] > 1 and r["frames"] > r["requests"]  # several replies, several frames each
        assert max(r["sizes"]) <= 2048
        # the prefilled refunds are all there, in order, as written
        rids = [x["rid"] for x in bench_svc.evdecode.decode(r["body"]) if x["name"] == "captured"]
        assert rids[:3] == ["PREF-000001", "PREF-000002", "PREF-000003"]
        assert len(rids) >= info["refunds"]

        # Cut inside a frame after half the log, resume with a new client from `next`.
        c1 = bench_svc.TapClient(con, timeout=5)
        r1 = bench_svc.pull(c1, 0, max_bytes=8192, cut_after=len(r["body"]) // 2, cut_extra=300)
        # (the client may already hold the next frames whole: one read takes what the tty
        # has; the benchmark reports where the cut fell; here the resume must be exact)
        c2 = bench_svc.TapClient(con, timeout=5)
        r2 = bench_svc.pull(c2, r1["next"], max_bytes=8192)
        c2.close()
        s1, _ = bench_svc.check_records(r1["body"])
        s2, _ = bench_svc.check_records(r2["body"])
        assert not set(s1) & set(s2)  # nothing delivered twice
        assert s2[0] == s1[-1] + 1 == r1["next"] and s2[-1] == r2["head"] - 1
        assert s1 + s2 == list(range(seqs[0], r2["head"]))
        # What the board sends again is the cut frame's records only: the resumed pull's
        # first frame starts at `next` and holds at most one frame's body.
        assert r2["sizes"][0] <= 2048
        assert r1["body"] == r["body"][:len(r1["body"])]  # the same records, byte for byte
        # frames of the abandoned reply that still arrive are recognised (other id), not damage
        own = {x[0] for x in c2.sent}
        stale = [x for x in c2.seen if x[0] not in own]
        assert all(x[0] in {y[0] for y in c1.sent} for x in stale)
    finally:
        s.close()
