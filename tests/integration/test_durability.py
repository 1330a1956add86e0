"""Durability: the SQLite store, and the PostgreSQL store, keep every acknowledged job across
restarts and kill -9.

Each test runs a real futured on a state directory (or a database) of its own, kills or stops it,
starts it again on the same store, and looks at what the new process says about the old IDs. The
tests that make sense for both run against both (`store`): SQLite files, and a real PostgreSQL
server started for the session (pgserver.py)."""
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import time

import msgpack
import pytest

from conftest import FUTURED, Daemon, wait_for

RUNNING = []


@pytest.fixture(autouse=True)
def stop_every_daemon():
    yield
    while RUNNING:
        d = RUNNING.pop()
        if d.proc.poll() is None:
            assert d.stop() == 0, d.output()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request):
    """The options that choose the store under test, and its name: a fresh database per test
    for PostgreSQL."""
    if request.param == "sqlite":
        return Store("sqlite", [], None)
    uri, name = request.getfixturevalue("pg_database")
    return Store("postgresql", ["--store", uri], (request.getfixturevalue("pg_server"), name))


class Store:
    def __init__(self, name, args, pg):
        self.name, self.args, self.pg = name, args, pg

    def ids(self, tmp_path, where="true"):
        """The IDs of the jobs the store holds (`where` they match), read by another client
        (sqlite3, psql)."""
        if self.pg:
            server, db = self.pg
            return {int(r[0]) for r in server.psql(f"SELECT id FROM futured_jobs WHERE {where}",
                                                    db, db)}
        db = sqlite3.connect(f"file:{tmp_path}/state/futured.db?mode=ro", uri=True)
        try:
            return {r[0] for r in db.execute(f"SELECT id FROM jobs WHERE {where}")}
        finally:
            db.close()


def start(tmp_path, *args):
    d = Daemon(tmp_path, "--threads", "2", "--processes", "2", *args)
    RUNNING.append(d)
    return d


def kill9(d):
    d.stop(signal.SIGKILL)


def submit(c, *jobs):
    return c.rq("submit", jobs=list(jobs))["ids"]


def states(c, ids):
    return c.rq("status", ids=ids)["states"]


def listed(c):
    out, after = {}, 0
    while True:
        r = c.rq("list", after=after, limit=10000)
        for f in r["futures"]:
            out[f["id"]] = f
        if not r["more"]:
            return out
        after = r["futures"][-1]["id"]


def test_results_and_ids_survive_a_restart(tmp_path, store):
    d = start(tmp_path, *store.args)
    assert d.c.rq("hello")["store"] == store.name
    ids = submit(d.c, {"kind": "prime", "args": {"n": 91}}, {"kind": "noop"},
                 {"kind": "sleep", "args": {"seconds": 0}})
    assert d.c.rq("wait", ids=ids)["not_done"] == []
    released = submit(d.c, {"kind": "noop"})
    d.c.rq("wait", ids=released)
    assert d.c.rq("release", ids=released)["released"] == [True]
    d.stop()

    d = start(tmp_path, *store.args)
    assert states(d.c, ids + released) == ["done", "done", "done", "expired"]
    r = d.c.rq("result", future=ids[0])
    assert r["result"]["is_prime"] is False and r["result"]["smallest_factor"] == 7
    (new,) = submit(d.c, {"kind": "noop"})
    assert new > released[0], "an ID was issued twice"
    assert "recovered 0 pending, 0 running" in d.output()
    assert "3 done" in d.output()


def test_pending_jobs_run_after_kill9(tmp_path, store):
    d = start(tmp_path, "--prefetch", "0", *store.args)
    blockers = submit(d.c, *[{"kind": "sleep", "args": {"seconds": 60}}] * 2)
    wait_for(lambda: states(d.c, blockers) == ["running", "running"])
    queued = submit(d.c, *[{"kind": "sleep", "args": {"seconds": 0}, "priority": p}
                           for p in (1, 3, 2)])
    assert states(d.c, queued) == ["pending"] * 3
    kill9(d)

    d = start(tmp_path, "--prefetch", "0", *store.args)
    # The blockers had no retries: interrupted. The pending ones ran.
    assert d.c.rq("wait", ids=blockers + queued, timeout=30)["not_done"] == []
    r = d.c.rq("results", ids=blockers + queued)["results"]
    assert [x["state"] for x in r] == ["failed", "failed", "done", "done", "done"]
    assert {x["failure"]["code"] for x in r[:2]} == {"interrupted"}
    info = listed(d.c)
    assert [info[i]["attempts"] for i in blockers + queued] == [1, 1, 1, 1, 1]


