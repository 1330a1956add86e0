"""The download kind against a real HTTP server (futured-testhttp): the bodies that arrive, the
failure code of each way a server can misbehave, the URL and path checks at submit, cancel, and
progress events. A failed download must leave nothing in the download directory, temporary files
included."""
import os
import signal
import socket
import time

import msgpack
import pytest

from conftest import wait_for
from httpserver import FLAGS, start_testhttp, testhttp  # noqa: F401 (fixtures)

CODES = sorted(p.name for p in FLAGS.iterdir() if p.is_dir())


def submit(daemon, group=None, **args):
    job = {"kind": "download", "args": args}
    if group:
        job["group"] = group
    r = daemon.c.rq("submit", jobs=[job])
    assert r["ok"], r
    return r["ids"][0]


def outcome(daemon, fid, wait=10.0):
    """The `result` reply, waiting at most `wait` seconds for it."""
    r = daemon.c.rq("result", future=fid, timeout=wait, reply_timeout=wait + 5)
    assert r["ok"], r
    return r


def download(daemon, wait=10.0, **args):
    return outcome(daemon, submit(daemon, **args), wait)


def files(daemon):
    """Everything in the download directory, dot files (temporary files) included."""
    return sorted(p.name for p in daemon.download_dir.iterdir())


def pattern(n):
    """The body of /misbehave/large?bytes=n: byte i is i % 251."""
    return bytes(i % 251 for i in range(251)) * (n // 251) + bytes(range(n % 251))


def state_of(daemon, fid):
    return daemon.c.rq("status", ids=[fid])["states"][0]


# ---- bodies that arrive ------------------------------------------------------------------------

def test_flags_tree_is_complete():
    assert len(CODES) == 194
    for cc in CODES:
        assert (FLAGS / cc / f"{cc}.gif").is_file(), cc


def test_inline_batch_of_every_flag_is_byte_identical(daemon, testhttp):
    jobs = [{"kind": "download", "args": {"url": f"{testhttp.url}/flags/{cc}/{cc}.gif",
                                          "inline": True}} for cc in CODES]
    r = daemon.c.rq("submit", jobs=jobs)
    assert r["ok"], r
    for cc, fid in zip(CODES, r["ids"]):
        res = outcome(daemon, fid)
        assert res["state"] == "done", (cc, res)
        body = (FLAGS / cc / f"{cc}.gif").read_bytes()
        got = res["result"]
        assert got["status"] == "ok" and got["http_status"] == 200, got
        assert got["content_type"] == "image/gif"
        assert got["bytes"] == len(body)
        assert got["body"] == body, cc
        assert "path" not in got
    assert files(daemon) == []


def test_file_download_is_byte_identical_and_leaves_only_the_file(daemon, testhttp):
    (daemon.download_dir / "sub").mkdir()
    for cc, path in [("br", "br.gif"), ("ar", "sub/ar.gif")]:
        res = download(daemon, url=f"{testhttp.url}/flags/{cc}/{cc}.gif", path=path)
        assert res["state"] == "done", res
        body = (FLAGS / cc / f"{cc}.gif").read_bytes()
        assert res["result"]["path"] == path
        assert res["result"]["bytes"] == len(body)
        assert "body" not in res["result"]
        assert (daemon.download_dir / path).read_bytes() == body
    assert files(daemon) == ["br.gif", "sub"]
    assert os.listdir(daemon.download_dir / "sub") == ["ar.gif"]


def test_large_file_download_arrives_whole(daemon, testhttp):
    n = 3_000_017
    for path, q in [("big", ""), ("big-chunked", "&chunked=1")]:
        res = download(daemon, url=f"{testhttp.url}/misbehave/large?bytes={n}{q}", path=path)
        assert res["state"] == "done", res
        assert res["result"]["bytes"] == n
        assert (daemon.download_dir / path).read_bytes() == pattern(n)
    assert files(daemon) == ["big", "big-chunked"]


@pytest.mark.parametrize("inline", [True, False])
def test_404_is_done_with_status_not_found(daemon, testhttp, inline):
    args = {"inline": True} if inline else {"path": "zz.gif"}
    res = download(daemon, url=f"{testhttp.url}/flags/zz/zz.gif", **args)
    assert res["state"] == "done", res
    assert res["result"]["status"] == "not_found"
    assert res["result"]["http_status"] == 404
    assert res["result"]["bytes"] == 0
    assert "body" not in res["result"] and "path" not in res["result"]
    assert files(daemon) == []


# ---- failures ----------------------------------------------------------------------------------

# (server path, extra args, failure code, a fragment of the message, http_status or None)
FAILURES = {
    "teapot": ("/misbehave/status?code=418", {}, "http_error", "I'm a Teapot", 418),
    "server-error": ("/misbehave/status?code=503", {}, "http_error", "Service Unavailable", 503),
    "trickle-timeout": ("/misbehave/trickle", {"timeout": 0.5}, "timeout", "0.5 s", None),
    "slow-headers-timeout": ("/misbehave/slow-headers", {"timeout": 0.5}, "timeout", "0.5 s", None),
    # curl: CURLE_PARTIAL_FILE, "transfer closed with 500 bytes remaining to read"
    "short-body": ("/misbehave/short", {}, "connection", "partial file", None),
    "large-content-length": ("/misbehave/large?bytes=100000", {"max_bytes": 50000},
                             "too_large", "50000", None),
    "large-chunked": ("/misbehave/large?bytes=100000&chunked=1", {"max_bytes": 50000},
                      "too_large", "50000", None),
    "redirect-loop": ("/misbehave/loop", {}, "too_many_redirects", "5 redirects", None),
    "redirect-limit": ("/misbehave/loop", {"max_redirects": 0}, "too_many_redirects",
                       "0 redirects", None),
    # curl: CURLE_UNSUPPORTED_PROTOCOL (REDIR_PROTOCOLS is http,https)
    "redirect-to-file": ("/misbehave/tofile", {}, "bad_url", "not http or https", None),
    # curl: CURLE_RECV_ERROR, "Recv failure: Connection reset by peer"
    "reset": ("/misbehave/reset", {}, "connection", "reset by peer", None),
}


@pytest.mark.parametrize("case", FAILURES.keys())
@pytest.mark.parametrize("inline", [False, True], ids=["file", "inline"])
def test_failure_code_and_nothing_left_behind(daemon, testhttp, case, inline):
    path, extra, code, fragment, http_status = FAILURES[case]
    target = {"inline": True} if inline else {"path": "out.bin"}
    t0 = time.monotonic()
    res = download(daemon, url=testhttp.url + path, **target, **extra)
    elapsed = time.monotonic() - t0
    assert res["state"] == "failed", res
    assert "result" not in res
    assert res["failure"]["code"] == code, res
    assert fragment in res["failure"]["message"], res
    assert res["failure"].get("http_status") == http_status, res
    assert b"root:" not in msgpack.packb(res)  # nothing of /etc/passwd, whatever happened
    if code == "timeout":
        assert 0.45 <= elapsed < 2.0, elapsed
    assert files(daemon) == []


def test_inline_body_over_8_mib_is_too_large(daemon, testhttp):
    res = download(daemon, url=f"{testhttp.url}/misbehave/large?bytes={9 << 20}&chunked=1",
                   inline=True)
    assert res["state"] == "failed" and res["failure"]["code"] == "too_large", res


def test_tiny_timeout_still_times_out(daemon, testhttp):
    # 0.0001 s is a valid timeout; it must not round down to curl's "no timeout".
    res = download(daemon, wait=3.0, url=f"{testhttp.url}/misbehave/trickle", path="t",
                   timeout=0.0001)
    assert res["state"] == "failed" and res["failure"]["code"] == "timeout", res
    assert files(daemon) == []


def test_connection_refused(daemon):
    # A bound socket that does not listen: the kernel refuses connections to its port, and no
    # other process can take the port meanwhile.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        res = download(daemon, url=f"http://127.0.0.1:{port}/flags/br/br.gif", path="br.gif")
    assert res["state"] == "failed", res
    assert res["failure"]["code"] == "connection", res
    assert files(daemon) == []


def test_error_mode_outcomes_follow_seed_and_path(daemon, start_testhttp):
    """In error mode each flag gets what --explain says, whatever the order of arrival."""
    server = start_testhttp("--mode", "error", "--error-rate", "0.5", "--seed", "1234")
    expected = {cc: server.explain(f"/flags/{cc}/{cc}.gif") for cc in CODES}
    tally = {"200": 0, "418": 0}
    for cc in expected:
        tally[expected[cc]] += 1
    assert tally["200"] > 50 and tally["418"] > 50, tally
    # Twice, in opposite orders, four at a time: the same outcome per flag.
    for order in (CODES, CODES[::-1]):
        r = daemon.c.rq("submit", jobs=[{"kind": "download", "args": {
            "url": f"{server.url}/flags/{cc}/{cc}.gif", "inline": True}} for cc in order])
        assert r["ok"], r
        for cc, fid in zip(order, r["ids"]):
            res = outcome(daemon, fid)
            if expected[cc] == "200":
                assert res["state"] == "done", (cc, res)
                assert res["result"]["body"] == (FLAGS / cc / f"{cc}.gif").read_bytes()
            else:
                assert res["state"] == "failed", (cc, res)
                assert res["failure"]["code"] == "http_error"
                assert res["failure"]["http_status"] == 418
                assert "I'm a Teapot" in res["failure"]["message"]


def test_delay_mode_waits_the_explained_delay(daemon, start_testhttp):
    server = start_testhttp("--mode", "delay", "--delay-min", "0.1", "--delay-max", "0.4",
                            "--seed", "7")
    codes = CODES[:4]
    out = {}
    for cc in codes:
        status, delay = server.explain_line(f"/flags/{cc}/{cc}.gif")
        assert status == "200"
        out[cc] = delay
    assert len(set(out.values())) == len(codes)  # drawn, not fixed
    r = daemon.c.rq("submit", jobs=[{"kind": "download", "args": {
        "url": f"{server.url}/flags/{cc}/{cc}.gif", "inline": True}} for cc in codes])
    assert r["ok"], r
    for cc, fid in zip(codes, r["ids"]):
        res = outcome(daemon, fid)
        assert res["state"] == "done", res
        assert out[cc] - 0.01 <= res["result"]["elapsed"] < out[cc] + 0.5, (cc, out[cc], res)


# ---- submit-time checks ------------------------------------------------------------------------

def submitted(daemon):
    return daemon.c.rq("stats")["stats"]["submitted"]


def test_bad_urls_are_rejected_at_submit(daemon, testhttp):
    before = submitted(daemon)
    for url in ["file:///etc/passwd", "gopher://x", "ftp://x", "no-scheme", "garbage ::", ""]:
        r = daemon.c.rq("submit", jobs=[{"kind": "download", "args": {"url": url}}])
        assert not r["ok"], (url, r)
        assert r["error"]["code"] == "bad_url", (url, r)
        assert r["error"]["field"] == "url" and r["error"]["index"] == 0, (url, r)
    # A batch is all or nothing: a good job before a bad one is not queued either.
    r = daemon.c.rq("submit", jobs=[
        {"kind": "download", "args": {"url": f"{testhttp.url}/flags/br/br.gif", "inline": True}},
        {"kind": "download", "args": {"url": "ftp://x"}}])
    assert not r["ok"] and r["error"]["code"] == "bad_url" and r["error"]["index"] == 1, r
    assert submitted(daemon) == before


def test_bad_paths_are_rejected_at_submit(daemon, testhttp, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (daemon.download_dir / "link").symlink_to(outside)
    before = submitted(daemon)
    for path in ["/tmp/x", "../x", "a/../../x", "link/x.gif"]:
        r = daemon.c.rq("submit", jobs=[{"kind": "download", "args": {
            "url": f"{testhttp.url}/flags/br/br.gif", "path": path}}])
        assert not r["ok"], (path, r)
        assert r["error"]["code"] == "bad_args", (path, r)
        assert r["error"]["field"] == "path", (path, r)
    assert submitted(daemon) == before
    assert files(daemon) == ["link"]
    assert list(outside.iterdir()) == []


# ---- cancel and progress -----------------------------------------------------------------------

def test_cancel_stops_the_transfer_at_once(start_daemon, testhttp):
    # One pool thread: the next download can only run once the cancelled one let go of it.
    daemon = start_daemon("--threads", "1", "--processes", "1")
    fid = submit(daemon, url=f"{testhttp.url}/misbehave/trickle", path="t.bin", timeout=60)
    wait_for(lambda: state_of(daemon, fid) == "running" and files(daemon), 3,
               "the trickle did not start writing its temporary file")
    assert files(daemon)[0].startswith(".t.bin.") and files(daemon)[0].endswith(".part")
    t0 = time.monotonic()
    assert daemon.c.rq("cancel", ids=[fid])["cancelled"] == [True]
    nxt = submit(daemon, url=f"{testhttp.url}/flags/br/br.gif", path="br.gif")
    res = outcome(daemon, nxt, wait=2.0)
    assert res["state"] == "done", res
    assert time.monotonic() - t0 < 0.5
    assert outcome(daemon, fid)["state"] == "cancelled"
    wait_for(lambda: files(daemon) == ["br.gif"], 0.5, f"left behind: {files(daemon)}")


def next_event(sub, timeout):
    if not sub.poll(int(timeout * 1000)):
        return None, None
    topic, body = sub.recv_multipart()
    return topic, msgpack.unpackb(body)


def test_progress_events_during_a_trickle(daemon, testhttp):
    # Closed however the test ends: an open socket would hang the daemon fixture's ctx.term().
    with daemon.subscriber("progress/") as sub:
        trickle_progress(daemon, testhttp, sub)


def trickle_progress(daemon, testhttp, sub):
    fid = submit(daemon, group="flags-1", url=f"{testhttp.url}/misbehave/trickle", path="t.bin",
                 timeout=30)
    deadline = time.monotonic() + 3
    ev = None
    while time.monotonic() < deadline:
        topic, ev = next_event(sub, deadline - time.monotonic())
        if ev and ev["id"] == fid and ev["bytes"] > 0:
            break
    else:
        pytest.fail("no progress event with bytes for the trickle")
    assert topic == b"progress/flags-1"
    assert ev["state"] == "running" and ev["kind"] == "download" and ev["group"] == "flags-1"
    assert ev["total"] == 1000000
    daemon.c.rq("cancel", ids=[fid])
    wait_for(lambda: files(daemon) == [], 1, f"left behind: {files(daemon)}")


def test_progress_events_count_up_during_a_slow_large_download(daemon, testhttp):
    with daemon.subscriber("progress/") as sub:
        large_progress(daemon, testhttp, sub)


def large_progress(daemon, testhttp, sub):
    n = 24000
    fid = submit(daemon, url=f"{testhttp.url}/misbehave/large?bytes={n}&rate=20000", path="big")
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _, ev = next_event(sub, 0.3)
        if ev and ev["id"] == fid:
            seen.append(ev["bytes"])
        if state_of(daemon, fid) != "running" and not ev:
            break
    assert len(seen) >= 2, seen
    assert seen == sorted(seen) and 0 < seen[0] < n, seen
    res = outcome(daemon, fid)
    assert res["state"] == "done", res
    assert (daemon.download_dir / "big").read_bytes() == pattern(n)


# ---- the transfer pool: downloads do not hold threads, and --transfers bounds them -------------

def test_downloads_run_beside_a_busy_thread_pool(start_daemon, start_testhttp):
    """With the only thread asleep, eight slow downloads still run at once and finish: the
    transfer pool is not the thread pool."""
    srv = start_testhttp("--mode", "delay", "--delay", "1")
    d = start_daemon("--threads", "1", "--prefetch", "0", "--transfers", "8")
    c = d.c
    sleeper = c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 60}}])["ids"][0]
    wait_for(lambda: state_of(d, sleeper) == "running", 10, "the sleep job never ran")
    ids = c.rq("submit", jobs=[{"kind": "download", "args": {"url": f"{srv.url}/flags/{cc}/{cc}.gif"}}
                               for cc in CODES[:8]])["ids"]
    # Running means the transfer thread has taken it (until then it reports pending).
    wait_for(lambda: c.rq("status", ids=ids)["states"] == ["running"] * 8, 10,
               "the eight downloads were never running together")
    assert c.rq("stats")["stats"]["transfers_running"] == 8
    res = c.rq("results", ids=ids, timeout=20, reply_timeout=25)
    assert [r["state"] for r in res["results"]] == ["done"] * 8, res
    assert state_of(d, sleeper) == "running"
    c.rq("cancel", ids=[sleeper])


