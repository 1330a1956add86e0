"""Principals (docs/SECURITY.md): a client is its uid on ipc:// (SO_PEERCRED), quotas are per
principal, and the scheduler lets principals take turns. Two principals are two uids: root (the
test) and nobody (a raw client run under setpriv)."""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap

import msgpack
import pytest

from conftest import FUTURECTL, wait_for

NOBODY = 65534

# A raw client run as another user: sends each request given as JSON on the command line and
# prints each reply as JSON.
AS_USER = textwrap.dedent("""
    import json, sys, msgpack, zmq
    s = zmq.Context().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(sys.argv[1])
    for i, req in enumerate(sys.argv[2:], 1):
        s.send(msgpack.packb({"v": 1, "id": i, **json.loads(req)}))
        if not s.poll(30000):
            sys.exit("no reply")
        print(json.dumps(msgpack.unpackb(s.recv())))
""")


@pytest.fixture
def open_dir():
    """A directory any user may enter (pytest's tmp_path is 0700), for a socket of mode 0666."""
    d = tempfile.mkdtemp(prefix="futured-principals-")
    os.chmod(d, 0o755)
    with open(os.path.join(d, "client.py"), "w") as f:
        f.write(AS_USER)
    os.chmod(os.path.join(d, "client.py"), 0o644)
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def as_nobody(open_dir, endpoint, *requests):
    """The replies to `requests` (dicts) sent in order by one client running as nobody."""
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        sys.executable, f"{open_dir}/client.py", endpoint,
                        *(json.dumps(q) for q in requests)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def start_shared(start_daemon, open_dir, *args):
    """A daemon with a second ipc:// socket that every user may open."""
    sock = f"ipc://{open_dir}/shared.sock"
    d = start_daemon("--listen", sock, "--socket-mode", "0666", *args)
    return d, sock


def sleep_job(seconds):
    return {"kind": "sleep", "args": {"seconds": seconds}}


def test_the_principal_is_the_peer_uid(start_daemon, open_dir):
    d, sock = start_shared(start_daemon, open_dir, "--store", "memory")
    assert d.c.rq("hello")["principal"] == f"uid:{os.getuid()}"
    (hello,) = as_nobody(open_dir, sock, {"op": "hello"})
    assert hello["principal"] == f"uid:{NOBODY}"
    assert hello["quotas"] == {"pending": 250000, "running": 0, "retained": 500000,
                               "deferred": 4000, "download_bytes": 256 << 20}


def test_quota_exceeded_for_one_principal_while_another_is_served(start_daemon, open_dir):
    d, sock = start_shared(start_daemon, open_dir, "--store", "memory", "--threads", "1",
                           "--quota-pending", "5", "--grace", "0")
    c = d.c
    r = c.rq("submit", jobs=[sleep_job(60)] * 5)
    assert r["ok"], r
    held = r["ids"]
    r = c.rq("submit", jobs=[{"kind": "noop"}])
    assert not r["ok"] and r["error"]["code"] == "quota_exceeded", r
    assert f"uid:{os.getuid()}" in r["error"]["message"] and "5 unfinished" in r["error"]["message"]
    # A batch that would pass the quota is refused whole, below it too.
    c.rq("cancel", ids=held[:2])
    r = c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 60}}] * 3)
    assert r["error"]["code"] == "quota_exceeded", r
    assert c.rq("submit", jobs=[sleep_job(60)] * 2)["ok"]
    # nobody is another principal: served although root is at its quota (and the one thread
    # is busy: nobody's noop runs inline on the loop).
    (sub,) = as_nobody(open_dir, sock, {"op": "submit", "jobs": [{"kind": "noop"}] * 5})
    assert sub["ok"], sub
    res = as_nobody(open_dir, sock, {"op": "results", "ids": sub["ids"]})[0]
    assert res["ok"] and [o["state"] for o in res["results"]] == ["done"] * 5, res
    c.rq("cancel", ids=held)


