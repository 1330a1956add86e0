"""The daemon answers hello and runs one job of each local kind."""
from conftest import load_primes


def test_hello_names_versions_limits_and_kinds(daemon):
    r = daemon.c.rq("hello")
    assert r["ok"] and r["version"] == 1
    assert r["events"] == daemon.events
    assert r["limits"]["max_batch"] == 10000
    assert {k["name"] for k in r["kinds"]} >= {"prime", "sleep", "noop", "download"}


def test_prime_batch_agrees_with_primes_tsv(daemon):
    rows = load_primes()
    assert len(rows) == 20
    r = daemon.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": n}} for n, _ in rows])
    assert r["ok"], r
    for (n, is_prime), fid in zip(rows, r["ids"]):
        res = daemon.c.rq("result", future=fid, timeout=60.0, reply_timeout=65.0)
        assert res["state"] == "done", res
        assert res["result"]["n"] == n
        assert res["result"]["is_prime"] is is_prime


def test_max_tasks_per_worker_recycles_workers(start_daemon):
    d = start_daemon("--processes", "1", "--max-tasks-per-worker", "2")
    for n in (97, 98, 99, 100, 101):
        fid = d.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": n}}])["ids"][0]
        res = d.c.rq("result", future=fid, timeout=30.0, reply_timeout=35.0)
        assert res["state"] == "done" and res["result"]["n"] == n
    stats = d.c.rq("stats")["stats"]
    # 5 jobs at 2 per worker: the first worker and at least two replacements, none died.
    assert stats["workers_started"] >= 3, stats
    assert stats["workers_died"] == 0 and stats["done"] == 5
