"""The life of futures (docs/PROTOCOL.md): wait modes and timeouts, result, cancel (pending and
running), worker deaths and retries, release and expiry, list, group limits, priorities, events and
shutdown."""
import glob
import os
import signal
import time

import msgpack
import pytest

from conftest import wait_for

# Trial division of this prime (the largest below 2**64) takes seconds: about 2**31 divisions.
BIG_PRIME = 18446744073709551557
# Trial division of this prime takes about a second (2.5e8 divisions); 10**17+3 a third of that.
SECOND_PRIME = 10 ** 18 + 9


@pytest.fixture
def subscribe():
    """subscribe(daemon, *topics): daemon.subscriber(), closed when the test ends. (An open SUB
    socket would keep the fixture's Context.term() waiting forever after a failed test.)"""
    subs = []

    def make(d, *topics):
        sub = d.subscriber(*topics)
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close(0)


def submit(client, *jobs):
    r = client.rq("submit", jobs=list(jobs))
    assert r["ok"], r
    return r["ids"]


def sleep_job(seconds, **extra):
    return {"kind": "sleep", "args": {"seconds": seconds}, **extra}


def prime_job(n, **extra):
    return {"kind": "prime", "args": {"n": n}, **extra}


def states(client, *ids):
    return client.rq("status", ids=list(ids))["states"]


def stats(client):
    return client.rq("stats")["stats"]


def wait_state(client, fid, state, timeout=5.0):
    wait_for(lambda: states(client, fid) == [state], timeout, f"future {fid} to be {state}")


def result(client, fid, reply_timeout=20.0):
    r = client.rq("result", reply_timeout=reply_timeout, future=fid)
    assert r["ok"], r
    return r


# --- the worker processes ------------------------------------------------------------------------

def _stat(pid):
    """(state, utime + stime) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return rest[0], int(rest[11]) + int(rest[12])


def workers(daemon):
    """PIDs of the daemon's live (not zombie) futured-worker children."""
    pids = set()
    for path in glob.glob(f"/proc/{daemon.proc.pid}/task/*/children"):
        try:
            with open(path) as f:
                pids.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    live = []
    for pid in sorted(pids):
        st = _stat(pid)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if st and st[0] != "Z" and exe.endswith("futured-worker"):
            live.append(pid)
    return live


def busy_worker(daemon, n_busy=1):
    """The worker burning CPU (the one running a prime job), found by sampling CPU time."""
    pids = workers(daemon)
    before = {p: _stat(p) for p in pids}
    time.sleep(0.3)
    after = {p: _stat(p) for p in pids}
    busy = [p for p in pids if before[p] and after[p] and after[p][1] - before[p][1] >= 5]
    assert len(busy) == n_busy, (pids, before, after)
    return busy[0]


def alive_is(client, n):
    return stats(client)["processes_alive"] == n


# --- wait ----------------------------------------------------------------------------------------

def test_wait_all_returns_when_every_future_finished(daemon):
    c = daemon.c
    ids = submit(c, sleep_job(0.3), sleep_job(0.1), sleep_job(0.2))
    t = time.monotonic()
    w = c.rq("wait", ids=ids, mode="all")
    took = time.monotonic() - t
    assert w["ok"] and w["done"] == ids and w["not_done"] == [], w
    assert states(c, *ids) == ["done"] * 3
    assert 0.2 <= took < 2.0, took
    # "all" is the default.
    assert c.rq("wait", ids=ids)["done"] == ids


def test_wait_first_completed(daemon):
    c = daemon.c
    slow, fast, middle = submit(c, sleep_job(3), sleep_job(0.1), sleep_job(2))
    t = time.monotonic()
    w = c.rq("wait", ids=[slow, fast, middle], mode="first_completed")
    took = time.monotonic() - t
    print(f"first_completed after {took:.3f} s")
    assert w["done"] == [fast], w
    assert w["not_done"] == [slow, middle], w  # in request order
    assert took < 1.5, took
    # A future that is finished already satisfies it at once.
    w = c.rq("wait", ids=[slow, fast], mode="first_completed")
    assert w["done"] == [fast] and w["not_done"] == [slow], w
    assert c.rq("cancel", ids=[slow, middle])["cancelled"] == [True, True]


