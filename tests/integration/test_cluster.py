"""Cluster mode (docs/CLUSTER.md): three futured nodes share one real PostgreSQL database
(pgserver.py). Each test starts its own three nodes, with a short lease so that a dead node's
jobs come back in seconds."""
import signal
import subprocess
import time
import urllib.request

import msgpack

from conftest import FUTURECTL, FUTURED, Daemon, wait_for
from httpserver import start_testhttp  # noqa: F401 (a fixture)
from test_durability import RUNNING, stop_every_daemon  # noqa: F401 (an autouse fixture)

LEASE = "1.5"


def node(tmp_path, uri, i, *args):
    d = tmp_path / f"n{i}"
    d.mkdir(exist_ok=True)
    n = Daemon(d, "--threads", "2", "--processes", "1", "--store", uri, "--cluster",
               "--lease", LEASE, *args)
    RUNNING.append(n)
    return n


def three(tmp_path, uri, *args):
    return [node(tmp_path, uri, i, *args) for i in (1, 2, 3)]


def stats(n):
    return n.c.rq("stats")["stats"]


def test_cluster_needs_postgresql(tmp_path):
    p = subprocess.run([str(FUTURED), "--listen", f"ipc://{tmp_path}/x.sock",
                        "--events", f"ipc://{tmp_path}/xe.sock", "--store", "memory",
                        "--cluster"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--cluster needs" in p.stderr, p.stderr


def test_a_futured_without_cluster_is_still_refused_beside_nodes(tmp_path, pg_database):
    uri, _ = pg_database
    node(tmp_path, uri, 1)
    p = subprocess.run([str(FUTURED), "--listen", f"ipc://{tmp_path}/x.sock",
                        "--events", f"ipc://{tmp_path}/xe.sock", "--store", uri],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "another futured uses it" in p.stderr, p.stderr


def test_migration_from_version_1(tmp_path, pg_server, pg_database):
    uri, name = pg_database
    # The schema of version 1, as a futured before cluster mode left it, with a finished job,
    # and two that nodes before version 3 (keys per node) gave the same idempotency key.
    pg_server.psql(
        "CREATE TABLE futured_version (version integer NOT NULL);"
        "INSERT INTO futured_version VALUES (1);"
        "CREATE SEQUENCE futured_ids AS bigint INCREMENT BY 16384 START WITH 1;"
        "CREATE TABLE futured_jobs (id bigint PRIMARY KEY, kind text NOT NULL, args bytea,"
        " grp text, group_limit integer NOT NULL DEFAULT 0,"
        " priority smallint NOT NULL DEFAULT 0, timeout_ms bigint NOT NULL DEFAULT 0,"
        " retries smallint NOT NULL DEFAULT 0, attempt smallint NOT NULL DEFAULT 0,"
        " state smallint NOT NULL, outcome bytea, finished_at bigint, idempotency_key text,"
        " owner text);"
        "INSERT INTO futured_jobs (id, kind, state, outcome, finished_at, attempt)"
        " VALUES (5, 'noop', 2, '\\x80', (extract(epoch from now()) * 1000)::bigint, 1);"
        "INSERT INTO futured_jobs (id, kind, state, outcome, finished_at, attempt,"
        " idempotency_key) SELECT i, 'noop', 2, '\\x80',"
        " (extract(epoch from now()) * 1000)::bigint, 1, 'dup' FROM generate_series(6, 7) i;",
        name, name)
    n = node(tmp_path, uri, 1)
    assert pg_server.psql("SELECT max(version) FROM futured_version", name, name) == [["3"]]
    # Version 3: the key stays with the first of its jobs, and names it from now on.
    assert pg_server.psql("SELECT id, idempotency_key FROM futured_jobs WHERE id >= 6 "
                          "ORDER BY id", name, name) == [["6", "dup"], ["7", ""]]
    assert n.c.rq("submit", jobs=[{"kind": "noop", "idempotency_key": "dup"}])["ids"] == [6]
    cols = pg_server.psql("SELECT column_name FROM information_schema.columns WHERE "
                          "table_name = 'futured_jobs' AND column_name = 'cancel_requested'",
                          name, name)
    assert cols == [["cancel_requested"]]
    assert pg_server.psql("SELECT count(*) FROM futured_nodes", name, name) == [["1"]]
    # The job of version 1 is there for the node (read from the database when asked).
    assert n.c.rq("status", ids=[5])["states"] == ["done"]


def test_jobs_run_on_every_node_and_any_node_answers(tmp_path, pg_database):
    uri, _ = pg_database
    nodes = three(tmp_path, uri)
    jobs = []
    for i in range(3000):
        if i % 3 == 0:
            jobs.append({"kind": "sleep", "args": {"seconds": 0.02}})
        elif i % 3 == 1:
            jobs.append({"kind": "prime", "args": {"n": 1000003 + 2 * i}})
        else:
            jobs.append({"kind": "noop"})
    ids = []
    for k in range(0, len(jobs), 500):
        ids += nodes[0].c.rq("submit", jobs=jobs[k:k + 500])["ids"]
    assert len(set(ids)) == 3000
    # A client of node 3 waits on all of them: futurectl wait --all, then the protocol's wait.
    p = subprocess.run([str(FUTURECTL), "--connect", nodes[2].endpoint, "wait", *map(str, ids),
                        "--all", "--timeout", "120"], capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    r = nodes[2].c.rq("wait", ids=ids, mode="all", timeout=120, reply_timeout=130)
    assert len(r["done"]) == 3000 and r["not_done"] == [], r["not_done"][:10]
    for k in range(0, 3000, 300):
        chunk = ids[k:k + 300]
        res = nodes[2].c.rq("results", ids=chunk, timeout=10)["results"]
        for j, (fid, out) in enumerate(zip(chunk, res)):
            i = k + j
            assert out["state"] == "done", (fid, out)
            if i % 3 == 1:
                n = 1000003 + 2 * i
                is_prime = all(n % d for d in range(2, int(n ** 0.5) + 1))
                assert out["result"]["is_prime"] == is_prime, (n, out)
    ran = [stats(n)["cluster_ran"] for n in nodes]
    assert all(x > 0 for x in ran), ran
    assert sum(ran) == 3000, ran
    assert all(stats(n)["cluster_claimed"] > 0 for n in nodes[1:])


def test_a_dead_nodes_jobs_finish_elsewhere(tmp_path, pg_server, pg_database):
    uri, name = pg_database
    n1 = node(tmp_path, uri, 1, "--threads", "200", "--prefetch", "0")
    n2 = node(tmp_path, uri, 2, "--threads", "100", "--prefetch", "0")
    n3 = node(tmp_path, uri, 3, "--threads", "100", "--prefetch", "0")
    ids = n1.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 1}, "retries": 1}
                                  for _ in range(200)])["ids"]
    owner = wait_for(lambda: pg_server.psql(
        "SELECT DISTINCT owner FROM futured_jobs WHERE state = 1", name, name))
    assert len(owner) == 1
    wait_for(lambda: pg_server.psql("SELECT count(*) FROM futured_jobs WHERE state = 1",
                                    name, name) == [["200"]])
    dead = owner[0][0]
    n1.stop(signal.SIGKILL)
    RUNNING.remove(n1)
    # Within the lease, a claim and the second run of 1 s, and a few seconds of slack.
    r = n3.c.rq("wait", ids=ids, mode="all", timeout=float(LEASE) + 1 + 8, reply_timeout=30)
    assert len(r["done"]) == 200, r
    rows = pg_server.psql("SELECT state, attempt, owner FROM futured_jobs WHERE id = ANY("
                          f"ARRAY{ids})", name, name)
    assert all(s == "2" for s, _, _ in rows), rows[:5]
    assert all(a == "2" and o != dead for _, a, o in rows), rows[:5]
    # The node comes back (a new run: another owner) and claims again.
    n1 = node(tmp_path, uri, 1)
    more = n2.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 0.3}}
                                   for _ in range(400)])["ids"]
    n2.c.rq("wait", ids=more, mode="all", timeout=60, reply_timeout=70)
    assert stats(n1)["cluster_claimed"] > 0