def test_transfers_limit_keeps_the_rest_pending(start_daemon, start_testhttp):
    srv = start_testhttp("--mode", "delay", "--delay", "30")
    d = start_daemon("--transfers", "2")
    c = d.c
    ids = c.rq("submit", jobs=[{"kind": "download", "args": {"url": f"{srv.url}/flags/{cc}/{cc}.gif"}}
                               for cc in CODES[:5]])["ids"]
    wait_for(lambda: c.rq("stats")["stats"]["transfers_running"] == 2, 10,
               "two downloads never started")
    time.sleep(0.2)  # give a third the chance it must not take
    assert c.rq("status", ids=ids)["states"] == ["running"] * 2 + ["pending"] * 3
    # Cancelling a running one lets the next pending one start.
    assert c.rq("cancel", ids=[ids[0]])["cancelled"] == [True]
    wait_for(lambda: c.rq("status", ids=ids)["states"][2] == "running", 10,
               "the third download did not take the freed place")
    assert c.rq("status", ids=ids)["states"] == ["cancelled", "running", "running", "pending",
                                                 "pending"]
    c.rq("cancel", ids=ids)
    wait_for(lambda: c.rq("stats")["stats"]["transfers_running"] == 0, 10,
               "cancelled transfers were not handed back")


def test_sigterm_with_downloads_running_leaves_no_file(start_daemon, start_testhttp):
    """At SIGTERM a pending download is cancelled, running ones fail with `shutdown` when the grace
    period ends, the daemon exits 0, and no temporary file is left in the download directory."""
    srv = start_testhttp("--mode", "delay", "--delay", "30")
    d = start_daemon("--transfers", "2", "--grace", "0.3")
    c = d.c
    ids = c.rq("submit", jobs=[{"kind": "download", "args": {
        "url": f"{srv.url}/flags/{cc}/{cc}.gif", "path": f"{cc}.gif"}} for cc in CODES[:3]])["ids"]
    wait_for(lambda: c.rq("status", ids=ids)["states"] == ["running", "running", "pending"], 10,
               "two downloads never ran")
    waiters = []
    for fid in ids:
        cl = d.client()
        waiters.append((cl, cl.send(op="result", future=fid)))
    wait_for(lambda: c.rq("stats")["stats"]["clients_deferred"] == 3, 10, "three deferred results")
    d.proc.send_signal(signal.SIGTERM)
    got = []
    for cl, rid in waiters:
        r = cl.recv(10.0)
        assert r["id"] == rid, r
        got.append((r["state"], r.get("failure", {}).get("code")))
    assert got == [("failed", "shutdown"), ("failed", "shutdown"), ("cancelled", None)], got
    assert d.proc.wait(10) == 0, d.output()
    assert files(d) == []