def test_wait_first_exception(daemon):
    c = daemon.c
    # The sleep of 2 s with a 0.2 s timeout fails with `timeout` at 0.2 s.
    slow, ok, failing = submit(c, sleep_job(3), sleep_job(0.05), sleep_job(2, timeout=0.2))
    t = time.monotonic()
    w = c.rq("wait", ids=[slow, ok, failing], mode="first_exception")
    took = time.monotonic() - t
    print(f"first_exception after {took:.3f} s")
    assert w["done"] == [ok, failing] and w["not_done"] == [slow], w
    assert 0.15 <= took < 1.5, took
    r = result(c, failing)
    assert r["state"] == "failed", r
    assert r["failure"]["code"] == "timeout", r
    assert isinstance(r["failure"]["message"], str)
    assert result(c, ok) == {"v": 1, "id": r["id"] + 1, "ok": True, "state": "done",
                             "result": {"seconds": 0.05}}
    assert c.rq("cancel", ids=[slow])["cancelled"] == [True]


def test_wait_first_exception_without_a_failure_waits_for_all(daemon):
    c = daemon.c
    ids = submit(c, sleep_job(0.1), sleep_job(0.3))
    t = time.monotonic()
    w = c.rq("wait", ids=ids, mode="first_exception")
    took = time.monotonic() - t
    assert w["done"] == ids and w["not_done"] == [], w
    assert took >= 0.25, took
    # A cancelled future is not an exception (the spec names `failed` only; Python agrees): the
    # wait still needs the others.
    a, b = submit(c, sleep_job(5), sleep_job(0.3))
    c.rq("cancel", ids=[a])
    w = c.rq("wait", ids=[a, b], mode="first_exception", timeout=0.1)
    assert w["done"] == [a] and w["not_done"] == [b], w
    assert c.rq("wait", ids=[a, b], mode="first_exception")["done"] == [a, b]


def test_wait_timeout_returns_not_done(daemon):
    c = daemon.c
    long_, short = submit(c, sleep_job(5), sleep_job(0.05))
    t = time.monotonic()
    w = c.rq("wait", ids=[long_, short, long_], timeout=0.3)
    took = time.monotonic() - t
    print(f"wait with timeout 0.3 answered after {took:.3f} s")
    # Not an error: not_done is simply non-empty. Duplicates are removed.
    assert w["ok"] is True, w
    assert w["done"] == [short] and w["not_done"] == [long_], w
    assert 0.25 <= took < 1.5, took
    # timeout 0 answers at once.
    t = time.monotonic()
    w = c.rq("wait", ids=[long_], timeout=0)
    assert w["done"] == [] and w["not_done"] == [long_], w
    assert time.monotonic() - t < 0.2
    # The timed-out wait left nothing deferred.
    assert stats(c)["clients_deferred"] == 0
    c.rq("cancel", ids=[long_])


def test_result_with_timeout_is_not_done_error(daemon):
    c = daemon.c
    (fid,) = submit(c, sleep_job(5))
    t = time.monotonic()
    r = c.rq("result", future=fid, timeout=0.2)
    took = time.monotonic() - t
    assert r["ok"] is False and r["error"]["code"] == "not_done", r
    assert 0.15 <= took < 1.5, took
    r = c.rq("result", future=fid, timeout=0)
    assert r["ok"] is False and r["error"]["code"] == "not_done", r
    assert stats(c)["clients_deferred"] == 0
    c.rq("cancel", ids=[fid])
    r = c.rq("result", future=fid, timeout=0)
    assert r["ok"] and r["state"] == "cancelled" and set(r) == {"v", "id", "ok", "state"}, r


def test_many_clients_waiting_on_one_future(daemon):
    (fid,) = submit(daemon.c, sleep_job(0.2))
    clients = [daemon.client() for _ in range(5)]
    rids = [(cl, cl.send(op="result", future=fid)) for cl in clients]
    for cl, rid in rids:
        r = cl.recv(5.0)
        assert r["id"] == rid and r["state"] == "done" and r["result"] == {"seconds": 0.2}, r


# --- cancel --------------------------------------------------------------------------------------