def test_a_running_job_with_retries_runs_again_after_kill9(tmp_path, store):
    d = start(tmp_path, *store.args)
    (job,) = submit(d.c, {"kind": "sleep", "args": {"seconds": 1.5}, "retries": 1})
    wait_for(lambda: states(d.c, [job]) == ["running"])
    time.sleep(0.2)  # let the store commit the start
    kill9(d)

    d = start(tmp_path, *store.args)
    assert states(d.c, [job]) in (["pending"], ["running"])
    assert d.c.rq("result", future=job, timeout=30)["state"] == "done"
    assert listed(d.c)[job]["attempts"] == 2
    assert "1 to run again" in d.output()


def test_submit_is_acknowledged_only_once_committed(tmp_path, store):
    """Every ID a submit answered with is in the store when the reply arrives."""
    d = start(tmp_path, "--sync", "full", *store.args)
    ids = submit(d.c, *[{"kind": "sleep", "args": {"seconds": 30}}] * 50)
    assert set(ids) <= store.ids(tmp_path)
    kill9(d)
    d = start(tmp_path, *store.args)
    assert set(listed(d.c)) >= set(ids)
    d.c.rq("cancel", ids=ids)


def test_kill9_storm_loses_no_acknowledged_job(tmp_path, store):
    """A 10,000-job batch (sleeps and primes, some with retries), futured killed with SIGKILL at
    random moments five times and restarted each time: every acknowledged ID ends final, none is
    reused, finished results stay intact, and no job is started more often than its retries
    allow.

    The results compared across the kills are those the store held (state 2, done) before each;
    test_a_result_seen_survives_kill9_at_once shows that every result answered is one of them."""
    rng = random.Random(7)
    primes = [(2147483647, True), (2305843009213693951, True), (1000000016000000063, False)]
    jobs, expect = [], {}
    for i in range(10000):
        if i % 3 == 0:
            n, is_prime = primes[i % len(primes)]
            jobs.append({"kind": "prime", "args": {"n": n}, "retries": rng.choice([0, 1, 2])})
            expect[i] = is_prime
        else:
            jobs.append({"kind": "sleep", "args": {"seconds": 0.002},
                         "retries": rng.choice([0, 1, 2])})
    d = start(tmp_path, "--threads", "4", *store.args)
    ids = d.c.rq("submit", jobs=jobs)["ids"]
    assert ids == list(range(ids[0], ids[0] + 10000))
    finished_before = {}
    for kill in range(5):
        time.sleep(rng.uniform(0.2, 0.8))
        done = sorted(store.ids(tmp_path, "state = 2"))
        for r in d.c.rq("results", ids=done[:500])["results"] if done else []:
            finished_before[r["id"]] = r["result"]
        kill9(d)
        d = start(tmp_path, "--threads", "4", *store.args)
    assert finished_before, "no result was committed before the kills"
    assert d.c.rq("wait", ids=ids, timeout=300)["not_done"] == []
    info = listed(d.c)
    for k, fid in enumerate(ids):
        f = info[fid]
        assert f["state"] in ("done", "failed"), f
        assert f["attempts"] <= 1 + jobs[k]["retries"], (f, jobs[k])
    results = {}
    for chunk in range(0, 10000, 2000):
        for r in d.c.rq("results", ids=ids[chunk:chunk + 2000])["results"]:
            results[r["id"]] = r
    for k, fid in enumerate(ids):
        r = results[fid]
        if r["state"] == "failed":
            assert r["failure"]["code"] in ("interrupted", "worker_died"), r
        elif k in expect:
            assert r["result"]["is_prime"] is expect[k], r
    for fid, before in finished_before.items():
        assert results[fid].get("result") == before, results[fid]
    (new,) = submit(d.c, {"kind": "noop"})
    assert new > ids[-1]