def test_a_group_limit_holds_across_the_cluster(tmp_path, pg_database, start_testhttp):
    """futurectl flags -e -m 20 through node 1: the test server never sees more than 20
    downloads at once, though three nodes with room for many more share the database."""
    uri, _ = pg_database
    nodes = three(tmp_path, uri, "--transfers", "200")
    server = start_testhttp("--mode", "delay", "--delay", "0.05")
    p = subprocess.run([str(FUTURECTL), "--connect", nodes[0].endpoint, "flags", "-e", "-m",
                        "20", "--base-url", server.url + "/flags", "--dest", str(tmp_path / "f")],
                       capture_output=True, text=True, timeout=300)
    assert "194 flags downloaded." in p.stdout, p.stdout + p.stderr
    assert 1 < peak(server) <= 20
    # One group submitted through every node at once: its limit holds for all of them.
    server = start_testhttp("--mode", "delay", "--delay", "0.05")
    jobs = [{"kind": "download", "group": "g", "group_limit": 5,
             "args": {"url": f"{server.url}/flags/{cc}/{cc}.gif"}}
            for cc in ("br", "ar", "fr", "de", "it", "es", "jp", "cn", "in", "us") * 6]
    ids = [i for n in nodes for i in n.c.rq("submit", jobs=jobs)["ids"]]
    r = nodes[1].c.rq("wait", ids=ids, mode="all", timeout=120, reply_timeout=130)
    assert r["not_done"] == [], r
    assert 1 < peak(server) <= 5, [n.output()[-3000:] for n in nodes]
    assert sum(stats(n)["cluster_claimed"] for n in nodes) >= 180


