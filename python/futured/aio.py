"""futured.aio: an asyncio client of futured (zmq.asyncio).

    async with futured.aio.Client() as c:
        ids = [await c.submit(futured.kinds.prime, n) for n in numbers]
        async for fut in c.as_completed(ids):
            print(fut.id, fut.result())
        print(await c.result(ids[0]))

One DEALER socket per Client, used from one event loop; any number of coroutines may have
requests in flight at once (a reader task matches replies to requests by id). `future(id)`
gives an asyncio.Future for a future ID, and the futures of futured.Executor, being
concurrent.futures.Future objects, work with asyncio.wrap_future() and loop.run_in_executor().
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Tuple

import zmq
import zmq.asyncio

from ._errors import Unreachable, error_from_reply, outcome_exception
from ._job import Job, JobSpec, as_job
from ._keys import load_keys, secure
from .client import PROTOCOL_VERSION, WAIT_MODES, default_endpoint, pack, unpack

__all__ = ["Client", "Future"]


class Future(asyncio.Future):  # type: ignore[type-arg]
    """An asyncio.Future for one daemon future; `id` is its future ID."""

    id: int

    def __init__(self, fid: int, *, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        super().__init__(loop=loop)
        self.id = fid


class Client:
    """An asyncio connection to futured at `endpoint` (default: futured.default_endpoint()).
    `await Client.connect(...)` or `async with Client(...)` says hello (kept in `info`)."""

    def __init__(self, endpoint: Optional[str] = None, *,
                 reply_timeout: Optional[float] = 30.0, server_key: Optional[str] = None,
                 client_key: Optional[str] = None) -> None:
        self.endpoint = endpoint or default_endpoint()
        if self.endpoint.startswith("ipc://") and not os.path.exists(self.endpoint[6:]):
            raise Unreachable("unreachable", f"no futured socket at {self.endpoint}")
        self.reply_timeout = reply_timeout
        self.curve_keys = load_keys(server_key, client_key)  # as futured.Client's
        self.context = zmq.asyncio.Context()
        self._sock = self.context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        secure(self._sock, self.endpoint, self.curve_keys)
        self._sock.connect(self.endpoint)
        self._ids = itertools.count(1)
        self._waiting: Dict[int, asyncio.Future] = {}  # type: ignore[type-arg]
        self._reader: Optional[asyncio.Task] = None  # type: ignore[type-arg]
        self.info: Dict[str, Any] = {}
        self._params: Dict[str, Tuple[str, ...]] = {}

    @classmethod
    async def connect(cls, endpoint: Optional[str] = None, **kw: Any) -> "Client":
        c = cls(endpoint, **kw)
        try:
            await c.hello()
        except BaseException:
            await c.close()
            raise
        return c

    async def __aenter__(self) -> "Client":
        if not self.info:
            await self.hello()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
        for w in self._waiting.values():
            if not w.done():
                w.set_exception(Unreachable("unreachable", "the client is closed"))
        self._sock.close(0)
        self.context.destroy(linger=0)

    # --- the wire --------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            reply = unpack(await self._sock.recv())
            w = self._waiting.pop(reply.get("id"), None) if isinstance(reply, dict) else None
            if w is not None and not w.done():
                w.set_result(reply)

    async def call(self, op: str, fields: Optional[Dict[str, Any]] = None, *,
                   hold: Optional[float] = 0.0) -> Dict[str, Any]:
        """Sends request `op` and returns its reply's fields; raises as futured.Client.call."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())
        rid = next(self._ids)
        req: Dict[str, Any] = {"v": PROTOCOL_VERSION, "id": rid, "op": op}
        if fields:
            req.update(fields)
        w = asyncio.get_running_loop().create_future()
        self._waiting[rid] = w
        await self._sock.send(pack(req))
        limit = (None if hold is None or self.reply_timeout is None
                 else hold + self.reply_timeout)
        try:
            reply = await asyncio.wait_for(w, limit)
        except asyncio.TimeoutError:
            raise Unreachable("unreachable",
                              f"no reply to {op} from futured at {self.endpoint}") from None
        finally:
            self._waiting.pop(rid, None)
        if not reply.get("ok"):
            raise error_from_reply(reply.get("error") or {})
        for k in ("v", "id", "ok"):
            reply.pop(k, None)
        return reply

    # --- operations ------------------------------------------------------------------------

    async def hello(self) -> Dict[str, Any]:
        self.info = await self.call("hello")
        self._params = {k["name"]: tuple(p["name"] for p in k["params"])
                        for k in self.info["kinds"]}
        return self.info

    def _job_map(self, job: Job) -> Dict[str, Any]:
        from .client import Client as SyncClient
        # The same conversion as the synchronous client's, with this client's hello.
        return SyncClient.job_map(self, job)  # type: ignore[arg-type]

    @property
    def server(self) -> str:
        return str(self.info.get("server", ""))

    async def submit(self, fn: JobSpec, /, *args: Any, **kwargs: Any) -> int:
        """Submits one job (as futured.Client.submit) and returns its future ID."""
        return (await self.submit_many([as_job(fn, args, kwargs)]))[0]

    async def submit_many(self, jobs: Sequence[Job]) -> List[int]:
        if not self.info:
            await self.hello()
        wire = [self._job_map(j) for j in jobs]
        return list((await self.call("submit", {"jobs": wire}))["ids"])

    async def outcome(self, future: int, timeout: Optional[float] = None) -> Dict[str, Any]:
        fields: Dict[str, Any] = {"future": future}
        if timeout is not None:
            fields["timeout"] = float(timeout)
        return await self.call("result", fields, hold=timeout)

    async def result(self, future: int, timeout: Optional[float] = None) -> Any:
        """The result map of `future`; raises as futured.Client.result (NotDone, JobFailed,
        CancelledError, Expired, UnknownFuture)."""
        out = await self.outcome(future, timeout)
        exc = outcome_exception(future, out)
        if exc is not None:
            raise exc
        return out["result"]

    async def results(self, ids: Sequence[int],
                      timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        fields: Dict[str, Any] = {"ids": list(ids)}
        if timeout is not None:
            fields["timeout"] = float(timeout)
        return list((await self.call("results", fields, hold=timeout))["results"])

    async def status(self, ids: Sequence[int]) -> List[str]:
        return list((await self.call("status", {"ids": list(ids)}))["states"])

    async def wait(self, ids: Sequence[int], mode: str = "all",
                   timeout: Optional[float] = None) -> Tuple[List[int], List[int]]:
        fields: Dict[str, Any] = {"ids": list(ids), "mode": WAIT_MODES[mode]}
        if timeout is not None:
            fields["timeout"] = float(timeout)
        r = await self.call("wait", fields, hold=timeout)
        return list(r["done"]), list(r["not_done"])

    async def cancel(self, ids: Sequence[int]) -> List[bool]:
        return list((await self.call("cancel", {"ids": list(ids)}))["cancelled"])

    async def release(self, ids: Sequence[int]) -> List[bool]:
        return list((await self.call("release", {"ids": list(ids)}))["released"])

    async def stats(self) -> Dict[str, int]:
        return dict((await self.call("stats"))["stats"])

    async def probe(self, token: str) -> None:
        await self.call("probe", {"token": token})

    def future(self, fid: int) -> Future:
        """An asyncio Future that completes with `fid`'s result (or its exception), fed by one
        deferred `result` request."""
        fut = Future(fid, loop=asyncio.get_running_loop())

        async def feed() -> None:
            try:
                r = await self.result(fid)
            except BaseException as e:  # noqa: BLE001 - handed to the future
                if not fut.done():
                    if isinstance(e, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(e)
                return
            if not fut.done():
                fut.set_result(r)

        task = asyncio.ensure_future(feed())
        fut.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
        return fut

    async def as_completed(self, ids: Sequence[int], timeout: Optional[float] = None,
                           reconcile_interval: float = 1.0) -> AsyncIterator[Future]:
        """Yields a finished Future (result or exception set) for each of `ids` as it finishes,
        from the daemon's events: subscribe, prove the subscription with a probe, ask `status`
        once, then follow events, asking `status` again whenever they go quiet for
        `reconcile_interval` seconds. Raises TimeoutError when `timeout` seconds pass first."""
        if not self.info:
            await self.hello()
        end = None if timeout is None else time.monotonic() + timeout
        left = set(ids)
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        loop = asyncio.get_running_loop()
        try:
            for t in (b"done/", b"failed/", b"cancelled/"):
                sub.setsockopt(zmq.SUBSCRIBE, t)
            token = f"aio{os.getpid()}-{id(sub):x}-{time.monotonic_ns()}"
            topic = f"probe/{token}".encode()
            sub.setsockopt(zmq.SUBSCRIBE, topic)
            secure(sub, str(self.info["events"]), self.curve_keys)
            sub.connect(str(self.info["events"]))
            while True:
                await self.probe(token)
                if await sub.poll(50) and (await sub.recv_multipart())[0] == topic:
                    break
                if end is not None and time.monotonic() > end:
                    raise asyncio.TimeoutError()
            sub.setsockopt(zmq.UNSUBSCRIBE, topic)
            finished = [i for i, s in zip(ids, await self.status(ids))
                        if s not in ("pending", "running")]
            while left:
                if finished:
                    for fut in await self._outcomes([i for i in finished if i in left], loop):
                        left.discard(fut.id)
                        yield fut
                    finished = []
                    continue
                wait_s = reconcile_interval
                if end is not None:
                    wait_s = min(wait_s, end - time.monotonic())
                    if wait_s <= 0:
                        raise asyncio.TimeoutError()
                if await sub.poll(int(wait_s * 1000) + 1):
                    while True:
                        try:
                            frames = await sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        ev = unpack(frames[-1])
                        if ev.get("id") in left:
                            finished.append(ev["id"])
                else:
                    idl = sorted(left)
                    finished = [i for i, s in zip(idl, await self.status(idl))
                                if s not in ("pending", "running")]
        finally:
            sub.close(0)

    async def _outcomes(self, ids: List[int], loop: asyncio.AbstractEventLoop) -> List[Future]:
        out = []
        for r in await self.results(ids, timeout=0):
            fut = Future(r["id"], loop=loop)
            exc = outcome_exception(r["id"], r)
            if exc is None:
                fut.set_result(r.get("result"))
            elif r["state"] == "cancelled":
                fut.cancel()
            else:
                fut.set_exception(exc)
            out.append(fut)
        return out