def test_cancel_storm_hands_every_transfer_back(start_daemon, start_testhttp):
    """300 downloads with seeded random delays, cancelled in waves while some queue, some run and
    some have finished: each ends done or cancelled exactly once, the transfer pool hands every
    one back (transfers_running returns to 0), and the daemon still serves (under ASan: with no
    leak at exit)."""
    srv = start_testhttp("--mode", "delay", "--delay-min", "0", "--delay-max", "0.4", "--seed", "7")
    d = start_daemon("--transfers", "64")
    c = d.c
    urls = [f"{srv.url}/flags/{a}{b}/{a}{b}.gif" for a in "abcdefghijkl"
            for b in "abcdefghijklmnopqrstuvwxy"]
    ids = c.rq("submit", jobs=[{"kind": "download", "args": {"url": u}} for u in urls])["ids"]
    assert len(ids) == 300
    for wave in range(3):
        time.sleep(0.1)
        c.rq("cancel", ids=ids[wave::3])
    res = c.rq("results", ids=ids, timeout=30, reply_timeout=35)["results"]
    states = [r["state"] for r in res]
    odd = [r for r in res if r["state"] not in ("done", "cancelled")]
    assert not odd, odd
    assert states.count("cancelled") > 0 and states.count("done") > 0, states
    for r in res:
        if r["state"] == "done":
            assert r["result"]["status"] in ("ok", "not_found"), r
    wait_for(lambda: c.rq("stats")["stats"]["transfers_running"] == 0, 10,
               "some transfers never came back")
    r = c.rq("submit", jobs=[{"kind": "download", "args": {"url": f"{srv.url}/flags/br/br.gif"}}])
    assert outcome(d, r["ids"][0])["state"] == "done"