def peak(server):
    """The most requests the test server had in progress at once."""
    with urllib.request.urlopen(server.url + "/_peak", timeout=10) as r:
        return int(r.read().decode().strip())


def test_a_cancel_reaches_the_node_that_runs_the_job(tmp_path, pg_database):
    uri, _ = pg_database
    n1, n2, n3 = three(tmp_path, uri)
    [fid] = n2.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 60}}])["ids"]
    wait_for(lambda: n2.c.rq("status", ids=[fid])["states"] == ["running"])
    # Node 3 does not hold it: the cancel goes through the database to node 2.
    assert n3.c.rq("cancel", ids=[fid])["cancelled"] == [True]
    assert n3.c.rq("wait", ids=[fid], timeout=20, reply_timeout=30)["not_done"] == []
    assert n3.c.rq("status", ids=[fid])["states"] == ["cancelled"]
    # Node 2 stops it: asked through cancel_requested when its start was written, or, when
    # the cancel found the row not started yet, because the database refuses its start.
    wait_for(lambda: n2.c.rq("status", ids=[fid])["states"] == ["cancelled"], 10,
             "node 2 to cancel it")
    wait_for(lambda: stats(n2)["running"] == 0, what="node 2's thread to let go")
    # Node 1 learns it too, from the row.
    assert n1.c.rq("status", ids=[fid])["states"] == ["cancelled"]