def test_cancel_pending(start_daemon):
    d = start_daemon("--threads", "1", "--processes", "1")
    c = d.c
    running, pending = submit(c, sleep_job(5), sleep_job(0.1))
    wait_for(lambda: states(c, running, pending) == ["running", "pending"], what="the sleep to run")
    waiter = d.client()
    rid = waiter.send(op="result", future=pending)
    wait_for(lambda: stats(c)["clients_deferred"] == 1, what="the deferred result")
    assert c.rq("cancel", ids=[pending])["cancelled"] == [True]
    r = waiter.recv(2.0)
    assert r["id"] == rid and r["ok"] and r["state"] == "cancelled", r
    assert states(c, running, pending) == ["running", "cancelled"]
    # Cancelled already: still reported as cancelled. Unknown: false.
    assert c.rq("cancel", ids=[pending, 999])["cancelled"] == [True, False]
    st = stats(c)
    assert st["cancelled"] == 1 and st["running"] == 1 and st["pending"] == 0, st
    # The cancelled job never runs: a noop submitted now runs as soon as the sleep is cancelled.
    (noop,) = submit(c, {"kind": "noop"})
    assert c.rq("cancel", ids=[running])["cancelled"] == [True]
    assert result(c, noop)["state"] == "done"
    # A running thread job (sleep) is cancelled too, not left to finish: PROTOCOL.md, cancel.
    assert states(c, running) == ["cancelled"]
    assert result(c, running)["state"] == "cancelled"
    (done,) = submit(c, {"kind": "noop"})
    assert result(c, done)["state"] == "done"
    assert c.rq("cancel", ids=[done])["cancelled"] == [False]
    assert states(c, done) == ["done"]


def test_cancel_running_prime_kills_its_worker(daemon):
    c = daemon.c
    (fid,) = submit(c, prime_job(BIG_PRIME))
    wait_state(c, fid, "running")
    victim = busy_worker(daemon)
    wait_for(lambda: stats(c)["processes_alive"] == 2, 30, "both worker processes to start")
    before = stats(c)
    t = time.monotonic()
    r = c.rq("cancel", ids=[fid])
    assert r["cancelled"] == [True], r
    wait_state(c, fid, "cancelled", timeout=2.0)
    took = time.monotonic() - t
    print(f"running prime cancelled in {took * 1000:.1f} ms")
    assert took < 0.5, took
    res = result(c, fid)
    assert res["state"] == "cancelled" and "result" not in res, res
    t = time.monotonic()
    wait_for(lambda: alive_is(c, 2), timeout=1.0, what="processes_alive back to 2")
    print(f"replacement worker alive after {(time.monotonic() - t) * 1000:.1f} ms")
    wait_for(lambda: victim not in workers(daemon), timeout=1.0, what="the worker to be gone")
    assert len(workers(daemon)) == 2
    after = stats(c)
    # Killed on purpose: not a death.
    assert after["workers_died"] == before["workers_died"], after
    assert after["workers_started"] == before["workers_started"] + 1, after
    # The pool still computes.
    (fid2,) = submit(c, prime_job(97))
    assert result(c, fid2)["result"]["is_prime"] is True


# --- worker deaths and retries -------------------------------------------------------------------

def test_worker_killed_mid_job(daemon):
    c = daemon.c
    (victim_job,) = submit(c, prime_job(BIG_PRIME))
    wait_state(c, victim_job, "running")
    victim = busy_worker(daemon)
    (survivor_job,) = submit(c, prime_job(SECOND_PRIME))
    wait_state(c, survivor_job, "running")
    started = stats(c)["workers_started"]
    os.kill(victim, signal.SIGKILL)
    t = time.monotonic()
    r = result(c, victim_job)
    assert r["state"] == "failed", r
    assert r["failure"]["code"] == "worker_died", r
    assert r["failure"]["signal"] == 9, r
    assert "exit_status" not in r["failure"], r
    print(f"worker_died reported after {(time.monotonic() - t) * 1000:.1f} ms")
    wait_for(lambda: alive_is(c, 2), timeout=1.0, what="a replacement worker")
    assert victim not in workers(daemon)
    st = stats(c)
    assert st["workers_died"] == 1 and st["workers_started"] == started + 1, st
    # The other job, running concurrently on the other worker, is unaffected.
    r = result(c, survivor_job)
    assert r["state"] == "done", r
    assert r["result"]["n"] == SECOND_PRIME and r["result"]["is_prime"] is True, r


