"""futured.Client: a synchronous client of the whole protocol (docs/PROTOCOL.md, version 1).

Threads: a Client may be shared by any number of threads. Each thread gets its own ZeroMQ DEALER
socket, made on its first call (ZeroMQ sockets must not be used by two threads at once), so the
calls of different threads run at the same time and a thread blocked in a long `wait` or `result`
holds up nobody else. A thread's socket is closed when the thread ends, and all of them by
close(). Note that the daemon counts each socket as a client of its own (its `max_deferred` limit
is per socket). close() itself must not race with calls in other threads.

Calls: every call sends one request and returns the fields of its reply, or raises the
FuturedError subclass named after the reply's error code. A call waits for its reply at most
`reply_timeout` seconds (default 30) on top of the time the request itself asks the daemon to
hold it (a `wait`'s or `result`'s timeout; without one it waits as long as the daemon does) and
then raises Unreachable; a reply that comes later is dropped when it arrives.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import msgpack
import zmq

from ._errors import UnknownKind, Unreachable, error_from_reply, outcome_exception
from ._job import Job, JobSpec, as_job
from ._keys import CurveKeys, load_keys, secure

__all__ = ["Client", "default_endpoint", "PROTOCOL_VERSION", "WAIT_MODES"]

PROTOCOL_VERSION = 1

# wait modes: the protocol's names, and concurrent.futures' constants for the same thing.
WAIT_MODES = {
    "all": "all", "first_completed": "first_completed", "first_exception": "first_exception",
    "ALL_COMPLETED": "all", "FIRST_COMPLETED": "first_completed",
    "FIRST_EXCEPTION": "first_exception",
}


def default_endpoint() -> str:
    """The endpoint futurectl and libfutured use when none is given: $FUTURED_ENDPOINT if set and
    not empty; else ipc://$XDG_RUNTIME_DIR/futured/futured.sock for a user (not root) whose
    XDG_RUNTIME_DIR is an absolute path; else ipc:///run/futured/futured.sock. The same rule as
    proto_default_endpoint() in proto/proto.c."""
    env = os.environ.get("FUTURED_ENDPOINT", "")
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.geteuid() != 0 and runtime.startswith("/"):
        return f"ipc://{runtime}/futured/futured.sock"
    return "ipc:///run/futured/futured.sock"


class _Conn:
    """One thread's DEALER socket and request-id counter."""

    def __init__(self, ctx: zmq.Context, endpoint: str, keys: Optional[CurveKeys]) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        secure(self.sock, endpoint, keys)
        self.sock.connect(endpoint)
        self.ids = itertools.count(1)

    def close(self) -> None:
        if not self.sock.closed:
            self.sock.close(0)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown, context already gone
            pass