def test_the_database_stopped_for_5_s(tmp_path, pg_server, pg_database):
    """PostgreSQL stopped while three nodes run jobs: submits get store_unavailable, the running
    jobs' results appear once it is back, no acknowledged job is lost."""
    uri, name = pg_database
    nodes = three(tmp_path, uri)
    ids = nodes[0].c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 2}}
                                        for _ in range(30)])["ids"]
    wait_for(lambda: all(stats(n)["running"] > 0 for n in nodes), 10, "jobs on every node")
    pg_server.stop()
    try:
        for n in nodes:
            r = n.c.rq("submit", jobs=[{"kind": "noop"}], reply_timeout=30)
            assert not r["ok"] and r["error"]["code"] == "store_unavailable", r
        # An ID no node holds cannot be read meanwhile: said so, not guessed.
        r = nodes[2].c.rq("status", ids=[max(ids) + 1000000], reply_timeout=30)
        assert not r["ok"] and r["error"]["code"] == "store_unavailable", r
        time.sleep(5)
    finally:
        pg_server.start()
    r = nodes[2].c.rq("wait", ids=ids, mode="all", timeout=60, reply_timeout=70)
    assert r["not_done"] == [], r
    res = nodes[1].c.rq("results", ids=ids, timeout=10)["results"]
    assert all(x["state"] == "done" for x in res), res
    wait_for(lambda: pg_server.psql(
        "SELECT count(*) FROM futured_jobs WHERE state = 2 AND id = ANY(ARRAY"
        f"{ids})", name, name) == [["30"]], 30, "every result in the table")
    wait_for(lambda: nodes[0].c.rq("submit", jobs=[{"kind": "noop"}], reply_timeout=30)["ok"],
             timeout=30, what="submits to work again")


def test_a_node_that_lost_its_lease_writes_nothing(tmp_path, pg_server, pg_database):
    """A node frozen (SIGSTOP) past its lease loses its running jobs to the others; thawed, its
    own results of those jobs are refused by the database (fencing) and dropped, never seen: a
    client waiting on node 1 is answered with the database's results, and the running slots the
    refused jobs held go back (node 1 runs as many jobs at once as --quota-running again)."""
    uri, name = pg_database
    n1 = node(tmp_path, uri, 1, "--threads", "50", "--prefetch", "0", "--quota-running", "20")
    n2 = node(tmp_path, uri, 2, "--threads", "50", "--prefetch", "0")
    ids = n1.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 3}, "retries": 1}
                                  for _ in range(20)])["ids"]
    wait_for(lambda: pg_server.psql("SELECT count(*) FROM futured_jobs WHERE state = 1",
                                    name, name) == [["20"]])
    [[frozen]] = pg_server.psql("SELECT DISTINCT owner FROM futured_jobs WHERE state = 1",
                                name, name)
    waiter = n1.client()
    waiter.send(op="wait", ids=ids[:5], mode="all", timeout=60)
    n1.proc.send_signal(signal.SIGSTOP)
    try:
        r = n2.c.rq("wait", ids=ids, mode="all", timeout=30, reply_timeout=40)
        assert r["not_done"] == [], r
    finally:
        n1.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: stats(n1)["cluster_fenced"] >= 20, 20, "node 1's results to be refused")
    r = waiter.recv(40)
    assert r["ok"] and r["not_done"] == [], r
    more = n1.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 60}}
                                   for _ in range(20)])["ids"]
    wait_for(lambda: n1.c.rq("status", ids=more)["states"] == ["running"] * 20, 20,
             "20 jobs running at once on node 1")
    assert n1.c.rq("cancel", ids=more)["cancelled"] == [True] * 20
    rows = pg_server.psql(f"SELECT state, attempt, owner FROM futured_jobs WHERE id = ANY(ARRAY"
                          f"{ids})", name, name)
    assert all(s == "2" and a == "2" and o != frozen for s, a, o in rows), rows[:5]
    assert stats(n1)["cluster_lease_lost"] >= 1
    assert n1.c.rq("status", ids=ids)["states"] == ["done"] * 20


def test_a_node_without_processes_never_claims_prime(tmp_path, pg_database):
    uri, _ = pg_database
    n1 = node(tmp_path, uri, 1, "--processes", "0")
    n2 = node(tmp_path, uri, 2)
    ids = n1.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": 1000003}}] * 20)["ids"]
    r = n1.c.rq("wait", ids=ids, mode="all", timeout=60, reply_timeout=70)
    assert r["not_done"] == [], r
    assert stats(n1)["cluster_ran"] == 0
    assert stats(n2)["cluster_ran"] == 20


