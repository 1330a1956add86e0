"""futured.Executor: a concurrent.futures.Executor whose jobs run in the futured daemon.

`submit()` returns a futured.Future, a subclass of concurrent.futures.Future, so that
concurrent.futures.as_completed() and wait(), Future.result(timeout), exception() and
add_done_callback() work as with any executor. `map()` sends one submit request per chunk.

One background thread, the dispatcher, does the executor's talking to the daemon, as the
standard library's ProcessPoolExecutor has its queue management thread:

Submitting. submit() checks the job against the daemon's hello (unknown kind, too many
arguments: raised at once), puts it in the outbox and wakes the dispatcher, which sends whatever
the outbox holds as one `submit` request (up to `max_batch` jobs and `max_message` bytes) on its
own DEALER socket, several requests in flight at once, and gives each future its ID (`Future.id`
waits for it) when the reply comes. So a loop of submit() calls costs one round trip per batch,
not per job. A submit the daemon rejects becomes the exception of its futures: the one job named
by the error's `index` (BadArgs, UnknownKind, BadUrl) fails and the rest of its batch is sent
again; any other error (QueueFull, ShuttingDown, OutOfMemory, ...) fails the whole batch.

Completing. The dispatcher owns a SUB socket on the daemon's events endpoint, subscribed to
`done/`, `failed/` and `cancelled/`, the subscription proven live with a `probe` before the first
submit (docs/DESIGN-NOTES.md). A `failed` or `cancelled` event finishes its future at once (the
failure travels in the event); the results of `done` events read together are fetched with one
`results` request. Events are best effort (PUB drops for a slow subscriber), so when none of ours
has arrived for `reconcile_interval` seconds (1 s, doubling up to 8 s while nothing is found) and
futures are outstanding, the dispatcher asks `status` for all of them and finishes those the
daemon has finished. There is no loop per future.

The race between a submit's reply and its events: the daemon may publish a job's `done` before
the dispatcher has read the submit reply that tells it the job's ID (a `noop` runs in the same
loop turn). So while a submit is in flight, events for IDs it does not know are kept in `_early`
and looked up when a reply assigns IDs; with no submit in flight, an unknown ID is another
client's job and its event is dropped.

Callbacks added with add_done_callback() run on the dispatcher thread (as they run on a worker
thread in the standard library's executors): they must be short and must not wait for another
future of the same executor.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures._base as _base
import logging
import os
import threading
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import zmq

from ._errors import FuturedError, JobFailed, Unreachable, error_from_reply, outcome_exception
from ._job import JobSpec, as_job
from .client import PROTOCOL_VERSION, Client, pack, unpack

__all__ = ["Executor", "Future"]

log = logging.getLogger("futured")

_TOPICS = (b"done/", b"failed/", b"cancelled/")

# A job waiting to be sent: its future and its wire map.
_Entry = Tuple["Future", Dict[str, Any]]


class Future(concurrent.futures.Future):  # type: ignore[type-arg]
    """A concurrent.futures.Future for one job in the daemon.

    Differences from the standard library: cancel() also cancels a *running* job (the daemon
    stops its work: kills the worker process, aborts the transfer, interrupts the sleep), and
    running() stays False until the job is done (the executor does not follow `running` events;
    Client.status() tells)."""

    def __init__(self, executor: "Executor") -> None:
        super().__init__()
        self._id: Optional[int] = None
        self._futured_executor = executor

    @property
    def id(self) -> Optional[int]:
        """The daemon's future ID. Waits until the dispatcher has it (a submit is sent within
        moments); None if the submit was rejected (see exception())."""
        if self._id is None:
            # Not on self._condition: a notify there wakes result() and wait(), which would
            # take it for the end of the future.
            cond = self._futured_executor._id_cond
            with cond:
                cond.wait_for(lambda: self._id is not None or self._state != _base.PENDING)
        return self._id

    def cancel(self) -> bool:
        """Cancels the job on the daemon, running or not. True if it is now cancelled, False if
        it had finished already."""
        if self.done():
            return self.cancelled()
        return self._futured_executor._cancel(self)

    def __repr__(self) -> str:
        r = super().__repr__()
        return f"{r[:-1]} id={self._id}>" if self._id is not None else r

    # Completion, by the executor (any thread); each is a no-op on a future already finished.

    def _finish(self, result: Any = None, exc: Optional[BaseException] = None) -> None:
        with self._condition:
            if self._state == _base.PENDING:
                self._state = _base.RUNNING
            elif self._state != _base.RUNNING:
                return
        try:
            if exc is not None:
                self.set_exception(exc)
            else:
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass

    def _set_cancelled(self) -> bool:
        with self._condition:
            if self._state == _base.FINISHED:
                return False
            if self._state in (_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED):
                return True
            self._state = _base.CANCELLED  # also from RUNNING: the daemon stopped the work
            self._condition.notify_all()
        self._invoke_callbacks()
        # CANCELLED -> CANCELLED_AND_NOTIFIED, and tells as_completed()/wait() waiters, as the
        # standard library's workers do for a cancelled work item.
        self.set_running_or_notify_cancel()
        return True


class Executor(concurrent.futures.Executor):
    """An executor whose jobs are the daemon's kinds: `submit(futured.kinds.prime, 7)` or
    `submit("prime", 7)` returns a futured.Future whose result is the kind's result map.

    `endpoint`, `server_key` and `client_key` as for Client; or pass a `client` to share (it is
    then not closed by shutdown()). Thread-safe: any number of threads may submit, map and
    cancel at once."""

    def __init__(self, endpoint: Optional[str] = None, *, client: Optional[Client] = None,
                 reconcile_interval: float = 1.0, connect_timeout: float = 5.0,
                 server_key: Optional[str] = None, client_key: Optional[str] = None) -> None:
        self._own_client = client is None
        self.client: Client = client if client is not None else Client(
            endpoint, connect_timeout=connect_timeout, server_key=server_key,
            client_key=client_key)
        limits = self.client.limits
        self._max_batch = min(limits["max_batch"], limits["max_ids"])
        self._max_message = limits["max_message"]
        self._reconcile_interval = reconcile_interval
        # Shared with the submitting threads, under _lock:
        self._lock = threading.Lock()
        self._id_cond = threading.Condition()          # Future.id waits on it
        self._outbox: List[_Entry] = []
        self._woken = False
        self._futures: Dict[int, Future] = {}          # by ID: sent, not finished
        self._batches: Dict[int, List[_Entry]] = {}    # by request id: sent, no reply yet
        self._fetch: List[int] = []                    # IDs whose results are to be fetched
        self._shutdown = False
        self._stop = False
        # The dispatcher's own:
        self._early: Dict[int, Tuple[str, Any]] = {}
        self._next_rid = 1
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sub = self.client.socket(zmq.SUB)
        self._dealer = self.client.socket(zmq.DEALER)
        try:
            self._dealer.setsockopt(zmq.RCVHWM, 0)
            self._dealer.setsockopt(zmq.SNDHWM, 0)
            self.client.connect(self._dealer, self.client.endpoint)
            self._sub.setsockopt(zmq.RCVHWM, 0)
            for t in _TOPICS:
                self._sub.setsockopt(zmq.SUBSCRIBE, t)
            self.client.connect(self._sub, self.client.events_endpoint)
            self._prove_subscription(connect_timeout)
        except BaseException:
            self._close_resources()
            raise
        self._thread = threading.Thread(target=self._run, name="futured-dispatcher",
                                        daemon=True)
        self._thread.start()

    def _prove_subscription(self, timeout: float) -> None:
        """Subscribes to probe/TOKEN and probes until the event arrives: from then on no event
        of the other subscriptions is lost to ZeroMQ's slow joiner."""
        token = f"py{os.getpid()}-{id(self):x}-{time.monotonic_ns()}"
        topic = f"probe/{token}".encode()
        self._sub.setsockopt(zmq.SUBSCRIBE, topic)
        deadline = time.monotonic() + timeout
        while True:
            self.client.probe(token)
            if self._sub.poll(50):
                if self._sub.recv_multipart()[0] == topic:
                    break
            if time.monotonic() > deadline:
                raise Unreachable("unreachable", f"no events from {self.client.events_endpoint}")
        self._sub.setsockopt(zmq.UNSUBSCRIBE, topic)

    # --- submitting ------------------------------------------------------------------------

    def submit(self, fn: JobSpec, /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[override]
        """Submits one job: `fn` is a kind name, a stub from futured.kinds, a futured.Job, or a
        function returning a Job; positional `args` fill the kind's parameters in the order of
        the daemon's hello. Returns a futured.Future at once (the dispatcher sends it). Raises
        RuntimeError after shutdown(), UnknownKind and TypeError at once; a rejection by the
        daemon (BadArgs, QueueFull, ShuttingDown, ...) is the future's exception."""
        wire = self.client.job_map(as_job(fn, args, kwargs))
        fut = Future(self)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._outbox.append((fut, wire))
            wake = not self._woken
            self._woken = True
        if wake:
            self._wake()
        return fut


    def map(self, fn: JobSpec, *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: Optional[int] = None) -> Iterator[Any]:
        """As Executor.map: the results of fn(*args) for args in zip(*iterables), in order, all
        submitted before it returns. The jobs go out in chunks of `chunksize` (default: up to
        1,000, fewer for short maps so that the first results come early), one submit request
        per chunk, and each chunk's results come back in one deferred `results` reply, on a
        socket of the map's own. A failed job raises JobFailed when its turn comes; a timeout
        (seconds from this call) raises TimeoutError. Either, or closing the iterator early,
        cancels the jobs whose results were not returned (running ones too)."""
        end = None if timeout is None else time.monotonic() + timeout
        job_map = self.client.job_map
        wire = [job_map(as_job(fn, args, {})) for args in zip(*iterables)]
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not wire:
            return iter(())
        limits = self.client.limits
        n = len(wire)
        if chunksize is None:
            chunksize = max(min(1000, -(-n // 8)), -(-n // max(1, limits["max_deferred"] // 2)))
        chunksize = max(1, min(chunksize, limits["max_batch"], limits["max_ids"]))
        sock = self.client.socket(zmq.DEALER)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        self.client.connect(sock, self.client.endpoint)
        try:
            ids = self._map_submit(sock, wire, chunksize, limits["max_message"])
        except BaseException:
            sock.close(0)
            raise
        return self._map_results(sock, ids, end)

    def _map_submit(self, sock: zmq.Socket, wire: List[Dict[str, Any]], size: int,
                    max_message: int) -> List[List[int]]:
        """Sends every chunk's submit at once, then reads the replies: the IDs of each chunk. A
        chunk whose request would be over `max_message` is halved until it fits. On an error
        reply, the jobs of the chunks accepted are cancelled and the error raised."""
        reqs: List[bytes] = []
        pending = [wire[i:i + size] for i in range(0, len(wire), size)]
        pending.reverse()
        while pending:
            chunk = pending.pop()
            data = pack({"v": PROTOCOL_VERSION, "id": len(reqs) + 1, "op": "submit",
                         "jobs": chunk})
            if len(data) > max_message - 64 and len(chunk) > 1:
                half = len(chunk) // 2
                pending.append(chunk[half:])
                pending.append(chunk[:half])
                continue
            reqs.append(data)
        for data in reqs:
            sock.send(data)
        ids: List[Optional[List[int]]] = [None] * len(reqs)
        error: Optional[BaseException] = None
        for _ in reqs:
            rt = self.client.reply_timeout
            if rt is not None and not sock.poll(int(rt * 1000)):
                error = Unreachable("unreachable", "no reply to submit")
                break
            reply = unpack(sock.recv())
            if reply.get("ok"):
                ids[reply["id"] - 1] = list(reply["ids"])
            elif error is None:
                error = error_from_reply(reply.get("error") or {})
        if error is not None:
            accepted = [i for chunk in ids if chunk for i in chunk]
            self._cancel_quietly(accepted)
            raise error
        return [c for c in ids if c is not None]

    def _map_results(self, sock: zmq.Socket, ids: List[List[int]],
                     end: Optional[float]) -> Iterator[Any]:
        base = len(ids) + 1
        for k, chunk in enumerate(ids):
            sock.send(pack({"v": PROTOCOL_VERSION, "id": base + k, "op": "results",
                            "ids": chunk}))

        def results() -> Iterator[Any]:
            got: Dict[int, List[Dict[str, Any]]] = {}
            returned = 0
            try:
                for k, chunk in enumerate(ids):
                    while k not in got:
                        if end is None:
                            sock.poll()
                        else:
                            left = end - time.monotonic()
                            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                                raise concurrent.futures.TimeoutError()
                        reply = unpack(sock.recv())
                        if not reply.get("ok"):
                            raise error_from_reply(reply.get("error") or {})
                        got[reply["id"] - base] = reply["results"]
                    for fid, out in zip(chunk, got.pop(k)):
                        exc = outcome_exception(fid, out)
                        if exc is not None:
                            raise exc
                        returned += 1
                        yield out["result"]
            finally:
                sock.close(0)
                rest = [i for c in ids for i in c][returned:]
                if rest:
                    self._cancel_quietly(rest)

        return results()

    # --- cancelling and shutting down ------------------------------------------------------

    def _cancel_quietly(self, ids: List[int]) -> None:
        step = self.client.limits["max_ids"]
        try:
            for i in range(0, len(ids), step):
                self.client.cancel(ids[i:i + step])
        except (FuturedError, zmq.ZMQError) as e:
            log.warning("futured: could not cancel %d jobs: %s", len(ids), e)

    # --- cancelling and shutting down ------------------------------------------------------

    def _cancel(self, fut: Future) -> bool:
        with self._lock:
            for k, (f, _w) in enumerate(self._outbox):
                if f is fut:  # not sent yet: nothing to ask the daemon
                    del self._outbox[k]
                    break
            else:
                f = None
        if f is not None:
            return fut._set_cancelled()
        fid = fut.id
        if fid is None:  # the submit was rejected
            return fut.cancelled()
        if not self.client.cancel([fid])[0]:
            return fut.cancelled()
        with self._lock:
            self._futures.pop(fid, None)
        return fut._set_cancelled()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As the standard library's: no new submits; with `cancel_futures`, the futures not
        started yet (not sent, or pending on the daemon) are cancelled, running ones go on; with
        `wait`, returns once every future has finished. The dispatcher ends, and the executor's
        own Client is closed, once the last future has finished."""
        with self._lock:
            self._shutdown = True
            unsent = self._outbox if cancel_futures else []
            if cancel_futures:
                self._outbox = []
            outstanding = ([f for f, _w in self._outbox]
                           + [f for b in self._batches.values() for f, _w in b]
                           + list(self._futures.values()))
        for f in unsent:
            f[0]._set_cancelled()
        if cancel_futures and outstanding:
            self._cancel_pending(outstanding)
        self._wake()
        if wait:
            concurrent.futures.wait(outstanding)
            self._thread.join()

    def _cancel_pending(self, futs: List[Future]) -> None:
        live = [f for f in futs if f.id is not None and not f.done()]
        for i in range(0, len(live), self._max_batch):
            part = live[i:i + self._max_batch]
            states = self.client.status([f.id for f in part])  # type: ignore[misc]
            pending = [f for f, s in zip(part, states) if s == "pending"]
            if not pending:
                continue
            for f, ok in zip(pending, self.client.cancel([f.id for f in pending])):  # type: ignore[misc]
                if ok:
                    with self._lock:
                        self._futures.pop(f.id, None)  # type: ignore[arg-type]
                    f._set_cancelled()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except OSError:
            pass  # the pipe is full (the dispatcher will wake), or closed (it has ended)

    def _close_resources(self) -> None:
        self._sub.close(0)
        self._dealer.close(0)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._own_client:
            self.client.close()

    # --- the dispatcher thread -------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        poller.register(self._dealer, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        base = self._reconcile_interval
        interval = base
        quiet_since = time.monotonic()
        try:
            while True:
                with self._lock:
                    if self._stop or (self._shutdown and not self._futures and not self._outbox
                                      and not self._batches):
                        return
                left = quiet_since + interval - time.monotonic()
                ready = dict(poller.poll(max(0, int(left * 1000) + 1)))
                ours = False
                if self._wake_r in ready:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                self._send_outbox()
                if self._sub in ready:
                    ours = self._read_events()
                if self._dealer in ready:
                    self._read_replies()
                with self._lock:
                    fetch, self._fetch = self._fetch, []
                    if not self._batches:
                        self._early.clear()
                try:
                    if fetch:
                        ours = True
                        self._fetch_results(fetch)
                    now = time.monotonic()
                    if ours:
                        quiet_since, interval = now, base
                    elif now - quiet_since >= interval:
                        found = self._reconcile()
                        quiet_since = now
                        interval = base if found else min(interval * 2, 8 * base)
                except (FuturedError, zmq.ZMQError) as e:
                    # The daemon did not answer (or refused): the IDs are kept and tried
                    # again on the next turn or reconcile.
                    log.warning("futured: dispatcher: %s", e)
                    quiet_since = time.monotonic()
        except Exception:  # noqa: BLE001 - never die silently with futures outstanding
            log.exception("futured: the executor's dispatcher thread failed")
        finally:
            self._close_resources()

    def _send_outbox(self) -> None:
        """Sends what the outbox holds: one submit request per `max_batch` jobs (halved while
        over `max_message` bytes)."""
        with self._lock:
            box, self._outbox = self._outbox, []
            self._woken = False
        if not box:
            return
        pending = [box[i:i + self._max_batch] for i in range(0, len(box), self._max_batch)]
        pending.reverse()
        while pending:
            batch = pending.pop()
            rid = self._next_rid
            data = pack({"v": PROTOCOL_VERSION, "id": rid, "op": "submit",
                         "jobs": [w for _f, w in batch]})
            if len(data) > self._max_message - 64 and len(batch) > 1:
                half = len(batch) // 2
                pending.append(batch[half:])
                pending.append(batch[:half])
                continue
            self._next_rid += 1
            with self._lock:
                self._batches[rid] = batch
            self._dealer.send(data)

    def _read_replies(self) -> None:
        """Reads the submit replies that have come: gives the futures their IDs."""
        while True:
            try:
                reply = unpack(self._dealer.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            with self._lock:
                batch = self._batches.pop(reply.get("id"), None)
            if batch is None:
                continue
            if reply.get("ok"):
                self._assign(batch, reply["ids"])
            else:
                self._rejected(batch, error_from_reply(reply.get("error") or {}))

    def _assign(self, batch: List[_Entry], ids: List[int]) -> None:
        finished: List[Tuple[Future, str, Any]] = []
        early = self._early
        with self._lock:
            futures = self._futures
            for (fut, _w), fid in zip(batch, ids):
                e = early.pop(fid, None) if early else None
                if e is None or e[0] == "done":
                    futures[fid] = fut
                    if e is not None:
                        self._fetch.append(fid)
                else:
                    finished.append((fut, e[0], e[1]))
        with self._id_cond:
            for (fut, _w), fid in zip(batch, ids):
                fut._id = fid
            self._id_cond.notify_all()
        for fut, state, failure in finished:
            self._complete_event(fut, state, failure)

    def _rejected(self, batch: List[_Entry], err: FuturedError) -> None:
        """A submit was refused, so nothing of it was queued. The job an `index` names gets the
        error; the others go out again. Without an index the whole batch gets it."""
        if err.index is not None and 0 <= err.index < len(batch) and len(batch) > 1:
            bad = batch[err.index]
            rest = batch[:err.index] + batch[err.index + 1:]
            bad[0]._finish(exc=err)
            with self._id_cond:
                self._id_cond.notify_all()  # Future.id: None
            with self._lock:
                self._outbox[:0] = rest
            self._send_outbox()
            return
        for fut, _w in batch:
            fut._finish(exc=err)
        with self._id_cond:
            self._id_cond.notify_all()  # Future.id: None

    def _read_events(self) -> bool:
        """Reads every event queued now; finishes failed and cancelled futures and queues done
        ones for fetching. Returns whether any was ours."""
        evs = []
        sub = self._sub
        # At most 2,000 at a time, so that the outbox is sent between batches even when
        # another client's jobs flood the `done/` topic (every subscriber reads every event).
        for _ in range(2000):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2:
                continue
            try:
                ev = unpack(frames[1])
                evs.append((ev["id"], ev["state"], ev.get("failure")))
            except (ValueError, KeyError, TypeError):
                continue
        finished: List[Tuple[Future, str, Any]] = []
        ours = False
        with self._lock:
            futures = self._futures
            keep_early = bool(self._batches)
            for fid, state, failure in evs:
                fut = futures.get(fid)
                if fut is None:
                    if keep_early:
                        self._early[fid] = (state, failure)
                    continue
                ours = True
                if state == "done":
                    self._fetch.append(fid)
                else:
                    del futures[fid]
                    finished.append((fut, state, failure))
        for fut, state, failure in finished:
            self._complete_event(fut, state, failure)
        return ours

    def _complete_event(self, fut: Future, state: str, failure: Any) -> None:
        if state == "failed":
            fut._finish(exc=JobFailed(fut._id, failure or {}))
        elif state == "cancelled":
            fut._set_cancelled()
        else:  # done, expired, unknown: ask
            with self._lock:
                if fut._id is not None:
                    self._futures[fut._id] = fut
                    self._fetch.append(fut._id)

    def _fetch_results(self, ids: List[int]) -> None:
        """Fetches the outcomes of finished futures (`results`, timeout 0) and finishes them."""
        step = self._max_batch
        for i in range(0, len(ids), step):
            part = ids[i:i + step]
            try:
                outs = self.client.results(part, timeout=0)
            except BaseException:
                with self._lock:
                    self._fetch += ids[i:]  # again next time
                raise
            done: List[Tuple[Future, Dict[str, Any]]] = []
            with self._lock:
                for out in outs:
                    if out["state"] in ("pending", "running"):
                        continue
                    fut = self._futures.pop(out["id"], None)
                    if fut is not None:
                        done.append((fut, out))
            for fut, out in done:
                if out["state"] == "done":
                    fut._finish(out.get("result"))
                elif out["state"] == "cancelled":
                    fut._set_cancelled()
                else:
                    fut._finish(exc=outcome_exception(fut._id, out))

    def _reconcile(self) -> bool:
        """Asks `status` for every outstanding future and finishes those that have finished.
        Returns whether it found any (then an event was lost)."""
        with self._lock:
            ids = list(self._futures)
        if not ids:
            return False
        finished: List[int] = []
        for i in range(0, len(ids), self._max_batch):
            part = ids[i:i + self._max_batch]
            for fid, state in zip(part, self.client.status(part)):
                if state not in ("pending", "running"):
                    finished.append(fid)
        if finished:
            log.debug("futured: %d completions found by reconciling", len(finished))
            self._fetch_results(finished)
        return bool(finished)