def test_retry_after_worker_death(start_daemon, subscribe):
    d = start_daemon("--processes", "1", "--threads", "1")
    c = d.c
    sub = subscribe(d, "running/")
    (fid,) = submit(c, prime_job(SECOND_PRIME, retries=1))
    wait_state(c, fid, "running")
    (pid,) = workers(d)
    assert sub.poll(2000)
    topic, body = sub.recv_multipart()
    assert msgpack.unpackb(body)["id"] == fid
    os.kill(pid, signal.SIGKILL)
    # It runs again, on a new worker, and succeeds.
    assert sub.poll(2000), "the job did not start again"
    topic, body = sub.recv_multipart()
    assert topic == b"running/" and msgpack.unpackb(body)["id"] == fid
    r = result(c, fid)
    assert r["state"] == "done", r
    assert r["result"]["is_prime"] is True and r["result"]["n"] == SECOND_PRIME
    st = stats(c)
    assert st["workers_died"] == 1 and st["failed"] == 0 and st["done"] == 1, st


def test_a_job_that_killed_three_workers_is_not_retried(start_daemon):
    d = start_daemon("--processes", "1", "--threads", "1")
    c = d.c
    (fid,) = submit(c, prime_job(BIG_PRIME, retries=5))
    killed = set()
    for attempt in range(3):
        def running_on_new_worker():
            # Workers first, state second: a replacement is spawned only after the death of
            # its predecessor was handled, so a new worker seen *before* a "running" answer
            # means the job runs again, on it. (The other order can see a stale "running" and a
            # replacement still starting, whose death would not be the job's.)
            pids = [p for p in workers(d) if p not in killed]
            if not pids or states(c, fid) != ["running"]:
                return None
            return pids[0]
        pid = wait_for(running_on_new_worker, timeout=3.0, what=f"run {attempt + 1}")
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
    r = result(c, fid)
    assert r["state"] == "failed", r
    assert r["failure"]["code"] == "worker_died" and r["failure"]["signal"] == 9, r
    assert stats(c)["workers_died"] == 3


def test_process_job_timeout_kills_the_worker(daemon):
    c = daemon.c
    (fid,) = submit(c, prime_job(BIG_PRIME, timeout=0.3))
    t = time.monotonic()
    r = result(c, fid)
    took = time.monotonic() - t
    assert r["state"] == "failed" and r["failure"]["code"] == "timeout", r
    assert 0.25 <= took < 1.5, took
    wait_for(lambda: alive_is(c, 2), timeout=1.0, what="a replacement worker")
    assert stats(c)["workers_died"] == 0


# --- release and expiry --------------------------------------------------------------------------

def test_release_expires_finished_futures(daemon):
    c = daemon.c
    done, running = submit(c, {"kind": "noop"}, sleep_job(5))
    assert result(c, done)["state"] == "done"
    wait_state(c, running, "running")
    assert stats(c)["done"] == 1
    r = c.rq("release", ids=[done, running, 12345])
    assert r["released"] == [True, False, False], r
    assert states(c, done, running) == ["expired", "running"]
    r = result(c, done)
    assert r["state"] == "expired" and set(r) == {"v", "id", "ok", "state"}, r
    assert stats(c)["done"] == 0
    # Already expired: left as it is.
    assert c.rq("release", ids=[done])["released"] == [False]
    # Expired counts as finished for wait.
    w = c.rq("wait", ids=[done], timeout=0)
    assert w["done"] == [done], w
    assert [f["id"] for f in c.rq("list")["futures"]] == [running]
    c.rq("cancel", ids=[running])


def test_release_while_a_wait_all_still_holds_the_future(daemon):
    """A wait (mode all) on [short, long]: short finishes and is released while the wait is still
    deferred. The daemon used to keep a pointer into the freed future (assertion failure)."""
    c = daemon.c
    short, long_ = submit(c, sleep_job(0.15), sleep_job(0.6))
    waiter = daemon.client()
    rid = waiter.send(op="wait", ids=[short, long_])
    fx = waiter.send(op="wait", ids=[short, long_], mode="first_exception")
    wait_state(c, short, "done")
    assert c.rq("release", ids=[short])["released"] == [True]
    assert c.rq("hello")["ok"]
    replies = {r["id"]: r for r in (waiter.recv(3.0), waiter.recv(3.0))}
    for i in (rid, fx):
        assert replies[i]["done"] == [short, long_] and replies[i]["not_done"] == [], replies
    assert stats(c)["clients_deferred"] == 0