def finish_events(sub, want):
    """The finish events (id -> event) a SUB socket receives until it has `want` IDs."""
    seen = {}
    while len(seen) < len(want):
        assert sub.poll(30000), f"no event; missing {sorted(set(want) - set(seen))[:10]}"
        topic, body = sub.recv_multipart()
        ev = msgpack.unpackb(body)
        assert topic.decode() == f"{ev['state']}/{ev['group']}", (topic, ev)
        seen[ev["id"]] = ev
    return seen


def test_every_node_publishes_every_finish(tmp_path, pg_database):
    uri, _ = pg_database
    # Only node 2 runs prime jobs; node 3 never hears of them but through the database.
    n1 = node(tmp_path, uri, 1, "--processes", "0")
    n2 = node(tmp_path, uri, 2)
    n3 = node(tmp_path, uri, 3, "--processes", "0")
    sub = n3.subscriber("done/", "failed/", "cancelled/")
    ids = n1.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": 1000003}, "group": "g"}
                                  for _ in range(20)])["ids"]
    # A job that fails (its timeout), with its failure map in the event.
    bad = n1.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": 2305843009213693951},
                                   "timeout": 0.2}])["ids"][0]
    seen = finish_events(sub, set(ids) | {bad})
    assert set(seen) == set(ids) | {bad}, sorted(seen)
    for i in ids:
        assert seen[i] == {"id": i, "state": "done", "kind": "prime", "group": "g"}, seen[i]
    assert seen[bad]["state"] == "failed" and seen[bad]["group"] == "", seen[bad]
    assert seen[bad]["failure"]["code"] == "timeout", seen[bad]
    assert stats(n2)["cluster_ran"] == 21 and stats(n3)["cluster_ran"] == 0
    # Each event once: nothing more comes for them.
    while sub.poll(500):
        _, body = sub.recv_multipart()
        assert msgpack.unpackb(body)["id"] not in seen


def test_mirrors_are_answered_without_subscribers_and_subscribers_come_and_go(tmp_path,
                                                                               pg_database):
    """A node reads other nodes' finished rows only for the jobs it waits on, unless its events
    have subscribers (then all: every node publishes every finish). Node 3 has no subscriber:
    its client's wait on jobs that node 1 took and node 2 runs is still answered. Then a
    subscriber comes, goes, and another comes: each gets the events of finishes elsewhere."""
    uri, _ = pg_database
    n1 = node(tmp_path, uri, 1, "--processes", "0")
    n2 = node(tmp_path, uri, 2)
    n3 = node(tmp_path, uri, 3, "--processes", "0")
    slow = {"kind": "prime", "args": {"n": 2305843009213693951}, "timeout": 1}
    ids = n1.c.rq("submit", jobs=[slow] * 2)["ids"]
    r = n3.c.rq("wait", ids=ids, mode="all", timeout=60, reply_timeout=70)
    assert sorted(r["done"]) == sorted(ids), r
    assert n3.c.rq("status", ids=ids)["states"] == ["failed"] * 2
    for _ in range(2):
        sub = n3.subscriber("done/", "failed/")
        more = n1.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": 1000003}}] * 5)["ids"]
        assert set(finish_events(sub, set(more))) == set(more)
        sub.close()
    assert stats(n2)["cluster_ran"] == 12 and stats(n3)["cluster_ran"] == 0