def test_job_timeout_aborts_the_transfer(start_daemon, start_testhttp):
    """The job's own `timeout` (not the download's) fails it with `timeout`, and the transfer
    thread lets go of the transfer: transfers_running returns to 0 long before the server's 30 s
    answer."""
    srv = start_testhttp("--mode", "delay", "--delay", "30")
    d = start_daemon()
    c = d.c
    r = c.rq("submit", jobs=[{"kind": "download", "timeout": 0.2,
                              "args": {"url": f"{srv.url}/flags/br/br.gif"}}])
    res = outcome(d, r["ids"][0])
    assert res["state"] == "failed" and res["failure"]["code"] == "timeout", res
    wait_for(lambda: c.rq("stats")["stats"]["transfers_running"] == 0, 10,
             "the timed-out transfer was not handed back")


@pytest.mark.parametrize("target, message", [
    ({"inline": True, "path": "br.gif"}, "a download goes inline or to a 'path', not both"),
    ({"inline": False}, "'inline: false' needs a 'path' for the body"),
], ids=["inline-and-path", "neither"])
def test_inline_and_path_conflicts_are_bad_args(daemon, testhttp, target, message):
    r = daemon.c.rq("submit", jobs=[{"kind": "download", "args": {
        "url": f"{testhttp.url}/flags/br/br.gif", **target}}])
    assert not r["ok"], r
    assert (r["error"]["code"], r["error"]["field"]) == ("bad_args", "inline"), r
    assert r["error"]["message"] == message, r
    assert files(daemon) == []
