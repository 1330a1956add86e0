"""The exceptions of futured: one class per error code of the protocol, and JobFailed.

An error reply of the daemon (`ok: false`, docs/PROTOCOL.md "Error codes") becomes an instance of
the class named after its code (`queue_full` -> QueueFull), all subclasses of FuturedError with
the code in `.code`. A code this version does not know becomes a plain FuturedError. A job that
ended `failed` raises JobFailed, whose `.code` is the *failure* code (`timeout`, `worker_died`,
`http_error`, ...). A few classes also derive from the built-in exception a Python programmer
would catch: NotDone is a TimeoutError (as concurrent.futures' timeouts are), Unreachable a
ConnectionError, OutOfMemory a MemoryError.
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "FuturedError", "BadMessage", "BadRequest", "BadVersion", "UnknownOp", "UnknownField",
    "UnknownKind", "BadArgs", "BadUrl", "TooLarge", "TooMany", "QueueFull", "QuotaExceeded",
    "TooManyDeferred", "NotDone", "ShuttingDown", "OutOfMemory", "Unreachable", "JobFailed",
    "Expired", "UnknownFuture", "error_from_reply", "outcome_exception",
]


class FuturedError(Exception):
    """Base class of every futured error. `code` is the protocol's error code (or, for
    JobFailed, the failure code); `field` and `index` name the offending request field and job
    of a batch when the daemon says which."""

    code: str = ""

    def __init__(self, code: str, message: str = "", *, field: Optional[str] = None,
                 index: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.field = field
        self.index = index


class BadMessage(FuturedError):
    """`bad_message`: the frame was not one msgpack value."""


class BadRequest(FuturedError):
    """`bad_request`: not a map, a required field missing or of the wrong type."""


class BadVersion(FuturedError):
    """`bad_version`: the daemon does not speak protocol version 1."""


class UnknownOp(FuturedError):
    """`unknown_op`: no such operation."""


class UnknownField(FuturedError):
    """`unknown_field`: a field the protocol does not define (`field` names it)."""


class UnknownKind(FuturedError):
    """`unknown_kind`: no such job kind (also raised before sending, from the daemon's hello)."""


class BadArgs(FuturedError):
    """`bad_args`: a job's arguments do not fit its kind (`index` and `field` say where)."""


class BadUrl(FuturedError):
    """`bad_url`: a download URL that is not http or https."""


class TooLarge(FuturedError):
    """`too_large`: the request frame is over the daemon's `max_message`."""


class TooMany(FuturedError):
    """`too_many`: a batch over `max_batch` or an ID list over `max_ids`."""


class QueueFull(FuturedError):
    """`queue_full`: the daemon holds `max_pending` unfinished futures already."""


class QuotaExceeded(FuturedError):
    """`quota_exceeded`: this client's principal (its uid on ipc://, its CURVE key on tcp://)
    is at one of its quotas (hello's `quotas`): unfinished futures, retained results or deferred
    replies. Release results, or wait for jobs to finish, and submit again."""


class TooManyDeferred(FuturedError):
    """`too_many_deferred`: this connection has `max_deferred` wait/result replies outstanding."""


class NotDone(FuturedError, TimeoutError):
    """`not_done`: a result was not ready within its timeout. Also a TimeoutError, which is what
    concurrent.futures raises."""


class ShuttingDown(FuturedError):
    """`shutting_down`: the daemon is stopping and takes no new jobs."""


class OutOfMemory(FuturedError, MemoryError):
    """`out_of_memory`: the daemon did nothing of the request; it may be sent again later."""


class Unreachable(FuturedError, ConnectionError):
    """`unreachable` (client side, not a protocol code): no daemon at the endpoint, or no reply
    within the client's reply timeout."""


class Expired(FuturedError):
    """`expired` (a future state): the result was released or its retention time ran out."""


class UnknownFuture(FuturedError):
    """`unknown` (a future state): the daemon never issued this future ID."""


class JobFailed(FuturedError):
    """The job ended `failed`. `code` is the failure code (`timeout`, `worker_died`,
    `shutdown`, `internal`, `http_error`, `connection`, `too_large`, `too_many_redirects`,
    `bad_url`, `download_denied`, `download_quota`, `io`), `failure` the whole failure map (for
    `download_denied` also its `rule` and `address`), and `http_status`, `signal` and
    `exit_status` its optional details (None when absent). `future_id` is the daemon's ID."""

    def __init__(self, future_id: Optional[int], failure: Mapping[str, Any]) -> None:
        super().__init__(str(failure.get("code", "internal")), str(failure.get("message", "")))
        self.future_id = future_id
        self.failure: Dict[str, Any] = dict(failure)
        self.http_status: Optional[int] = failure.get("http_status")
        self.signal: Optional[int] = failure.get("signal")
        self.exit_status: Optional[int] = failure.get("exit_status")

    def __reduce__(self) -> Any:
        return (type(self), (self.future_id, self.failure))


ERRORS: Dict[str, Type[FuturedError]] = {
    "bad_message": BadMessage,
    "bad_request": BadRequest,
    "bad_version": BadVersion,
    "unknown_op": UnknownOp,
    "unknown_field": UnknownField,
    "unknown_kind": UnknownKind,
    "bad_args": BadArgs,
    "bad_url": BadUrl,
    "too_large": TooLarge,
    "too_many": TooMany,
    "queue_full": QueueFull,
    "quota_exceeded": QuotaExceeded,
    "too_many_deferred": TooManyDeferred,
    "not_done": NotDone,
    "shutting_down": ShuttingDown,
    "out_of_memory": OutOfMemory,
    "unreachable": Unreachable,
    "expired": Expired,
    "unknown": UnknownFuture,
}


def error_from_reply(error: Mapping[str, Any]) -> FuturedError:
    """The exception for a reply's `error` map ({code, message[, field][, index]})."""
    code = str(error.get("code", ""))
    cls = ERRORS.get(code, FuturedError)
    return cls(code, str(error.get("message", "")), field=error.get("field"),
               index=error.get("index"))


def outcome_exception(future_id: Optional[int], outcome: Mapping[str, Any]) -> Optional[BaseException]:
    """What result() raises for a finished future's outcome ({state, result | failure}), or None
    for `done`: JobFailed, CancelledError, Expired or UnknownFuture. An unfinished state
    (`pending`, `running`) gives NotDone."""
    state = outcome.get("state")
    if state == "done":
        return None
    if state == "failed":
        return JobFailed(future_id, outcome.get("failure") or {})
    if state == "cancelled":
        return CancelledError(f"future {future_id} was cancelled")
    if state == "expired":
        return Expired("expired", f"future {future_id}: its result was released or expired")
    if state == "unknown":
        return UnknownFuture("unknown", f"future {future_id} was never issued")
    return NotDone("not_done", f"future {future_id} is {state}")