def test_retention_expiry_while_a_wait_still_holds_the_future(start_daemon):
    d = start_daemon("--retain", "0.1", "--threads", "2", "--processes", "1")
    c = d.c
    short, long_ = submit(c, sleep_job(0.15), sleep_job(0.6))
    rid = c.send(op="wait", ids=[short, long_])
    # short finishes at 0.15 s and expires at 0.25 s, while the wait still waits for long.
    w = c.recv(3.0)
    assert w["id"] == rid and w["done"] == [short, long_], w
    assert states(c, short)[0] == "expired"
    wait_state(c, long_, "expired", timeout=1.0)


# --- list ----------------------------------------------------------------------------------------

def test_list_with_state_filter_and_cursor(daemon):
    c = daemon.c
    done = submit(c, *[{"kind": "noop"}] * 6, {"kind": "noop", "group": "grp", "priority": 5})
    assert c.rq("wait", ids=done)["not_done"] == []
    running = submit(c, sleep_job(5), sleep_job(5, group="grp", priority=-2))
    wait_for(lambda: states(c, *running) == ["running"] * 2, what="the sleeps to run")

    everything = c.rq("list")
    assert everything["more"] is False
    assert everything["futures"] == (
        [{"id": i, "kind": "noop", "state": "done", "group": "", "priority": 0, "attempts": 1}
         for i in done[:6]]
        + [{"id": done[6], "kind": "noop", "state": "done", "group": "grp", "priority": 5,
            "attempts": 1},
           {"id": running[0], "kind": "sleep", "state": "running", "group": "", "priority": 0,
            "attempts": 1},
           {"id": running[1], "kind": "sleep", "state": "running", "group": "grp",
            "priority": -2, "attempts": 1}])

    def page(**kw):
        r = c.rq("list", state="done", limit=3, **kw)
        return [f["id"] for f in r["futures"]], r["more"]

    assert page() == (done[0:3], True)
    assert page(after=done[2]) == (done[3:6], True)
    assert page(after=done[5]) == ([done[6]], False)
    # Exactly `limit` left: the limit did not cut the list.
    assert page(after=done[3]) == (done[4:7], False)
    assert page(after=running[1]) == ([], False)
    r = c.rq("list", state="running")
    assert [f["id"] for f in r["futures"]] == running and r["more"] is False
    assert c.rq("list", state="pending")["futures"] == []
    assert [f["id"] for f in c.rq("list", limit=1, after=done[6])["futures"]] == [running[0]]
    c.rq("cancel", ids=running)
    assert [f["id"] for f in c.rq("list", state="cancelled")["futures"]] == running


# --- scheduling ----------------------------------------------------------------------------------

def _concurrency(sub, ids, timeout):
    """Reads running/done events for `ids` until all are done; returns the most that ran at once
    and the order in which they started."""
    running, most, started, done = set(), 0, [], set()
    deadline = time.monotonic() + timeout
    while done != set(ids):
        left = deadline - time.monotonic()
        assert left > 0 and sub.poll(int(left * 1000)), (started, done)
        topic, body = sub.recv_multipart()
        ev = msgpack.unpackb(body)
        if ev["id"] not in ids:
            continue
        if ev["state"] == "running":
            running.add(ev["id"])
            started.append(ev["id"])
        else:
            assert ev["state"] == "done", ev
            running.discard(ev["id"])
            done.add(ev["id"])
        most = max(most, len(running))
    return most, started


def test_group_limit_1_runs_one_at_a_time(daemon, subscribe):
    c = daemon.c
    sub = subscribe(daemon, "running/", "done/")
    t = time.monotonic()
    ids = submit(c, *[sleep_job(0.3, group="serial", group_limit=1)] * 4)
    most, started = _concurrency(sub, ids, timeout=5.0)
    took = time.monotonic() - t
    print(f"4 x 0.3 s with group_limit 1 took {took:.2f} s")
    assert most == 1, most
    assert started == ids  # equal priorities: submission order
    assert took >= 1.15, took