def test_expired_rows_are_deleted_once(tmp_path, pg_server, pg_database):
    uri, name = pg_database
    # --retain 2: node 1's rows stay 2 s; node 1 is killed before, so the others delete them
    # (retain + lease after their finish), each row by one node.
    n1, n2, n3 = three(tmp_path, uri, "--retain", "2")
    ids = n1.c.rq("submit", jobs=[{"kind": "noop"}] * 300)["ids"]
    assert len(n1.c.rq("wait", ids=ids, mode="all", timeout=30)["done"]) == 300
    n1.stop(signal.SIGKILL)
    lit = "{" + ",".join(map(str, ids)) + "}"
    left = int(pg_server.psql(f"SELECT count(*) FROM futured_jobs WHERE id = ANY('{lit}')",
                              name, name)[0][0])
    assert left > 0  # killed within its retention
    wait_for(lambda: pg_server.psql(f"SELECT count(*) FROM futured_jobs WHERE id = ANY('{lit}')",
                                    name, name) == [["0"]], 30, "the rows to expire")
    expired = [stats(n)["cluster_expired"] for n in (n2, n3)]
    assert sum(expired) == left, (expired, left)


GONE = "expired"


def test_a_release_on_one_node_is_seen_on_every_node(tmp_path, pg_server, pg_database):
    uri, name = pg_database
    n1, n2, n3 = three(tmp_path, uri)
    ids = n1.c.rq("submit", jobs=[{"kind": "noop"}] * 10)["ids"]
    assert len(n1.c.rq("wait", ids=ids, mode="all", timeout=30)["done"]) == 10
    for n in (n1, n2, n3):  # every node holds a copy now
        assert n.c.rq("status", ids=ids)["states"] == ["done"] * 10
    assert n2.c.rq("release", ids=ids)["released"] == [True] * 10
    lit = "{" + ",".join(map(str, ids)) + "}"
    assert pg_server.psql(f"SELECT count(*) FROM futured_jobs WHERE id = ANY('{lit}')",
                          name, name) == [["0"]]
    for n in (n1, n3):
        wait_for(lambda: n.c.rq("status", ids=ids)["states"] == [GONE] * 10, 10,
                 "the release to reach every node")


def test_list_answers_for_the_whole_cluster(tmp_path, pg_database):
    uri, _ = pg_database
    n1, n2, n3 = three(tmp_path, uri)
    a = n1.c.rq("submit", jobs=[{"kind": "noop", "group": "a"}] * 5)["ids"]
    b = n2.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 60}, "priority": 3}])["ids"]
    c = n2.c.rq("submit", jobs=[{"kind": "noop"}] * 3)["ids"]
    assert len(n1.c.rq("wait", ids=a, mode="all", timeout=30)["done"]) == 5
    assert len(n2.c.rq("wait", ids=c, mode="all", timeout=30)["done"]) == 3
    wait_for(lambda: n2.c.rq("status", ids=b)["states"] == ["running"], 30, "b to run")
    # Node 3 never heard of them: its list reads the database.
    r = n3.c.rq("list")
    got = {f["id"]: f for f in r["futures"]}
    assert r["more"] is False and sorted(got) == sorted(a + b + c), r
    assert [f["id"] for f in r["futures"]] == sorted(got)
    for i in a:
        assert got[i] == {"id": i, "attempts": 1, "kind": "noop", "state": "done", "group": "a",
                          "priority": 0}, got[i]
    assert got[b[0]]["state"] == "running" and got[b[0]]["priority"] == 3, got[b[0]]
    assert n3.c.rq("list", state="running")["futures"] == [got[b[0]]]
    # The cursor and the limit, as on one node.
    ordered = sorted(got)
    r = n3.c.rq("list", state="done", limit=4)
    assert [f["id"] for f in r["futures"]] == [i for i in ordered if i != b[0]][:4]
    assert r["more"] is True
    r = n3.c.rq("list", state="done", after=r["futures"][-1]["id"], limit=4)
    assert [f["id"] for f in r["futures"]] == [i for i in ordered if i != b[0]][4:]
    assert r["more"] is False
    assert n3.c.rq("cancel", ids=b)["cancelled"] == [True]


