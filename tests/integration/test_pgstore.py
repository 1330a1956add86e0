"""The PostgreSQL store on its own (the durability tests it shares with SQLite are in
test_durability.py): what it refuses, and a database that goes away and comes back. A real
PostgreSQL server is started for the session (pgserver.py)."""
import signal
import subprocess

from conftest import FUTURED, Daemon, wait_for
from test_durability import RUNNING, stop_every_daemon  # noqa: F401 (an autouse fixture)


def start(tmp_path, uri, *args):
    d = Daemon(tmp_path, "--threads", "2", "--processes", "1", "--store", uri, *args)
    RUNNING.append(d)
    return d


def refused(tmp_path, uri):
    p = subprocess.run([str(FUTURED), "--listen", f"ipc://{tmp_path}/x.sock",
                        "--events", f"ipc://{tmp_path}/xe.sock", "--store", uri],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def test_a_uri_with_a_password_is_refused(tmp_path, pg_database):
    uri, name = pg_database
    secret = uri.replace(f"user={name}", f"user={name}&password=hunter2")
    code, err = refused(tmp_path, secret)
    assert code == 2, err
    assert "carries a password" in err and "PGPASSFILE" in err, err
    code, err = refused(tmp_path, uri.replace("postgresql:///", f"postgresql://{name}:pw@/"))
    assert code == 2 and "carries a password" in err, err


def test_a_database_of_a_newer_futured_is_refused_and_left_untouched(tmp_path, pg_server,
                                                                      pg_database):
    uri, name = pg_database
    d = start(tmp_path, uri)
    d.c.rq("submit", jobs=[{"kind": "noop"}])
    d.stop()
    pg_server.psql("UPDATE futured_version SET version = 99", name, name)
    before = pg_server.psql("SELECT id, state FROM futured_jobs ORDER BY id", name, name)
    code, err = refused(tmp_path, uri)
    assert code == 2 and "newer futured" in err, err
    assert pg_server.psql("SELECT version FROM futured_version", name, name) == [["99"]]
    assert pg_server.psql("SELECT id, state FROM futured_jobs ORDER BY id", name, name) == before


def test_a_foreign_table_is_refused(tmp_path, pg_server, pg_database):
    uri, name = pg_database
    pg_server.psql("CREATE TABLE futured_jobs (recipe text)", name, name)
    code, err = refused(tmp_path, uri)
    assert code == 2 and "not futured's" in err, err
    assert pg_server.psql("SELECT to_regclass('futured_version') IS NULL", name, name) == [["t"]]


def test_a_database_in_use_is_refused(tmp_path, pg_database):
    uri, _ = pg_database
    d = start(tmp_path, uri)
    code, err = refused(tmp_path, uri)
    assert code == 2 and "another futured uses it" in err, err
    assert d.c.rq("hello")["store"] == "postgresql"


def test_an_unreachable_server_is_not_a_configuration_error(tmp_path):
    """No server behind the socket: exit 1 (a service manager restarts futured), not 2."""
    code, err = refused(tmp_path, f"postgresql:///x?host={tmp_path}&user=x")
    assert code == 1, err
    assert "cannot use the store" in err, err


def test_a_batch_is_committed_once_even_at_the_stop(tmp_path, pg_server, pg_database):
    """The store thread commits each batch once: the last one before a stop was committed a
    second time as the thread stopped (a finish written twice; in cluster mode refused as
    fenced). A trigger of the database counts every change of a row already finished."""
    uri, name = pg_database
    d = start(tmp_path, uri)
    d.c.rq("submit", jobs=[{"kind": "noop"}])
    pg_server.psql("CREATE TABLE rewrites (id bigint); "
                   "CREATE FUNCTION rewrite() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$BEGIN INSERT INTO rewrites VALUES (OLD.id); RETURN NEW; END$$; "
                   "CREATE TRIGGER rewrite BEFORE UPDATE ON futured_jobs FOR EACH ROW "
                   "WHEN (OLD.state >= 2) EXECUTE FUNCTION rewrite()", name, name)
    for _ in range(5):
        r = d.c.rq("submit", jobs=[{"kind": "noop"}] * 20, reply="results")
        assert [j["state"] for j in r["results"]] == ["done"] * 20, r
    d.stop()
    assert pg_server.psql("SELECT count(*) FROM futured_jobs WHERE state = 2", name, name) == \
        [["101"]]
    assert pg_server.psql("SELECT count(*) FROM rewrites", name, name) == [["0"]]


def test_the_database_going_away_and_coming_back(tmp_path, pg_server, pg_database):
    """PostgreSQL stopped while jobs run: submits get `store_unavailable`, reads go on, the
    running jobs' results are written once it is back, no acknowledged job is lost, and submits
    work again without a restart."""
    uri, name = pg_database
    d = start(tmp_path, uri, "--threads", "4")
    kept = d.c.rq("submit", jobs=[{"kind": "noop"}] * 10)["ids"]
    assert d.c.rq("wait", ids=kept)["not_done"] == []
    running = d.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 1}}] * 3)["ids"]
    wait_for(lambda: d.c.rq("status", ids=running)["states"] == ["running"] * 3)
    pg_server.stop()
    try:
        outage = d.c.rq("submit", jobs=[{"kind": "noop"}] * 5, reply_timeout=30)
        assert not outage["ok"] and outage["error"]["code"] == "store_unavailable", outage
        # Batches that need a new block of IDs from the sequence fail at once too.
        for _ in range(2):
            big = d.c.rq("submit", jobs=[{"kind": "noop"}] * 10000, reply_timeout=30)
            assert big["error"]["code"] == "store_unavailable", big
        assert d.c.rq("status", ids=kept)["states"] == ["done"] * 10
        assert d.c.rq("stats")["stats"]["store_failing"] == 1
        # The running jobs finish meanwhile; their results wait for the database: clients see
        # them only once their finish is committed (docs/DURABILITY.md).
        waiter = d.client()
        waiter.send(op="wait", ids=running, timeout=60)
        wait_for(lambda: d.c.rq("stats")["stats"]["done"] == 13, 30, "the jobs to end")
        assert d.c.rq("status", ids=running)["states"] == ["running"] * 3
        assert not waiter.sock.poll(0)
    finally:
        pg_server.start()
    assert waiter.recv(timeout=60)["not_done"] == []
    wait_for(lambda: d.c.rq("submit", jobs=[{"kind": "noop"}], reply_timeout=30)["ok"],
             timeout=30, what="submits to work again")
    wait_for(lambda: pg_server.psql(
        f"SELECT count(*) FROM futured_jobs WHERE state = 2 AND id IN "
        f"({','.join(map(str, running))})", name, name) == [["3"]],
        timeout=30, what="the results written after the outage")
    assert "reconnected to the store" in d.output()
    assert d.c.rq("stats")["stats"]["store_failing"] == 0
    d.stop(signal.SIGKILL)
    d = start(tmp_path, uri)
    assert d.c.rq("status", ids=kept + running)["states"] == ["done"] * 13