def test_group_limit_2_runs_two_at_a_time(daemon, subscribe):
    """The control for the test above: the same pool runs a group of limit 2 two at a time."""
    c = daemon.c
    sub = subscribe(daemon, "running/", "done/")
    ids = submit(c, *[sleep_job(0.3, group="pairs", group_limit=2)] * 4)
    most, _ = _concurrency(sub, ids, timeout=5.0)
    assert most == 2, most


def test_priority_order_with_one_thread(start_daemon, subscribe):
    d = start_daemon("--threads", "1", "--processes", "1")
    c = d.c
    # With one thread jobs finish in the order they start: the done events give that order.
    sub = subscribe(d, "done/")
    (blocker,) = submit(c, sleep_job(0.3))
    wait_state(c, blocker, "running")
    # One batch, queued while the blocker runs, so that all of them compete at once. (Thread
    # jobs: a noop runs inline on the loop, without waiting for the thread.)
    prios = [0, 5, -3, 5, 10, 0, -1000, 1000]
    ids = submit(c, *[{"kind": "sleep", "args": {"seconds": 0}, "priority": p} for p in prios])
    assert c.rq("wait", ids=ids)["not_done"] == []
    order = []
    while len(order) < len(ids) + 1:
        assert sub.poll(2000), order
        order.append(msgpack.unpackb(sub.recv_multipart()[1])["id"])
    assert order[0] == blocker
    # Higher first; equal priorities in submission order.
    expected = [fid for _, _, fid in sorted(zip((-p for p in prios), range(len(ids)), ids))]
    assert order[1:] == expected, (order, expected)


def test_noop_runs_inline_while_every_thread_is_busy(start_daemon):
    d = start_daemon("--threads", "1", "--prefetch", "0", "--processes", "1")
    c = d.c
    (blocker,) = submit(c, sleep_job(30))
    wait_state(c, blocker, "running")
    # A trivial kind runs on the loop itself: it does not wait for the busy thread.
    r = c.rq("submit", jobs=[{"kind": "noop"}, {"kind": "noop", "priority": 5}], reply="results")
    assert [x["state"] for x in r["results"]] == ["done", "done"]
    assert c.rq("status", ids=[blocker])["states"] == ["running"]
    assert c.rq("cancel", ids=[blocker])["cancelled"] == [True]


# --- events --------------------------------------------------------------------------------------

def test_done_events_one_per_completed_job(daemon, subscribe):
    c = daemon.c
    sub = subscribe(daemon, "done/")
    failed_sub = subscribe(daemon, "failed/")
    ids = submit(c, *[{"kind": "noop"}] * 5, {"kind": "noop", "group": "flags-7"},
                 {"kind": "prime", "args": {"n": 91}}, sleep_job(1, timeout=0.05))
    assert c.rq("wait", ids=ids)["not_done"] == []
    seen = {}
    while len(seen) < 7:
        assert sub.poll(2000), seen
        topic, body = sub.recv_multipart()
        ev = msgpack.unpackb(body)
        assert ev["id"] not in seen, ("two done events", ev)
        seen[ev["id"]] = (topic, ev)
    assert set(seen) == set(ids[:7])
    for fid in ids[:5]:
        assert seen[fid] == (b"done/", {"id": fid, "state": "done", "kind": "noop", "group": ""})
    assert seen[ids[5]] == (b"done/flags-7", {"id": ids[5], "state": "done", "kind": "noop",
                                              "group": "flags-7"})
    assert seen[ids[6]][1]["kind"] == "prime"
    # Nothing more: in particular not for the failed sleep.
    assert not sub.poll(300)
    assert failed_sub.poll(2000)
    topic, body = failed_sub.recv_multipart()
    ev = msgpack.unpackb(body)
    assert topic == b"failed/"
    assert ev["id"] == ids[7] and ev["state"] == "failed" and ev["kind"] == "sleep", ev
    assert ev["failure"]["code"] == "timeout", ev


# --- shutdown ------------------------------------------------------------------------------------

