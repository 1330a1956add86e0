"""futured for Python: concurrent.futures backed by the futured daemon.

- futured.Client: a synchronous client of the whole wire protocol (thread-safe: one socket per
  thread).
- futured.Executor: a concurrent.futures.Executor; submit(futured.kinds.prime, 7) returns a
  concurrent.futures.Future (a futured.Future) completed from the daemon's events.
- futured.kinds: stubs for the daemon's job kinds (prime, sleep, noop, download, ...).
- futured.aio: an asyncio client.
- Errors: futured.FuturedError (with .code) and a subclass per protocol error code; JobFailed
  for a job that failed.

See docs/PYTHON.md in the futured source tree.
"""

from . import aio, kinds
from ._errors import (BadArgs, BadMessage, BadRequest, BadUrl, BadVersion, Expired, FuturedError,
                      JobFailed, NotDone, OutOfMemory, QueueFull, QuotaExceeded, ShuttingDown,
                      TooLarge, TooMany, TooManyDeferred, UnknownField, UnknownFuture,
                      UnknownKind, UnknownOp, Unreachable)
from ._job import Job, Kind
from .client import PROTOCOL_VERSION, Client, default_endpoint
from .executor import Executor, Future

__version__ = "0.1.0"

__all__ = [
    "Client", "Executor", "Future", "Job", "Kind", "kinds", "aio", "default_endpoint",
    "PROTOCOL_VERSION", "FuturedError", "BadMessage", "BadRequest", "BadVersion", "UnknownOp",
    "UnknownField", "UnknownKind", "BadArgs", "BadUrl", "TooLarge", "TooMany", "QueueFull",
    "QuotaExceeded", "TooManyDeferred", "NotDone", "ShuttingDown", "OutOfMemory", "Unreachable",
    "JobFailed", "Expired", "UnknownFuture",
]