def test_a_database_crash_loses_no_acknowledged_job(tmp_path, pg_server, pg_database):
    """A batch that holds only jobs no reply has acknowledged yet (a submit whose reply waits
    for the results) is committed without waiting for the WAL flush; everything a reply
    acknowledged (a submit's IDs, a result) is flushed first. PostgreSQL stopped in `immediate`
    mode (its unflushed log is lost, as in a crash) right after the replies loses none of it."""
    uri, name = pg_database
    d = start(tmp_path, uri)
    before = d.c.rq("stats")["stats"]["store_commits_unflushed"]
    done = []
    for _ in range(5):
        r = d.c.rq("submit", jobs=[{"kind": "noop"}] * 20, reply="results")
        assert [x["state"] for x in r["results"]] == ["done"] * 20, r
        done += [x["id"] for x in r["results"]]
    # Those adds did not wait for the disk; their finishes did.
    assert d.c.rq("stats")["stats"]["store_commits_unflushed"] > before
    acked = []
    for _ in range(5):
        acked += d.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 600}}] * 20)["ids"]
    pg_server.stop("immediate")
    pg_server.start()
    rows = dict(pg_server.psql("SELECT id, state FROM futured_jobs", name, name))
    assert all(rows.get(str(i)) == "2" for i in done), "a reported result was lost"
    assert all(str(i) in rows for i in acked), "an acknowledged job was lost"
    d.stop(signal.SIGKILL)