def test_sigterm_while_jobs_run(start_daemon):
    d = start_daemon("--grace", "0.5", "--threads", "1", "--processes", "1")
    c = d.c
    sleeping, pending = submit(c, sleep_job(30), sleep_job(30))
    (computing,) = submit(c, prime_job(BIG_PRIME))
    wait_for(lambda: states(c, sleeping, pending, computing) == ["running", "pending", "running"],
             what="the jobs to start")
    waiters = {}
    for fid in (sleeping, pending, computing):
        cl = d.client()
        waiters[fid] = (cl, cl.send(op="result", future=fid))
    wait_for(lambda: stats(c)["clients_deferred"] == 3, what="three deferred results")
    t = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    # Pending work is cancelled at once...
    cl, rid = waiters[pending]
    r = cl.recv(2.0)
    assert r["id"] == rid and r["state"] == "cancelled", r
    # ...no new work is taken during the grace period...
    r = c.rq("submit", jobs=[{"kind": "noop"}])
    assert r["ok"] is False and r["error"]["code"] == "shutting_down", r
    # ...and what still runs when it ends fails with `shutdown`.
    for fid in (sleeping, computing):
        cl, rid = waiters[fid]
        r = cl.recv(3.0)
        assert r["id"] == rid and r["state"] == "failed", r
        assert r["failure"]["code"] == "shutdown", r
    rc = d.proc.wait(5)
    took = time.monotonic() - t
    print(f"futured exited {rc} {took:.2f} s after SIGTERM")
    assert rc == 0, d.output()
    assert 0.4 <= took < 3.0, took
    assert "futured: stopped" in d.output()
    assert not workers(d)


def test_sigterm_when_idle_exits_at_once(start_daemon):
    d = start_daemon("--grace", "10")
    t = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0, d.output()
    assert time.monotonic() - t < 2.0


# --- stats and list defaults ---------------------------------------------------------------------

def test_stats_counters(daemon):
    c = daemon.c
    # The workers start beside the daemon; under a sanitizer the second may say hello after the
    # daemon has answered its first request.
    wait_for(lambda: stats(c)["processes_alive"] == 2, 30, "both worker processes to start")
    st = stats(c)
    assert set(st) == {"pending", "running", "done", "failed", "cancelled", "submitted",
                       "finished", "threads", "transfers", "transfers_running", "processes",
                       "processes_alive", "workers_started", "workers_died", "clients_deferred",
                       "retained", "retained_bytes", "uptime_ms", "store_bytes", "store_commits",
                       "store_commits_unflushed", "store_last_batch", "store_commit_us",
                       "store_failing"}, st
    assert all(isinstance(v, int) and v >= 0 for v in st.values()), st
    assert (st["threads"], st["processes"], st["processes_alive"]) == (4, 2, 2), st
    assert (st["transfers"], st["transfers_running"]) == (1024, 0), st
    assert st["workers_started"] == 2 and st["submitted"] == 0, st
    ok, bad, gone, run = submit(c, {"kind": "noop"}, sleep_job(1, timeout=0.01), sleep_job(5),
                                sleep_job(5))
    wait_for(lambda: states(c, ok, bad, run) == ["done", "failed", "running"], what="states")
    c.rq("cancel", ids=[gone])
    time.sleep(0.02)
    st2 = stats(c)
    assert {k: st2[k] for k in ("pending", "running", "done", "failed", "cancelled", "submitted",
                                "finished")} == {"pending": 0, "running": 1, "done": 1,
                                                 "failed": 1, "cancelled": 1, "submitted": 4,
                                                 "finished": 3}, st2
    assert st2["uptime_ms"] >= st["uptime_ms"] + 10
    c.rq("release", ids=[ok, bad, gone])
    st3 = stats(c)
    # Released futures leave the per-state counts; the totals since start stay.
    assert (st3["done"], st3["failed"], st3["cancelled"]) == (0, 0, 0), st3
    assert (st3["submitted"], st3["finished"]) == (4, 3), st3
    c.rq("cancel", ids=[run])


def test_list_default_limit_is_100(daemon):
    c = daemon.c
    ids = submit(c, *[{"kind": "noop"}] * 150)
    assert c.rq("wait", ids=ids)["not_done"] == []
    r = c.rq("list")
    assert [f["id"] for f in r["futures"]] == ids[:100] and r["more"] is True
    r = c.rq("list", after=ids[99])
    assert [f["id"] for f in r["futures"]] == ids[100:] and r["more"] is False