def damaged_start(tmp_path):
    p = subprocess.run([str(FUTURED), "--listen", f"ipc://{tmp_path}/x.sock",
                        "--events", f"ipc://{tmp_path}/xe.sock", "--state-dir",
                        str(tmp_path / "state")], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stderr


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_unreadable_store_is_refused(tmp_path):
    (tmp_path / "state" / "futured.db").mkdir(parents=True)  # no file futured can open
    code, err = damaged_start(tmp_path)
    assert code == 2, err
    assert str(tmp_path / "state" / "futured.db") in err, err
    assert (tmp_path / "state" / "futured.db").is_dir()


@pytest.mark.parametrize("case", ["not_a_database", "newer_schema", "foreign_database",
                                  "truncated"])
def test_a_damaged_store_is_refused_and_left_untouched(tmp_path, case):
    state = tmp_path / "state"
    state.mkdir()
    db = state / "futured.db"
    if case == "not_a_database":
        db.write_bytes(b"this is not a database, but a user's precious file\n" * 100)
    elif case == "truncated":
        d = start(tmp_path)
        submit(d.c, *[{"kind": "noop"}] * 2000)
        d.stop()
        data = db.read_bytes()
        db.write_bytes(data[:len(data) // 3])
    else:
        con = sqlite3.connect(db)
        if case == "newer_schema":
            con.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
            con.execute("PRAGMA user_version = 99")
        else:
            con.execute("CREATE TABLE recipes (name TEXT)")
        con.commit()
        con.close()
    before = digest(db)
    code, err = damaged_start(tmp_path)
    assert code == 2, err
    assert str(db) in err, err
    assert {"not_a_database": "not a futured database", "truncated": "damaged",
            "newer_schema": "newer futured", "foreign_database": "not futured's"}[case] in err, err
    assert digest(db) == before


def test_a_store_in_use_is_refused(tmp_path):
    d = start(tmp_path)
    code, err = damaged_start(tmp_path)
    assert code == 2 and "another futured has it open" in err, err
    assert d.c.rq("hello")["store"] == "sqlite"


def test_memory_store_keeps_no_file(tmp_path):
    d = start(tmp_path, "--store", "memory")
    assert d.c.rq("hello")["store"] == "memory"
    submit(d.c, {"kind": "noop"})
    d.stop()
    assert not (tmp_path / "state" / "futured.db").exists()


def test_a_full_disk_refuses_submits_keeps_answering_and_recovers(tmp_path):
    """The state directory on a 4 MiB tmpfs, filled up: submits get `store_full` and nothing of
    them is queued, reads go on, and once space is freed submits work again by themselves."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        d = start(tmp_path, "--state-dir", str(small / "state"))
        kept = submit(d.c, *[{"kind": "noop"}] * 10)
        assert d.c.rq("wait", ids=kept)["not_done"] == []
        filler = small / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        full = None
        for _ in range(200):
            r = d.c.rq("submit", jobs=[{"kind": "noop"}] * 2000, reply_timeout=30)
            if not r["ok"]:
                full = r
                break
        assert full is not None, "the disk never filled"
        assert full["error"]["code"] == "store_full", full
        # Reads are served, the results of before are intact.
        assert d.c.rq("status", ids=kept)["states"] == ["done"] * 10
        assert d.c.rq("result", future=kept[0])["state"] == "done"
        st = d.c.rq("stats")["stats"]
        filler.unlink()
        # Room again: the next submits are kept, without a restart.
        wait_for(lambda: d.c.rq("submit", jobs=[{"kind": "noop"}], reply_timeout=30)["ok"],
                 timeout=30, what="a submit to work again")
        again = submit(d.c, {"kind": "sleep", "args": {"seconds": 0}})
        assert d.c.rq("result", future=again[0], timeout=30)["state"] == "done"
        assert "cannot commit to the store" in d.output() and "works again" in d.output()
        assert st["pending"] == 0, st  # nothing of a refused submit was queued
        d.stop()
        d = start(tmp_path, "--state-dir", str(small / "state"))
        assert d.c.rq("status", ids=kept + again)["states"] == ["done"] * 11
    finally:
        for x in list(RUNNING):
            if x.proc.poll() is None:
                x.stop()
        RUNNING.clear()
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_idempotency_key_gives_the_same_id_before_and_after_a_restart(tmp_path, store):
    from conftest import FUTURECTL
    d = start(tmp_path, *store.args)
    jobs = [{"kind": "sleep", "args": {"seconds": 0}, "idempotency_key": "order-17"},
            {"kind": "noop", "idempotency_key": "order-18"},
            {"kind": "noop", "idempotency_key": "order-17"}]
    ids = submit(d.c, *jobs)
    assert ids[2] == ids[0] and ids[1] != ids[0]
    assert submit(d.c, jobs[1]) == [ids[1]]
    assert d.c.rq("wait", ids=ids)["not_done"] == []
    # futurectl --key resends the same way.
    key = subprocess.run([str(FUTURECTL), "--connect", d.endpoint, "submit", "noop", "--key",
                          "cli-1"], capture_output=True, text=True, check=True).stdout
    kill9(d)

    d = start(tmp_path, *store.args)
    assert submit(d.c, *jobs) == ids, "a key was forgotten across the restart"
    again = subprocess.run([str(FUTURECTL), "--connect", d.endpoint, "submit", "noop", "--key",
                            "cli-1"], capture_output=True, text=True, check=True).stdout
    assert again == key
    # Released: the key is free again, and a new job gets a new ID.
    assert d.c.rq("release", ids=[ids[1]])["released"] == [True]
    (new,) = submit(d.c, jobs[1])
    assert new > max(ids)
    bad = d.c.rq("submit", jobs=[{"kind": "noop", "idempotency_key": "k" * 129}])
    assert bad["error"]["code"] == "bad_request" and bad["error"]["field"] == "idempotency_key"


def test_a_finish_is_seen_only_once_committed(tmp_path):
    """Another connection holds SQLite's write lock on futured.db, so no batch commits (each try
    fails fast with SQLITE_BUSY and is carried over). Meanwhile a job finishes in the daemon
    (`stats` counts it done) but no client sees it: `status` and `list` say running, `result`
    is not done, `wait` stays deferred, no event goes out, and the cancel that let it run is not
    answered yet. Once the lock goes, all of it arrives."""
    d = start(tmp_path, "--threads", "1", "--prefetch", "0")
    c = d.c
    blocker, job = submit(c, {"kind": "sleep", "args": {"seconds": 600}},
                          {"kind": "sleep", "args": {"seconds": 0.01}})
    wait_for(lambda: states(c, [blocker, job]) == ["running", "pending"], 10, "no blocker")
    waiter = d.client()
    with d.subscriber("done/", "cancelled/") as sub:
        db = sqlite3.connect(str(tmp_path / "state" / "futured.db"), isolation_level=None,
                             timeout=0)
        try:
            db.execute("BEGIN IMMEDIATE")
            waiter.send(op="wait", ids=[job], timeout=60)
            c.send(op="cancel", ids=[blocker])
            # The blocker's thread is free once its cancel is noticed: the job runs and ends.
            wait_for(lambda: c.rq("stats")["stats"]["done"] == 1, 30, "the job never ended")
            assert c.rq("stats")["stats"]["store_failing"] == 1
            assert states(c, [blocker, job]) == ["running", "running"]
            assert c.rq("result", future=job, timeout=0)["error"]["code"] == "not_done"
            assert [f["id"] for f in c.rq("list", state="running")["futures"]] == [blocker, job]
            assert c.rq("list", state="done")["futures"] == []
            assert c.rq("release", ids=[job])["released"] == [False]
            assert not sub.poll(300), sub.recv_multipart()
            assert not waiter.sock.poll(0)
        finally:
            db.rollback()
            db.close()
        r = c.recv(timeout=30)
        assert r["cancelled"] == [True], r
        seen = {msgpack.unpackb(sub.recv_multipart()[1])["id"] for _ in range(2)}
        assert seen == {blocker, job}
    r = waiter.recv(timeout=30)
    assert r["done"] == [job], r
    assert states(c, [blocker, job]) == ["cancelled", "done"]
    assert "cannot commit to the store" in d.output() and "works again" in d.output()


def test_a_result_seen_survives_kill9_at_once(tmp_path, store):
    """kill -9 right after `results` answered: every result seen is there, the same, after the
    restart (a result is answered only once its finish is committed). Three rounds of noop jobs
    (inline: they end in the loop turn they start) and primes (worker processes)."""
    d = start(tmp_path, *store.args)
    seen = {}
    for _ in range(3):
        ids = submit(d.c, *[{"kind": "noop"}] * 300,
                     *[{"kind": "prime", "args": {"n": 1000003 + 2 * i}} for i in range(20)])
        r = d.c.rq("results", ids=ids, timeout=60, reply_timeout=90)
        kill9(d)
        for x in r["results"]:
            assert x["state"] == "done", x
            seen[x["id"]] = x["result"]
        d = start(tmp_path, *store.args)
        after = d.c.rq("results", ids=list(seen), timeout=0)["results"]
        assert {x["id"]: x.get("result") for x in after} == seen