def test_a_release_during_an_outage_is_announced_once_it_is_back(tmp_path, pg_server,
                                                                  pg_database):
    """A release on node 2 while PostgreSQL is down: its notification waits for the cluster
    connection to come back, then nodes 1 and 3 drop their copies (not at their retention)."""
    uri, name = pg_database
    n1, n2, n3 = three(tmp_path, uri)
    ids = n1.c.rq("submit", jobs=[{"kind": "noop"}] * 10)["ids"]
    assert len(n1.c.rq("wait", ids=ids, mode="all", timeout=30)["done"]) == 10
    for n in (n1, n2, n3):
        assert n.c.rq("status", ids=ids)["states"] == ["done"] * 10
    pg_server.stop()
    try:
        assert n2.c.rq("release", ids=ids, reply_timeout=30)["released"] == [True] * 10
        # Its cluster thread tried to announce it and failed (the connection is down).
        wait_for(lambda: stats(n2)["cluster_connected"] == 0, 20, "node 2 to see the outage")
    finally:
        pg_server.start()
    lit = "{" + ",".join(map(str, ids)) + "}"
    wait_for(lambda: pg_server.psql(f"SELECT count(*) FROM futured_jobs WHERE id = ANY('{lit}')",
                                    name, name) == [["0"]], 30, "the rows to be deleted")
    for n in (n1, n3):
        wait_for(lambda: n.c.rq("status", ids=ids)["states"] == [GONE] * 10, 30,
                 "the release to reach every node")


def test_a_job_another_node_runs_shows_running_everywhere(tmp_path, pg_database):
    """status, result and results on the node that received a job and on the nodes that mirror
    it show it running while another node runs it, also when it starts during a wait."""
    uri, _ = pg_database
    nodes = three(tmp_path, uri, "--threads", "1", "--prefetch", "0")
    n1 = nodes[0]
    long = {"kind": "sleep", "args": {"seconds": 60}}
    [s] = n1.c.rq("submit", jobs=[long])["ids"]  # node 1's only thread
    wait_for(lambda: n1.c.rq("status", ids=[s])["states"] == ["running"], 20, "s to run")
    # Open to any node: a and b run on nodes 2 and 3, c waits for a thread.
    a, b, c = n1.c.rq("submit", jobs=[long] * 3)["ids"]
    wait_for(lambda: n1.c.rq("status", ids=[a, b])["states"] == ["running"] * 2, 20,
             "node 1 to see a and b run elsewhere")
    for n in nodes:
        assert n.c.rq("status", ids=[s, a, b, c])["states"] == ["running"] * 3 + ["pending"]
        r = n.c.rq("results", ids=[a, c], timeout=0.1)
        assert [x["state"] for x in r["results"]] == ["running", "pending"], r
    # A result with a timeout on every node while a's node starts c: at its timeout, c is
    # running.
    waiters = [n.client() for n in nodes]
    for w in waiters:
        w.send(op="result", future=c, timeout=5)
    assert nodes[2].c.rq("cancel", ids=[a])["cancelled"] == [True]
    for w in waiters:
        r = w.recv(30)
        assert not r["ok"] and r["error"]["message"].endswith("is still running"), r
    for n in nodes:
        assert n.c.rq("status", ids=[a, c])["states"] == ["cancelled", "running"]
    assert nodes[1].c.rq("cancel", ids=[s, b, c])["cancelled"] == [True] * 3


