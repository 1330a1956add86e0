"""futured.aio against a real futured (no pytest-asyncio: each test runs its own loop)."""
import asyncio

import pytest

import futured
from conftest import load_primes
from futured import kinds


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_submit_result_and_as_completed(daemon):
    async def main():
        async with futured.aio.Client(daemon.endpoint) as c:
            ids = [await c.submit(kinds.sleep, s) for s in (0.4, 0.05, 0.2)]
            order = []
            async for fut in c.as_completed(ids, timeout=10):
                assert isinstance(fut, asyncio.Future) and fut.done()
                order.append((fut.id, fut.result()["seconds"]))
            assert order == [(ids[1], 0.05), (ids[2], 0.2), (ids[0], 0.4)]
            assert await c.result(ids[0]) == {"seconds": 0.4}
            rows = load_primes()
            pids = await c.submit_many([kinds.prime.job(n) for n, _ in rows])
            got = await asyncio.gather(*(c.result(i, timeout=60) for i in pids))
            assert [(r["n"], r["is_prime"]) for r in got] == rows

    run(main())


def test_futures_failures_cancel_and_timeouts(daemon):
    async def main():
        c = await futured.aio.Client.connect(daemon.endpoint)
        try:
            failing = await c.submit(kinds.sleep.job(5).with_options(timeout=0.1))
            long_ = await c.submit(kinds.sleep, 30)
            with pytest.raises(futured.JobFailed) as e:
                await c.future(failing)
            assert e.value.code == "timeout"
            with pytest.raises(TimeoutError):
                await c.result(long_, timeout=0.1)
            assert await c.cancel([long_]) == [True]
            seen = {}
            async for fut in c.as_completed([failing, long_]):
                seen[fut.id] = fut
            assert seen[long_].cancelled()
            assert isinstance(seen[failing].exception(), futured.JobFailed)
            never = await c.submit(kinds.sleep, 30)
            with pytest.raises(asyncio.TimeoutError):
                async for _ in c.as_completed([never], timeout=0.3):
                    pass
            await c.cancel([never])
            with pytest.raises(futured.BadArgs):
                await c.submit(kinds.prime, -1)
        finally:
            await c.close()

    run(main())