def pack(fields: Mapping[str, Any]) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Client:
    """A connection to futured at `endpoint` (default: default_endpoint()).

    The constructor says hello (waiting at most `connect_timeout` seconds) and keeps the reply in
    `info`: the server string, pool sizes, limits and kinds. An ipc:// endpoint whose socket file
    does not exist, or a daemon that does not answer, raises Unreachable. Use it as a context
    manager, or call close().

    A tcp:// endpoint needs CurveZMQ keys (docs/SECURITY.md): `server_key`, the daemon's public
    key (the key or a key file), and `client_key`, this client's key file from `futurectl
    keygen`, whose public key is on the daemon's allow list; by default $FUTURED_SERVER_KEY and
    $FUTURED_CLIENT_KEY. A client the daemon does not admit gets no answer: Unreachable."""

    def __init__(self, endpoint: Optional[str] = None, *, reply_timeout: Optional[float] = 30.0,
                 connect_timeout: float = 5.0, context: Optional[zmq.Context] = None,
                 server_key: Optional[str] = None, client_key: Optional[str] = None) -> None:
        self.endpoint: str = endpoint or default_endpoint()
        self.reply_timeout = reply_timeout
        self.curve_keys: Optional[CurveKeys] = load_keys(server_key, client_key)
        if self.endpoint.startswith("ipc://") and not os.path.exists(self.endpoint[6:]):
            raise Unreachable("unreachable", f"no futured socket at {self.endpoint}")
        self._own_context = context is None
        self.context: zmq.Context = zmq.Context() if context is None else context
        self._local = threading.local()
        self._conns: "weakref.WeakSet[_Conn]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.info: Dict[str, Any] = self.call("hello", reply_timeout=connect_timeout)
        except BaseException:
            self.close()
            raise
        self.kinds: Dict[str, Dict[str, Any]] = {k["name"]: k for k in self.info["kinds"]}
        self.limits: Dict[str, int] = dict(self.info["limits"])
        self._params = {name: tuple(p["name"] for p in k["params"])
                        for name, k in self.kinds.items()}

    # --- connection ------------------------------------------------------------------------

    @property
    def server(self) -> str:
        """The daemon's server string, e.g. "futured 0.1.0"."""
        return str(self.info["server"])

    @property
    def events_endpoint(self) -> str:
        """The daemon's PUB endpoint (from hello)."""
        return str(self.info["events"])

    def _conn(self) -> _Conn:
        c: Optional[_Conn] = getattr(self._local, "conn", None)
        if c is None:
            if self._closed:
                raise Unreachable("unreachable", "the client is closed")
            c = _Conn(self.context, self.endpoint, self.curve_keys)
            self._local.conn = c
            with self._lock:
                self._conns.add(c)
        return c

    def socket(self, kind: int) -> zmq.Socket:
        """A new ZeroMQ socket of this client's context (for SUB sockets and private DEALERs);
        the caller owns it and closes it, and connects it with connect()."""
        s = self.context.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        return s

    def connect(self, sock: zmq.Socket, endpoint: str) -> None:
        """Connects `sock` to `endpoint` (this client's, or its events endpoint) with this
        client's CURVE keys when the endpoint needs them."""
        secure(sock, endpoint, self.curve_keys)
        sock.connect(endpoint)

    def close(self) -> None:
        """Closes every thread's socket (and the context, if this client made it). Call it when
        no other thread is using the client any more."""
        self._closed = True
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            c.close()
        self._local = threading.local()
        if self._own_context:
            self.context.destroy(linger=0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<futured.Client {self.endpoint}>"

    # --- the wire --------------------------------------------------------------------------

    def call(self, op: str, fields: Optional[Mapping[str, Any]] = None, *,
             hold: Optional[float] = 0.0, reply_timeout: Optional[float] = -1.0) -> Dict[str, Any]:
        """Sends request `op` with `fields` on this thread's socket and returns its reply without
        v, id and ok. `hold` is how long the daemon may hold the reply on purpose (a wait's or
        result's timeout; None: as long as it takes); `reply_timeout` overrides the client's.
        Raises the FuturedError of an error reply, or Unreachable."""
        c = self._conn()
        rid = next(c.ids)
        req = {"v": PROTOCOL_VERSION, "id": rid, "op": op}
        if fields:
            req.update(fields)
        c.sock.send(pack(req))
        return self._reply(c.sock, rid, op, hold,
                           self.reply_timeout if reply_timeout == -1.0 else reply_timeout)

    def _reply(self, sock: zmq.Socket, rid: int, op: str, hold: Optional[float],
               reply_timeout: Optional[float]) -> Dict[str, Any]:
        deadline = (None if hold is None or reply_timeout is None
                    else time.monotonic() + hold + reply_timeout)
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not sock.poll(int(left * 1000) + 1):
                    raise Unreachable("unreachable",
                                      f"no reply to {op} from futured at {self.endpoint}")
            reply = unpack(sock.recv())
            if isinstance(reply, dict) and reply.get("id") == rid:
                break
            # A late reply to an earlier call that timed out: not ours, dropped.
        if not reply.get("ok"):
            raise error_from_reply(reply.get("error") or {})
        reply.pop("v", None)
        reply.pop("id", None)
        reply.pop("ok", None)
        return reply

    # --- jobs ------------------------------------------------------------------------------

    def job_map(self, job: Job) -> Dict[str, Any]:
        """The wire form of `job`: positional arguments named by the kind's parameter order from
        hello. Raises UnknownKind for a kind the daemon did not list, TypeError for too many
        positional arguments or an argument given twice."""
        params = self._params.get(job.kind)
        if params is None:
            raise UnknownKind("unknown_kind", f"{self.server} has no job kind {job.kind!r}")
        m: Dict[str, Any] = {"kind": job.kind}
        if job.args or job.kwargs:
            if len(job.args) > len(params):
                raise TypeError(f"{job.kind}() takes {len(params)} positional argument"
                                f"{'' if len(params) == 1 else 's'} but {len(job.args)} "
                                f"{'was' if len(job.args) == 1 else 'were'} given")
            args = dict(zip(params, job.args))
            for k, v in job.kwargs.items():
                if k in args:
                    raise TypeError(f"{job.kind}() got multiple values for argument {k!r}")
                args[k] = v
            m["args"] = args
        if job.priority:
            m["priority"] = job.priority
        if job.timeout is not None:
            m["timeout"] = float(job.timeout)
        if job.group is not None:
            m["group"] = job.group
        if job.group_limit is not None:
            m["group_limit"] = job.group_limit
        if job.retries is not None:
            m["retries"] = job.retries
        return m

    def submit(self, fn: JobSpec, /, *args: Any, **kwargs: Any) -> int:
        """Submits one job and returns its future ID. `fn` is a kind name, a stub from
        futured.kinds, a Job, or a function returning a Job; `args` and `kwargs` are the kind's
        arguments (positional ones in the order hello lists the kind's parameters)."""
        return self.submit_many([as_job(fn, args, kwargs)])[0]

    def submit_many(self, jobs: Iterable[Job]) -> List[int]:
        """Submits a batch of Jobs in one request (all or nothing; at most limits["max_batch"])
        and returns their future IDs in order."""
        wire = [self.job_map(j) for j in jobs]
        return list(self.call("submit", {"jobs": wire})["ids"])

    def run(self, fn: JobSpec, /, *args: Any, **kwargs: Any) -> Any:
        """Submits one job and waits for it in one round trip (`reply: results`): its result
        map, or the exception result() would raise."""
        ids, outcomes = self.run_many([as_job(fn, args, kwargs)])
        exc = outcome_exception(ids[0], outcomes[0])
        if exc is not None:
            raise exc
        return outcomes[0]["result"]

    def run_many(self, jobs: Iterable[Job]) -> Tuple[List[int], List[Dict[str, Any]]]:
        """Submits a batch and waits until every job has finished (`reply: results`, one round
        trip). Returns (ids, outcomes), each outcome as in results()."""
        wire = [self.job_map(j) for j in jobs]
        r = self.call("submit", {"jobs": wire, "reply": "results"}, hold=None)
        return list(r["ids"]), list(r["results"])

    # --- the other operations --------------------------------------------------------------

    def hello(self) -> Dict[str, Any]:
        """The daemon's hello (also kept in `info` since connecting)."""
        return self.call("hello")

    def status(self, ids: Sequence[int]) -> List[str]:
        """The state of each future ID, never blocking."""
        return list(self.call("status", {"ids": list(ids)})["states"])

    def wait(self, ids: Sequence[int], mode: str = "all",
             timeout: Optional[float] = None) -> Tuple[List[int], List[int]]:
        """Waits as concurrent.futures.wait does: `mode` is "all", "first_completed" or
        "first_exception" (or ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION). Returns (done,
        not_done), lists of IDs in request order; a timeout is not an error."""
        fields: Dict[str, Any] = {"ids": list(ids), "mode": WAIT_MODES[mode]}
        if timeout is not None:
            fields["timeout"] = float(timeout)
        r = self.call("wait", fields, hold=timeout)
        return list(r["done"]), list(r["not_done"])

    def outcome(self, future: int, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The finished future's outcome: {state, result} or {state: "failed", failure}, or
        {state: "cancelled" | "expired" | "unknown"}. Raises NotDone (a TimeoutError) if it has
        not finished within `timeout` seconds (None: waits as long as it takes)."""
        fields: Dict[str, Any] = {"future": future}
        if timeout is not None:
            fields["timeout"] = float(timeout)
        return self.call("result", fields, hold=timeout)

    def result(self, future: int, timeout: Optional[float] = None) -> Any:
        """The result map of future `future`, as Future.result(): raises NotDone (TimeoutError)
        when not finished in time, JobFailed for a failure, CancelledError, Expired or
        UnknownFuture for the other states."""
        out = self.outcome(future, timeout)
        exc = outcome_exception(future, out)
        if exc is not None:
            raise exc
        return out["result"]

    def results(self, ids: Sequence[int], timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """The outcomes of several futures ({id, state[, result | failure]} each), waiting until
        all have finished or `timeout` passes (then unfinished ones are {id, state})."""
        fields: Dict[str, Any] = {"ids": list(ids)}
        if timeout is not None:
            fields["timeout"] = float(timeout)
        return list(self.call("results", fields, hold=timeout)["results"])

    def cancel(self, ids: Sequence[int]) -> List[bool]:
        """Cancels futures, running ones included (their work is stopped). True for each ID that
        is now cancelled."""
        return list(self.call("cancel", {"ids": list(ids)})["cancelled"])

    def release(self, ids: Sequence[int]) -> List[bool]:
        """Drops the retained results of finished futures (they then report `expired`)."""
        return list(self.call("release", {"ids": list(ids)})["released"])

    def list(self, state: Optional[str] = None, after: int = 0,
             limit: int = 100) -> Tuple[List[Dict[str, Any]], bool]:
        """One page of futures ({id, kind, state, group, priority}) with IDs above `after`, and
        whether there are more (continue with after = the last ID)."""
        fields: Dict[str, Any] = {"after": after, "limit": limit}
        if state is not None:
            fields["state"] = state
        r = self.call("list", fields)
        return list(r["futures"]), bool(r["more"])

    def iter_futures(self, state: Optional[str] = None) -> Iterator[Dict[str, Any]]:
        """Every future the daemon retains (in `state`), page by page."""
        after = 0
        while True:
            page, more = self.list(state, after, 10000)
            yield from page
            if not more or not page:
                return
            after = page[-1]["id"]

    def stats(self) -> Dict[str, int]:
        """The daemon's counters (pending, running, done, ..., uptime_ms)."""
        return dict(self.call("stats")["stats"])

    def probe(self, token: str) -> None:
        """Asks the daemon to publish an event with topic probe/TOKEN."""
        self.call("probe", {"token": token})