def test_the_retained_quota_counts_results_until_released(start_daemon):
    d = start_daemon("--store", "memory", "--quota-retained", "3")
    c = d.c
    ids = c.rq("submit", jobs=[{"kind": "noop"}] * 3, reply="results")["ids"]
    r = c.rq("submit", jobs=[{"kind": "noop"}])
    assert r["error"]["code"] == "quota_exceeded" and "retained" in r["error"]["message"], r
    r = subprocess.run([str(FUTURECTL), "-c", d.endpoint, "submit", "noop"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "(quota_exceeded)" in r.stderr and "release" in r.stderr
    assert c.rq("release", ids=ids[:1])["released"] == [True]
    assert c.rq("submit", jobs=[{"kind": "noop"}])["ok"]


def test_principals_take_turns(start_daemon, open_dir):
    """One principal's 2,000 queued jobs and another's one: with one thread, jobs finish in the
    order they start, so the done events count how many of the big batch went first."""
    d, sock = start_shared(start_daemon, open_dir, "--store", "memory", "--threads", "1",
                           "--prefetch", "0", "--grace", "0")
    c = d.c
    sub = d.subscriber("done/")
    try:
        (blocker,) = c.rq("submit", jobs=[sleep_job(60)])["ids"]
        wait_for(lambda: c.rq("status", ids=[blocker])["states"] == ["running"], 10, "blocker")
        big = []
        for _ in range(2):
            r = c.rq("submit", jobs=[sleep_job(0)] * 1000)
            assert r["ok"], r
            big += r["ids"]
        (small,) = as_nobody(open_dir, sock, {"op": "submit", "jobs": [sleep_job(0)]})[0]["ids"]
        assert small > big[-1]   # submitted last: FIFO would run it last
        c.rq("cancel", ids=[blocker])
        order = []
        big_set = set(big)
        while small not in order:
            assert sub.poll(30000), len(order)
            fid = msgpack.unpackb(sub.recv_multipart()[1])["id"]
            if fid in big_set or fid == small:
                order.append(fid)
        before = order.index(small)
        # The small job's principal had no turn yet, the big one's had (the blocker): the
        # small one goes first. Never more than one job per other principal.
        assert before <= 1, before
        assert c.rq("wait", ids=big, timeout=60, reply_timeout=90)["not_done"] == []
    finally:
        sub.close(0)


V1_SCHEMA = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO settings VALUES ('next_id', 3);
CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, args BLOB, grp TEXT,
 group_limit INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL DEFAULT 0,
 timeout_ms INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,
 attempt INTEGER NOT NULL DEFAULT 0, state INTEGER NOT NULL, outcome BLOB, finished_at INTEGER,
 idempotency_key TEXT, owner TEXT);
PRAGMA user_version = 1;
"""


def test_a_version_1_store_is_migrated_and_principals_are_stored(tmp_path, start_daemon):
    """A file of schema 1 (as futured 0.1 wrote it: docs/DURABILITY.md) gains the principal
    column; its jobs, which have none, belong to "unknown" and still run and answer."""
    (tmp_path / "state").mkdir()
    db = tmp_path / "state" / "futured.db"
    con = sqlite3.connect(db)
    con.executescript(V1_SCHEMA)
    con.execute("INSERT INTO jobs (id, kind, args, state) VALUES (1, 'noop', ?, 0)",
                (msgpack.packb({}),))
    con.execute("INSERT INTO jobs (id, kind, args, state, outcome, finished_at) "
                "VALUES (2, 'noop', NULL, 2, ?, strftime('%s') * 1000)", (msgpack.packb({}),))
    con.commit()
    con.close()
    d = start_daemon()
    assert "migrated from schema version 1 to 2" in d.output()
    c = d.c
    assert c.rq("result", future=1, timeout=10)["state"] == "done"
    assert c.rq("result", future=2)["state"] == "done"
    (fid,) = c.rq("submit", jobs=[{"kind": "noop"}])["ids"]
    assert c.rq("result", future=fid, timeout=10)["state"] == "done"
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert ro.execute("PRAGMA user_version").fetchone()[0] == 2
        rows = dict(ro.execute("SELECT id, principal FROM jobs").fetchall())
    finally:
        ro.close()
    assert rows[1] is None and rows[fid] == f"uid:{os.getuid()}", rows


def test_deferred_replies_are_counted_per_principal(start_daemon, open_dir):
    d, sock = start_shared(start_daemon, open_dir, "--store", "memory", "--threads", "1",
                           "--quota-deferred", "2", "--grace", "0")
    (blocker,) = d.c.rq("submit", jobs=[sleep_job(60)])["ids"]
    # Two clients (connections) of one principal: the quota is theirs together.
    waiting = [d.client(), d.client()]
    for w in waiting:
        w.send(op="wait", ids=[blocker])
    wait_for(lambda: d.c.rq("stats")["stats"]["clients_deferred"] == 2, 10, "two deferred")
    r = d.client().rq("wait", ids=[blocker])
    assert r["error"]["code"] == "quota_exceeded" and "deferred" in r["error"]["message"], r
    # Another principal is not held back: its wait is deferred, then times out.
    (w,) = as_nobody(open_dir, sock, {"op": "wait", "ids": [blocker], "timeout": 0.2})
    assert w["ok"] and w["not_done"] == [blocker], w
    d.c.rq("cancel", ids=[blocker])
    for w in waiting:
        assert w.recv()["done"] == [blocker]
