"""The daemon's limits on what clients control (docs/PROTOCOL.md, Limits; docs/SECURITY.md):
the connection budget, and the documented error at each limit with normal service below it."""
import contextlib
import os
import resource
import signal
import socket
import subprocess
import time

import msgpack
import pytest
import zmq

from conftest import FUTURED, Client, Daemon, wait_for
from systemd_util import SocketActivated


@contextlib.contextmanager
def nofile(soft, hard):
    """RLIMIT_NOFILE of this process set to (soft, hard) inside the block: a daemon started there
    inherits it, as under `prlimit --nofile=soft:hard`."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_flood(path, n, patient=False):
    """Opens `n` idle connections to the unix socket `path` (never a byte sent): those the kernel
    refuses (a full backlog while the daemon sheds) are skipped. A `patient` flood waits for a
    full backlog to drain instead (a loaded machine's daemon accepts slowly), for 60 s in all.
    Returns the open sockets and how many connected."""
    socks, connected = [], 0
    deadline = time.monotonic() + 60
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        while True:
            try:
                s.connect(path)
                connected += 1
            except BlockingIOError:
                if patient and time.monotonic() < deadline:
                    time.sleep(0.001)
                    continue
            except (ConnectionRefusedError, FileNotFoundError):
                pass
            break
        socks.append(s)
    return socks, connected


@pytest.fixture
def many_fds():
    """This test process opens thousands of sockets: its soft limit up to its hard one."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (old[1], old[1]))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture
def rss_shows_frees(monkeypatch):
    """Under ASan (.ci/test --sanitize) freed memory stays in its quarantine and its allocator
    returns pages to the system late: for the daemons of a test that looks at RSS after a free,
    neither."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "") +
                       "quarantine_size_mb=0:allocator_release_to_os_interval_ms=0")


def stop_ok(d):
    rc = d.stop()
    assert rc == 0, d.output()


def test_5000_idle_ipc_connections_under_nofile_1024_20000(tmp_path, many_fds):
    with nofile(1024, 20000):
        d = Daemon(tmp_path, "--store", "memory", "--processes", "1", "--threads", "2")
    try:
        limits = open(f"/proc/{d.proc.pid}/limits").read()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == ["20000", "20000"], line  # soft raised to hard
        socks, connected = idle_flood(d.endpoint[len("ipc://"):], 5000, patient=True)
        assert connected > 1000
        assert d.proc.poll() is None, d.output()
        # The daemon answers with the 5000 connections open, and after they are gone.
        c = d.client()
        assert wait_for(lambda: d.proc.poll() is None and c.rq("hello")["ok"], 30, "hello")
        for s in socks:
            s.close()
        assert d.c.rq("submit", jobs=[{"kind": "noop"}])["ok"]
    finally:
        stop_ok(d)


def test_connections_past_the_budget_close_the_endpoints_until_they_are_free(tmp_path, many_fds):
    d = Daemon(tmp_path, "--store", "memory", "--processes", "1", "--threads", "2",
               "--max-connections", "300")
    try:
        pid = d.proc.pid
        base = open_fds(pid)
        socks, connected = idle_flood(d.endpoint[len("ipc://"):], 5000)
        assert d.proc.poll() is None, d.output()
        assert "reach the budget of 300" in wait_for(
            lambda: "reach the budget" in d.output() and d.output(), 10, "the shedding")
        # The descriptors come back: every connection accepted before the shed is closed.
        wait_for(lambda: open_fds(pid) < base + 300, 30, "descriptors back")
        for s in socks:
            s.close()
        # The endpoints are bound again, and a new client, as the old one, is served.
        wait_for(lambda: "listening again" in d.output(), 30, "the resume")
        c = d.client()
        assert c.rq("hello", reply_timeout=20)["ok"]
        assert wait_for(lambda: d.c.rq("hello", reply_timeout=2)["ok"], 30, "old client")
    finally:
        stop_ok(d)


def test_a_passed_socket_survives_the_shedding(tmp_path, many_fds):
    """A socket-activated listener is never closed: ZeroMQ gets a copy of it, the copy is what
    a shed closes, and the passed socket is given again at the resume."""
    sa = SocketActivated(tmp_path, "--processes", "1", "--threads", "2", "--store", "memory",
                         "--max-connections", "100")
    a, proc, output = sa.sock, sa.proc, sa.output
    ctx = zmq.Context()
    try:
        wait_for(a.exists, 10, "the listening socket")
        c = Client(ctx, f"ipc://{a}")
        assert c.rq("hello", reply_timeout=20)["ok"]
        socks, _ = idle_flood(str(a), 2000)
        wait_for(lambda: "reach the budget of 100" in output(), 10, "the shedding")
        for s in socks:
            s.close()
        wait_for(lambda: "listening again" in output(), 30, "the resume")
        assert a.exists()
        c2 = Client(ctx, f"ipc://{a}")
        assert c2.rq("hello", reply_timeout=20)["ok"]
        c.close()
        c2.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, output()
    finally:
        sa.kill()
        ctx.term()


def test_memory_mode_ids_never_repeat_after_a_restart(tmp_path):
    first = Daemon(tmp_path, "--store", "memory", "--processes", "1", "--threads", "2")
    try:
        old = []
        for _ in range(3):
            old += first.c.rq("submit", jobs=[{"kind": "noop"}] * 10000)["ids"]
        assert first.c.rq("result", future=old[-1], timeout=30)["ok"]
    finally:
        stop_ok(first)
    second = Daemon(tmp_path, "--store", "memory", "--processes", "1", "--threads", "2")
    try:
        new = second.c.rq("submit", jobs=[{"kind": "noop"}])["ids"]
        assert new[0] > max(old), (new, max(old))
        # An old client asking for its future learns it is gone, not another client's result.
        states = second.c.rq("status", ids=[old[0], old[-1]])["states"]
        assert states == ["expired", "expired"], states
    finally:
        stop_ok(second)


def noops(c, n):
    """Submits `n` noop jobs and waits for them all."""
    r = c.rq("submit", jobs=[{"kind": "noop"}] * n, reply="results", reply_timeout=30)
    assert r["ok"], r
    return r["ids"]


def test_retained_results_past_the_count_are_retained_full_with_a_retry_hint(start_daemon):
    d = start_daemon("--store", "memory", "--processes", "1", "--max-retained", "5")
    assert d.c.rq("hello")["limits"]["max_retained"] == 5
    ids = noops(d.c, 4)
    # Below the limit: served.
    ids += noops(d.c, 1)
    assert d.c.rq("stats")["stats"]["retained"] == 5
    r = d.c.rq("submit", jobs=[{"kind": "noop"}])
    assert not r["ok"] and r["error"]["code"] == "retained_full", r
    assert 3590 < r["error"]["retry_after"] <= 3600, r
    # Nothing was evicted: every result is still there.
    assert d.c.rq("status", ids=ids)["states"] == ["done"] * 5
    # A released result makes room again.
    assert d.c.rq("release", ids=[ids[0]])["released"] == [True]
    assert d.c.rq("submit", jobs=[{"kind": "noop"}])["ok"]


def test_retained_results_past_the_bytes_are_retained_full(start_daemon):
    d = start_daemon("--store", "memory", "--processes", "1", "--max-retained-bytes", "100")
    noops(d.c, 1)
    per = d.c.rq("stats")["stats"]["retained_bytes"]
    assert per > 0
    n = -(-100 // per) - 2  # (1 + n) results stay below 100 bytes, one more does not
    if n:
        noops(d.c, n)
    assert d.c.rq("stats")["stats"]["retained_bytes"] < 100
    noops(d.c, 1)  # below the limit when it was sent: served
    assert d.c.rq("stats")["stats"]["retained_bytes"] >= 100
    r = d.c.rq("submit", jobs=[{"kind": "noop"}])
    assert not r["ok"] and r["error"]["code"] == "retained_full", r
    assert r["error"]["retry_after"] > 0


def test_retained_results_expire_and_make_room(start_daemon):
    d = start_daemon("--store", "memory", "--processes", "1", "--max-retained", "2",
                     "--retain", "1")
    noops(d.c, 2)
    r = d.c.rq("submit", jobs=[{"kind": "noop"}])
    assert r["error"]["code"] == "retained_full" and r["error"]["retry_after"] <= 1, r
    wait_for(lambda: d.c.rq("submit", jobs=[{"kind": "noop"}])["ok"], 10, "room again")


def rss_bytes(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sanitized():
    return "libasan" in subprocess.run(["ldd", str(FUTURED)], capture_output=True,
                                       text=True).stdout


def test_60_s_of_submit_and_wait_keeps_rss_under_1_gib(start_daemon):
    """The flood of the issue (a loop of noop submit-and-wait) with the default settings: the
    retained results stop at max_retained, refused past it (or, one uid flooding, at its
    principal's retained quota, 500,000, first), and the RSS stays bounded. An ASan build's
    allocations cost about three times as much (redzones, its quarantine); it floods for 20 s
    (the plain suite's run is the issue's 60 s: CI's time is counted)."""
    import time
    d = start_daemon("--store", "memory")
    bound = (3 if sanitized() else 1) << 30
    clients = [d.client() for _ in range(4)]
    batch = [{"kind": "noop"}] * 10000
    refused, peak, served = 0, 0, 0
    end = time.monotonic() + (20 if sanitized() else 60)
    for c in clients:
        for _ in range(2):
            c.send(op="submit", jobs=batch, reply="results")
    while time.monotonic() < end:
        for c in clients:
            while c.sock.poll(0):
                r = msgpack.unpackb(c.sock.recv(), strict_map_key=False)
                if r["ok"]:
                    served += 1
                else:
                    assert r["error"]["code"] in ("retained_full", "quota_exceeded"), r
                    refused += 1
                c.send(op="submit", jobs=batch, reply="results")
        peak = max(peak, rss_bytes(d.proc.pid))
        time.sleep(0.01)
    for c in clients:
        while c.sock.poll(5000):
            c.sock.recv()
    st = d.c.rq("stats")["stats"]
    assert st["retained"] <= 1000000 + 10000 * 8, st
    assert peak < bound, f"peak RSS {peak >> 20} MiB, {served} batches served, {refused} refused"
    print(f"peak RSS {peak >> 20} MiB; {served} batches served, {refused} refused; {st}")


VANISHING_CLIENT = """
import sys, msgpack, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.connect(sys.argv[1])
ids = list(range(int(sys.argv[2]), int(sys.argv[2]) + 10000))
for i in range(int(sys.argv[3])):
    s.send(msgpack.packb({"v": 1, "id": i, "op": "wait", "ids": ids}))
print("sent", flush=True)
sys.stdin.read()
"""


def deferred(d):
    return d.c.rq("stats")["stats"]["clients_deferred"]


def test_a_client_that_vanishes_mid_wait_leaves_memory_where_it_was(start_daemon,
                                                                     rss_shows_frees):
    """190 waits on 10,000 one-hour futures each (1.9 M IDs, about 80 MiB of books): the client
    process is killed, and within seconds its waits are gone and the memory is back."""
    d = start_daemon("--store", "memory", "--processes", "1", "--threads", "2")
    ids = d.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 3600}}] * 10000)["ids"]
    wait_for(lambda: d.c.rq("stats")["stats"]["running"] == 2, 10, "two running sleeps")
    base = rss_bytes(d.proc.pid)
    assert ids == list(range(ids[0], ids[0] + 10000))
    p = subprocess.Popen(["/usr/bin/python3", "-c", VANISHING_CLIENT, d.endpoint, str(ids[0]),
                          "190"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "sent\n"
        wait_for(lambda: deferred(d) == 190, 30, "190 deferred waits")
        held = rss_bytes(d.proc.pid)
        assert held > base + (40 << 20), (base, held)  # the waits cost what the issue said
    finally:
        p.kill()
        p.wait()
    wait_for(lambda: deferred(d) == 0, 5, "the vanished client's waits to go")
    wait_for(lambda: rss_bytes(d.proc.pid) < base + (8 << 20), 5, "the memory back")
    # The futures it waited on are untouched, and another client's waits still work.
    assert d.c.rq("status", ids=ids[:3])["states"] == ["running", "running", "pending"]
    assert d.c.rq("wait", ids=ids[:1], timeout=0)["not_done"] == ids[:1]


def test_deferred_replies_past_the_global_limits_are_too_many_deferred(start_daemon):
    d = start_daemon("--store", "memory", "--processes", "1", "--threads", "2",
                     "--max-deferred", "3", "--max-deferred-ids", "5")
    limits = d.c.rq("hello")["limits"]
    assert limits["max_deferred_total"] == 3 and limits["max_deferred_ids"] == 5
    ids = d.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 3600}}] * 4)["ids"]
    a, b = d.client(), d.client()
    a.send(op="wait", ids=ids[:2])
    b.send(op="wait", ids=ids[:2])
    wait_for(lambda: deferred(d) == 2, 10, "two deferred waits")
    # Below the limits: deferred. Past the IDs' limit: refused, whichever client asks.
    r = d.c.rq("wait", ids=ids[:2])
    assert r["error"]["code"] == "too_many_deferred", r
    assert "the limit is 3 on 5 IDs" in r["error"]["message"], r
    c = d.client()
    c.send(op="result", future=ids[0])
    wait_for(lambda: deferred(d) == 3, 10, "three deferred")
    r = d.c.rq("result", future=ids[1])
    assert r["error"]["code"] == "too_many_deferred", r
    r = d.c.rq("submit", jobs=[{"kind": "noop"}], reply="results")
    assert r["error"]["code"] == "too_many_deferred", r
    # A wait that needs no deferring is answered at once.
    assert d.c.rq("wait", ids=ids[:1], timeout=0)["ok"]
    d.c.rq("cancel", ids=ids)
    for cl in (a, b, c):
        assert cl.recv()["ok"]