def test_finishes_during_a_nodes_outage_are_published_after(tmp_path, pg_server, pg_database):
    """Node 3's connections are cut (its role refused) while node 2 finishes jobs node 1
    received: node 3 missed their notifications, and once it is back its subscribers get their
    `done` events all the same (at least once)."""
    uri, name = pg_database
    # Node 3 logs in as a role of its own, a member of the database's owner.
    pg_server.psql(f"CREATE ROLE {name}_n3 LOGIN IN ROLE {name}")
    n1 = node(tmp_path, uri, 1, "--processes", "0")
    n2 = node(tmp_path, uri, 2)
    n3 = node(tmp_path, uri.replace(f"user={name}", f"user={name}_n3"), 3, "--processes", "0")
    sub = n3.subscriber("done/")
    pg_server.psql(f"ALTER ROLE {name}_n3 CONNECTION LIMIT 0")
    pg_server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   f"WHERE usename = '{name}_n3'")
    try:
        wait_for(lambda: stats(n3)["cluster_connected"] == 0, 20, "node 3 to be cut off")
        ids = n1.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": 1000003}}] * 20)["ids"]
        assert n1.c.rq("wait", ids=ids, mode="all", timeout=60)["not_done"] == []
        assert not sub.poll(200)  # node 3 heard nothing of them
    finally:
        pg_server.psql(f"ALTER ROLE {name}_n3 CONNECTION LIMIT -1")
    seen = finish_events(sub, set(ids))
    assert set(seen) == set(ids) and stats(n3)["cluster_connected"] == 1
    assert all(seen[i] == {"id": i, "state": "done", "kind": "prime", "group": ""} for i in ids)


def test_an_idempotency_key_is_unique_across_the_cluster(tmp_path, pg_server, pg_database):
    """The same key through several nodes makes one job, one after the other and at once; the
    other submits are answered with its ID (reply "ids" and "results"), and their own provisional
    jobs never run."""
    uri, name = pg_database
    nodes = three(tmp_path, uri)
    [a] = nodes[0].c.rq("submit", jobs=[{"kind": "noop", "idempotency_key": "k"}])["ids"]
    assert nodes[0].c.rq("wait", ids=[a], timeout=20)["not_done"] == []
    # One after the other: node 2 never held it, node 3 knows nothing of it.
    assert nodes[1].c.rq("submit", jobs=[{"kind": "noop", "idempotency_key": "k"},
                                         {"kind": "noop"}])["ids"][0] == a
    r = nodes[2].c.rq("submit", jobs=[{"kind": "noop", "idempotency_key": "k"}],
                      reply="results", reply_timeout=30)
    assert r["ids"] == [a] and [(x["id"], x["state"]) for x in r["results"]] == [(a, "done")], r
    # At once: the same 50 keys through the three nodes, each submit in flight together.
    jobs = [{"kind": "sleep", "args": {"seconds": 0.01}, "idempotency_key": f"c{i}"}
            for i in range(50)]
    clients = [n.client() for n in nodes]
    for c in clients:
        c.send(op="submit", jobs=jobs)
    replies = [c.recv(30) for c in clients]
    assert all(r["ok"] for r in replies), replies
    ids = replies[0]["ids"]
    assert len(set(ids)) == 50 and all(r["ids"] == ids for r in replies), replies
    assert nodes[2].c.rq("wait", ids=ids, mode="all", timeout=30)["not_done"] == []
    rows = pg_server.psql("SELECT count(*), count(DISTINCT idempotency_key) FROM futured_jobs "
                          "WHERE idempotency_key LIKE 'c%'", name, name)
    assert rows == [["50", "50"]], rows
    # Only those 50, the first one and node 2's job without a key ran.
    wait_for(lambda: sum(stats(n)["cluster_ran"] for n in nodes) == 52, 10, "the runs")
    time.sleep(0.5)
    assert sum(stats(n)["cluster_ran"] for n in nodes) == 52
    assert sum(stats(n)["submitted"] for n in nodes) == 52
    # The same keys in opposite orders through two nodes at once, round after round: the rows
    # go in by key, so neither batch waits for the other in a circle (a deadlock would fail a
    # whole batch).
    for k in range(10):
        keyed = [{"kind": "noop", "idempotency_key": f"o{k}-{i:04}"} for i in range(2000)]
        clients[0].send(op="submit", jobs=keyed)
        clients[1].send(op="submit", jobs=keyed[::-1])
        r0, r1 = clients[0].recv(30), clients[1].recv(30)
        assert r0["ok"] and r1["ok"], (r0, r1)
        assert r0["ids"] == r1["ids"][::-1], (r0, r1)
