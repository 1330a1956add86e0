"""futured.Executor with the standard library's own functions: as_completed, wait in its three
modes, Future.result(timeout), exception(), add_done_callback, map with a timeout, cancel of
pending and running jobs, shutdown, JobFailed, thread safety, asyncio interop."""
import asyncio
import concurrent.futures
import threading
from concurrent.futures import (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed,
                                wait)

import pytest

import futured
from conftest import load_primes, wait_for
from futured import kinds


def test_futures_are_concurrent_futures_and_as_completed_orders_by_completion(executor):
    fs = [executor.submit(kinds.sleep, 60) for _ in range(3)]
    assert all(isinstance(f, concurrent.futures.Future) for f in fs)
    it = as_completed(fs, timeout=30)
    # The order of completion is made by hand: each is cancelled on the daemon in turn, and
    # as_completed yields it before the next one is.
    order = []
    for f in (fs[1], fs[2], fs[0]):
        executor.client.cancel([f.id])
        order.append(next(it))
    assert order == [fs[1], fs[2], fs[0]]
    assert all(f.cancelled() for f in fs)
    done = executor.submit(kinds.sleep, 0.01)
    assert next(as_completed([done], timeout=30)).result() == {"seconds": 0.01}


def test_primes_through_the_executor(executor):
    rows = load_primes()
    fs = {executor.submit(kinds.prime, n): (n, p) for n, p in rows}
    for f in as_completed(fs, timeout=120):
        n, p = fs[f]
        assert (f.result()["n"], f.result()["is_prime"]) == (n, p)


def test_wait_first_completed(executor):
    short, long_ = executor.submit(kinds.sleep, 0.05), executor.submit(kinds.sleep, 5)
    done, not_done = wait([long_, short], timeout=10, return_when=FIRST_COMPLETED)
    assert (done, not_done) == ({short}, {long_})
    assert long_.cancel()


def test_wait_first_exception(executor):
    long_ = executor.submit(kinds.sleep, 5)
    ok = executor.submit(kinds.sleep, 0.01)
    failing = executor.submit(kinds.sleep.job(5).with_options(timeout=0.2))
    done, not_done = wait([long_, ok, failing], timeout=10, return_when=FIRST_EXCEPTION)
    assert failing in done and long_ in not_done
    assert isinstance(failing.exception(), futured.JobFailed)
    assert long_.cancel()


def test_wait_all_completed(executor):
    fs = [executor.submit(kinds.sleep, s) for s in (0.05, 0.1, 0.15)]
    done, not_done = wait(fs, timeout=10, return_when=ALL_COMPLETED)
    assert (done, not_done) == (set(fs), set())
    done, not_done = wait(fs + [executor.submit(kinds.sleep, 5)], timeout=0.2)
    assert len(done) == 3 and len(not_done) == 1
    not_done.pop().cancel()


def test_result_timeout_raises_timeout_error(executor):
    f = executor.submit(kinds.sleep, 3)
    with pytest.raises(TimeoutError):
        f.result(timeout=0.2)
    assert not f.done()
    assert f.cancel()


def test_exception_is_job_failed_with_its_code(executor, start_testhttp):
    f = executor.submit(kinds.sleep.job(10).with_options(timeout=0.1))
    exc = f.exception(timeout=10)
    assert isinstance(exc, futured.JobFailed) and isinstance(exc, futured.FuturedError)
    assert exc.code == "timeout" and exc.future_id == f.id
    with pytest.raises(futured.JobFailed):
        f.result()
    server = start_testhttp()
    f = executor.submit(kinds.download, server.url + "/misbehave/status?code=418")
    exc = f.exception(timeout=10)
    assert (exc.code, exc.http_status) == ("http_error", 418)
    assert "418" in exc.message
    assert executor.submit(kinds.sleep, 0.01).exception(timeout=10) is None


def test_a_rejected_job_fails_alone(executor):
    fs = [executor.submit(kinds.noop) for _ in range(3)]
    bad = executor.submit(kinds.prime, -1)
    fs += [executor.submit(kinds.noop) for _ in range(3)]
    assert isinstance(bad.exception(timeout=10), futured.BadArgs)
    assert bad.exception().code == "bad_args" and bad.id is None
    assert [f.result(timeout=10) for f in fs] == [{}] * 6
    with pytest.raises(futured.UnknownKind):
        executor.submit("no_such_kind")
    with pytest.raises(TypeError):
        executor.submit(kinds.sleep, 1, 2)


def test_add_done_callback(executor):
    seen = []
    called = threading.Event()

    def cb(f):
        seen.append((f, f.result()))
        called.set()

    f = executor.submit(kinds.sleep, 0.1)
    f.add_done_callback(cb)
    assert called.wait(10)
    assert seen == [(f, {"seconds": 0.1})]
    late = []
    f.add_done_callback(late.append)  # on a finished future: at once, in this thread
    assert late == [f]


def test_map_in_order_with_chunks(executor):
    rows = load_primes()
    got = list(executor.map(kinds.prime, [n for n, _ in rows], timeout=120, chunksize=3))
    assert [(r["n"], r["is_prime"]) for r in got] == rows
    got = list(executor.map(lambda _: kinds.noop.job(), range(2500)))
    assert got == [{}] * 2500
    assert list(executor.map(kinds.sleep, [])) == []