def test_a_client_that_stops_reading_leaves_memory_where_it_was(start_daemon, rss_shows_frees):
    """300 `results` of 10,000 IDs (about 75 MB of replies) to a client that reads none: the
    daemon queues up to --max-reply-bytes for it and answers the rest with reply_backlog."""
    import time
    d = start_daemon("--store", "memory", "--processes", "1", "--threads", "2",
                     "--max-reply-bytes", str(4 << 20))
    ids = noops(d.c, 10000)
    size = len(msgpack.packb(d.c.rq("results", ids=ids)))
    assert size > 200000
    base = rss_bytes(d.proc.pid)
    slow = d.ctx.socket(zmq.DEALER)
    try:
        slow.setsockopt(zmq.LINGER, 0)
        slow.setsockopt(zmq.RCVHWM, 1)
        slow.setsockopt(zmq.RCVBUF, 4096)
        slow.connect(d.endpoint)
        for i in range(300):
            slow.send(msgpack.packb({"v": 1, "id": i, "op": "results", "ids": ids}))
        # Every request is answered or refused; the memory stays where it was: the 4 MiB of
        # replies, and the allocator's slack from reading 27 MB of requests (measured: 17 MiB;
        # 136 MiB without the limit).
        time.sleep(3)
        grew = rss_bytes(d.proc.pid) - base
        assert grew < 32 << 20, f"RSS grew by {grew >> 20} MiB"
        # Others are served meanwhile; and the slow client, once it reads, finds its first
        # replies whole and the rest refused.
        assert d.c.rq("results", ids=ids[:10])["ok"]
        codes = []
        for _ in range(300):
            assert slow.poll(10000)
            r = msgpack.unpackb(slow.recv(), strict_map_key=False)
            codes.append("ok" if r["ok"] else r["error"]["code"])
        assert codes[0] == "ok" and "reply_backlog" in codes, codes
        assert set(codes) == {"ok", "reply_backlog"}
    finally:
        slow.close(0)
