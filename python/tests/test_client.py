"""futured.Client against a real futured: every operation, the endpoint rules, the error classes,
thread safety."""
import concurrent.futures
import os
import threading

import msgpack
import pytest

import futured
from conftest import load_primes, wait_for


def test_default_endpoint_follows_futurectls_rule(monkeypatch):
    monkeypatch.delenv("FUTURED_ENDPOINT", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    want = ("ipc:///run/futured/futured.sock" if os.geteuid() == 0
            else "ipc:///run/user/1000/futured/futured.sock")
    assert futured.default_endpoint() == want
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/dir")
    assert futured.default_endpoint() == "ipc:///run/futured/futured.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert futured.default_endpoint() == "ipc:///run/futured/futured.sock"
    monkeypatch.setenv("FUTURED_ENDPOINT", "")
    assert futured.default_endpoint() == "ipc:///run/futured/futured.sock"
    monkeypatch.setenv("FUTURED_ENDPOINT", "tcp://127.0.0.1:5555")
    assert futured.default_endpoint() == "tcp://127.0.0.1:5555"


def test_futured_endpoint_is_used_by_client_executor_and_kind_stubs(daemon, monkeypatch):
    monkeypatch.setenv("FUTURED_ENDPOINT", daemon.endpoint)
    with futured.Client() as c:
        assert c.endpoint == daemon.endpoint
        assert c.server.startswith("futured ")
    with futured.Executor() as ex:
        assert ex.submit(futured.kinds.prime, 91).result(10)["smallest_factor"] == 7
    assert futured.kinds.prime(97)["is_prime"] is True


def test_missing_socket_is_unreachable(tmp_path):
    with pytest.raises(futured.Unreachable) as e:
        futured.Client(f"ipc://{tmp_path}/nothing.sock")
    assert isinstance(e.value, ConnectionError) and e.value.code == "unreachable"


def test_hello_kinds_and_positional_arguments(client):
    assert client.info["version"] == 1
    assert [p["name"] for p in client.kinds["prime"]["params"]][:1] == ["n"]
    fid = client.submit(futured.kinds.prime, 91)
    assert client.result(fid, timeout=10) == {**client.result(fid), "n": 91, "is_prime": False,
                                              "smallest_factor": 7}
    fid = client.submit("prime", n=97, method="miller-rabin")
    assert client.result(fid, timeout=10)["is_prime"] is True
    with pytest.raises(TypeError):
        client.submit(futured.kinds.prime, 7, "trial", "extra")
    with pytest.raises(TypeError):
        client.submit(futured.kinds.prime, 7, n=7)
    with pytest.raises(futured.UnknownKind) as e:
        client.submit(futured.kinds.no_such_kind)
    assert e.value.code == "unknown_kind"


def test_every_operation(client):
    rows = load_primes()
    ids = client.submit_many(futured.kinds.prime.job(n) for n, _ in rows)
    assert len(ids) == len(rows) and ids == sorted(ids)
    done, not_done = client.wait(ids, "ALL_COMPLETED", timeout=60)
    assert (sorted(done), not_done) == (sorted(ids), [])
    assert client.status(ids) == ["done"] * len(ids)
    outs = client.results(ids, timeout=0)
    assert [(o["result"]["n"], o["result"]["is_prime"]) for o in outs] == rows
    page, more = client.list(state="done", limit=5)
    assert [f["id"] for f in page] == ids[:5] and more
    assert [f["id"] for f in client.iter_futures("done")] == ids
    assert client.stats()["done"] == len(ids)
    assert client.release(ids[:2]) == [True, True]
    assert client.status(ids[:3]) == ["expired", "expired", "done"]
    with pytest.raises(futured.Expired):
        client.result(ids[0], timeout=0)
    with pytest.raises(futured.UnknownFuture):
        client.result(10**9, timeout=0)
    ids2, outs2 = client.run_many([futured.Job("sleep", (0.01,)), futured.Job("noop")])
    assert [o["state"] for o in outs2] == ["done", "done"] and outs2[0]["result"] == {"seconds": 0.01}
    assert client.run(futured.kinds.sleep, 0.01) == {"seconds": 0.01}
    client.probe("hello-probe")


def test_result_timeout_is_not_done_and_a_timeout_error(client):
    fid = client.submit(futured.kinds.sleep, 5)
    with pytest.raises(TimeoutError) as e:
        client.result(fid, timeout=0.1)
    assert isinstance(e.value, futured.NotDone) and e.value.code == "not_done"
    assert client.cancel([fid]) == [True]
    with pytest.raises(concurrent.futures.CancelledError):
        client.result(fid)


def test_wait_modes(client):
    short = client.submit(futured.kinds.sleep, 0.05)
    long_ = client.submit(futured.kinds.sleep, 5)
    failing = client.submit(futured.Job("sleep", (5,), timeout=0.2))
    done, not_done = client.wait([long_, short], "first_completed", timeout=10)
    assert (done, not_done) == ([short], [long_])
    done, not_done = client.wait([long_, failing], "first_exception", timeout=10)
    assert (done, not_done) == ([failing], [long_])
    with pytest.raises(futured.JobFailed) as e:
        client.result(failing)
    assert e.value.code == "timeout" and e.value.future_id == failing
    assert client.cancel([long_, short]) == [True, False]
    assert client.wait([long_, short], "all", timeout=5) == ([long_, short], [])


def test_error_replies_are_named_after_their_codes(client):
    with pytest.raises(futured.UnknownOp) as e:
        client.call("frobnicate")
    assert e.value.code == "unknown_op"
    with pytest.raises(futured.UnknownField) as e:
        client.call("stats", {"colour": "blue"})
    assert e.value.code == "unknown_field" and e.value.field == "colour"
    with pytest.raises(futured.BadArgs) as e:
        client.submit_many([futured.Job("noop"), futured.Job("prime", (-1,))])
    assert (e.value.code, e.value.index, e.value.field) == ("bad_args", 1, "n")
    with pytest.raises(futured.BadRequest) as e:
        client.call("status", {"ids": "not a list"})
    assert e.value.code == "bad_request"
    with pytest.raises(futured.TooMany) as e:
        client.status(list(range(1, client.limits["max_ids"] + 2)))
    assert e.value.code == "too_many"
    with pytest.raises(futured.BadUrl) as e:
        client.submit(futured.kinds.download, "ftp://example.org/x")
    assert e.value.code == "bad_url"
    c = client._conn()
    c.sock.send(b"\xc1")  # never valid msgpack
    reply = msgpack.unpackb(c.sock.recv())
    with pytest.raises(futured.BadMessage):
        raise futured._errors.error_from_reply(reply["error"])
    for code, cls in [("queue_full", futured.QueueFull), ("too_many_deferred",
                      futured.TooManyDeferred), ("out_of_memory", futured.OutOfMemory),
                      ("shutting_down", futured.ShuttingDown),
                      ("quota_exceeded", futured.QuotaExceeded),
                      ("new_code", futured.FuturedError)]:
        err = futured._errors.error_from_reply({"code": code, "message": "m"})
        assert type(err) is cls and err.code == code and isinstance(err, futured.FuturedError)


def test_shutting_down(daemon):
    with futured.Client(daemon.endpoint) as c:
        running = c.submit(futured.kinds.sleep, 0.5)
        wait_for(lambda: c.status([running]) == ["running"], what="the sleep to run")
        daemon.proc.send_signal(15)
        with pytest.raises(futured.ShuttingDown) as e:
            wait_for(lambda: c.submit(futured.kinds.noop) and False, timeout=5,
                     what="shutting_down")
        assert e.value.code == "shutting_down"
        assert c.result(running, timeout=5) == {"seconds": 0.5}


def test_one_client_many_threads(client):
    errors = []

    def work(t):
        try:
            for i in range(50):
                n = 1000 * t + i
                fid = client.submit(futured.kinds.prime, n)
                assert client.result(fid, timeout=30)["n"] == n
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.stats()["submitted"] == 400