def test_map_timeout_raises_and_cancels_the_rest(executor):
    before = executor.client.stats()["cancelled"]
    it = executor.map(kinds.sleep, [0.05, 5, 5], timeout=0.5, chunksize=1)
    assert next(it) == {"seconds": 0.05}
    with pytest.raises(TimeoutError):
        next(it)
    wait_for(lambda: executor.client.stats()["cancelled"] == before + 2,
             what="the two unfinished map jobs to be cancelled")


def test_map_raises_job_failed_at_its_place(executor):
    it = executor.map(lambda s: kinds.sleep.job(s).with_options(timeout=0.3), [0.01, 5, 0.01])
    assert next(it) == {"seconds": 0.01}
    with pytest.raises(futured.JobFailed) as e:
        next(it)
    assert e.value.code == "timeout"


def test_cancel_a_pending_job(start_daemon):
    d = start_daemon("--threads", "1", "--prefetch", "0")
    with futured.Executor(d.endpoint) as ex:
        running = ex.submit(kinds.sleep, 3)
        pending = ex.submit(kinds.sleep, 3)
        wait_for(lambda: ex.client.status([running.id, pending.id]) == ["running", "pending"],
                 what="one running, one pending")
        assert pending.cancel() is True
        assert pending.cancelled() and pending.done()
        assert ex.client.status([pending.id]) == ["cancelled"]
        with pytest.raises(concurrent.futures.CancelledError):
            pending.result()
        assert running.cancel()


def test_cancel_a_running_job_unlike_the_standard_library(executor):
    f = executor.submit(kinds.sleep, 30)
    wait_for(lambda: executor.client.status([f.id]) == ["running"], what="the sleep to run")
    assert f.cancel() is True
    assert f.cancelled()
    assert executor.client.status([f.id]) == ["cancelled"]
    done, _ = wait([f], timeout=1)
    assert done == {f}
    assert f.cancel() is True  # again: still cancelled
    g = executor.submit(kinds.noop)
    g.result(10)
    assert g.cancel() is False


def test_cancel_a_running_process_job(executor):
    f = executor.submit(kinds.prime, 9999999999999917)  # seconds of trial division
    wait_for(lambda: executor.client.status([f.id]) == ["running"], what="the prime to run")
    assert f.cancel()
    assert executor.client.status([f.id]) == ["cancelled"]


def test_shutdown_cancel_futures(start_daemon):
    d = start_daemon("--threads", "1", "--prefetch", "0")
    ex = futured.Executor(d.endpoint)
    first = ex.submit(kinds.sleep, 0.5)
    wait_for(lambda: ex.client.status([first.id]) == ["running"], what="the first sleep to run")
    rest = [ex.submit(kinds.sleep, 2) for _ in range(5)]
    ids = [f.id for f in rest]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result() == {"seconds": 0.5}  # running: it went on, as in the standard library
    assert all(f.cancelled() for f in rest)
    with futured.Client(d.endpoint) as c:
        assert c.status(ids) == ["cancelled"] * 5
    with pytest.raises(RuntimeError):
        ex.submit(kinds.noop)


def test_shutdown_waits_and_with_block(executor):
    with futured.Executor(executor.client.endpoint) as ex:
        fs = [ex.submit(kinds.sleep, 0.2) for _ in range(3)]
    assert all(f.done() and f.result() == {"seconds": 0.2} for f in fs)
    assert not ex._thread.is_alive()
    ex2 = futured.Executor(executor.client.endpoint)
    f = ex2.submit(kinds.sleep, 0.3)
    ex2.shutdown(wait=False)
    assert f.result(10) == {"seconds": 0.3}
    ex2._thread.join(10)
    assert not ex2._thread.is_alive()


def test_threads_submitting_through_one_executor(executor):
    results = {}
    errors = []

    def work(t):
        try:
            fs = {executor.submit(kinds.prime, 1000 * t + i): 1000 * t + i for i in range(200)}
            for f in as_completed(fs, timeout=60):
                results[fs[f]] = f.result()["n"]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 1600 and all(k == v for k, v in results.items())


def test_lost_events_are_reconciled(executor):
    executor._read_events = lambda: False  # every event is lost from now on
    fs = [executor.submit(kinds.sleep, 0.05) for _ in range(3)]
    done, not_done = wait(fs, timeout=10)
    assert not not_done, "status reconciliation did not finish the futures"
    assert [f.result() for f in fs] == [{"seconds": 0.05}] * 3


def test_asyncio_wrap_future_and_run_in_executor(executor):
    async def main():
        loop = asyncio.get_running_loop()
        a = await asyncio.wrap_future(executor.submit(kinds.prime, 91))
        b = await loop.run_in_executor(executor, kinds.prime, 97)
        return a["smallest_factor"], b["is_prime"]

    assert asyncio.run(main()) == (7, True)


def test_repr_names_the_daemon_id(executor):
    f = executor.submit(kinds.noop)
    f.result(10)
    assert repr(f).startswith("<Future at 0x") and f"id={f.id}>" in repr(f)
