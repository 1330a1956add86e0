"""The daemon answers hello and runs one job of each local kind; bad options are refused."""
import resource
import subprocess

import msgpack
import pytest
import zmq

from conftest import FUTURED, load_primes


def test_hello_names_versions_limits_and_kinds(daemon):
    r = daemon.c.rq("hello")
    assert r["ok"] and r["version"] == 1
    assert r["events"] == daemon.events
    assert r["limits"]["max_batch"] == 10000
    pools = {k["name"]: k["pool"] for k in r["kinds"]}
    pools.pop("wedge", None)  # the test-only kind of -Dtest-kinds=true
    assert pools == {"prime": "process", "sleep": "thread", "noop": "thread",
                     "download": "transfer"}, pools
    assert (r["threads"], r["processes"], r["transfers"]) == (4, 2, 1024), r


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads takes a number from 1 to 1024, not '0'"),
    (["--transfers", "0"], "--transfers takes a number from 1 to 65536, not '0'"),
    (["--transfers", "70000"], "--transfers takes a number from 1 to 65536, not '70000'"),
    (["--spin-us", "-5"], "--spin-us takes a number of microseconds from 0 to 1000000, not '-5'"),
    (["--processes", "x"], "--processes takes a number from 1 to 1024, not 'x'"),
    (["--grace", "-1"], "--grace takes a number of seconds, not '-1'"),
    (["--bogus"], "unrecognized option '--bogus'"),
    (["extra"], "unexpected argument 'extra'"),
])
def test_bad_options_exit_2_with_a_message(tmp_path, args, message):
    p = subprocess.run([str(FUTURED), "--listen", f"ipc://{tmp_path}/x.sock", *args],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, (args, p.stderr)
    assert message in p.stderr, p.stderr
    assert not (tmp_path / "x.sock").exists()


def test_transfers_option_is_reported(start_daemon):
    d = start_daemon("--transfers", "7")
    assert d.c.rq("hello")["transfers"] == 7
    assert d.c.rq("stats")["stats"]["transfers"] == 7


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


def test_transfers_fit_a_low_open_file_limit(tmp_path):
    """With a hard limit of 600 open files, 1024 transfers cannot fit (2 files each + 256): the
    daemon says so and runs (600 - 256) / 2 = 172 at once."""
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))

    endpoint = f"ipc://{tmp_path}/f.sock"
    log = open(tmp_path / "futured.log", "w+")
    p = subprocess.Popen([str(FUTURED), "--listen", endpoint, "--events", f"ipc://{tmp_path}/e.sock",
                          "--state-dir", str(tmp_path / "state")],
                         stderr=log, preexec_fn=low_limit)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send(msgpack.packb({"v": 1, "id": 1, "op": "hello"}))
        assert s.poll(10000), "futured did not answer hello"
        assert msgpack.unpackb(s.recv())["transfers"] == 172
    finally:
        s.close()
        ctx.term()
        p.terminate()
        assert p.wait(15) == 0
    log.seek(0)
    assert "the open-file limit is 600: running at most 172 transfers at once instead of 1024" \
        in log.read()
