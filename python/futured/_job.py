"""Job descriptions: Job (a kind, its arguments, its options) and Kind (a named stub for a kind).

Arguments are kept as the caller gave them, positional and by name; a Client turns them into the
wire's `args` map with the parameter order of the daemon's `hello` (see Client.job_map), so that
`Job("prime", (7,))` and `Job("prime", kwargs={"n": 7})` are the same job.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Tuple, Union

__all__ = ["Job", "Kind", "as_job", "JobSpec"]


@dataclasses.dataclass(frozen=True)
class Job:
    """One job to submit: `kind`, its arguments (`args` positional in the order of the kind's
    parameters, `kwargs` by name) and the job options of docs/PROTOCOL.md (`priority`
    -1000..1000, `timeout` seconds of running time, `group` and `group_limit`, `retries`).
    None leaves an option to the daemon's default. `with_options()` returns a changed copy."""

    kind: str
    args: Tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    priority: int = 0
    timeout: Optional[float] = None
    group: Optional[str] = None
    group_limit: Optional[int] = None
    retries: Optional[int] = None

    def with_options(self, **options: Any) -> "Job":
        """A copy with some of priority, timeout, group, group_limit, retries changed."""
        bad = set(options) - {"priority", "timeout", "group", "group_limit", "retries"}
        if bad:
            raise TypeError(f"not a job option: {', '.join(sorted(bad))}")
        return dataclasses.replace(self, **options)


class Kind:
    """A stub for one job kind of the daemon, usable where concurrent.futures expects a function:
    `executor.submit(futured.kinds.prime, 7)`, `executor.map(futured.kinds.sleep, [0.1, 0.2])`.

    `kind.job(*args, **kwargs)` makes a Job (to add options: `.with_options(priority=5)`).
    Calling the stub itself, `futured.kinds.prime(7)`, runs the job on the daemon at the default
    endpoint ($FUTURED_ENDPOINT, else the daemon's default) and returns its result map: one
    connection and one round trip per call, for scripts and the interactive prompt."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def job(self, *args: Any, **kwargs: Any) -> Job:
        return Job(self.name, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .client import Client

        with Client() as c:
            return c.run(self.job(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<futured kind {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Kind) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("futured.Kind", self.name))


# What submit() and map() accept as their first argument.
JobSpec = Union[str, Kind, Job, Callable[..., Job]]


def as_job(fn: JobSpec, args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> Job:
    """The Job that `submit(fn, *args, **kwargs)` means: fn is a kind name, a Kind stub, a Job
    (then without further arguments), or a function that builds a Job from the arguments (to
    adapt an argument's shape or add options: `lambda cc: kinds.download.job(base + cc)`)."""
    if isinstance(fn, str):
        return Job(fn, args, kwargs)
    if isinstance(fn, Kind):
        return Job(fn.name, args, kwargs)
    if isinstance(fn, Job):
        if args or kwargs:
            raise TypeError("a Job takes no further arguments")
        return fn
    if callable(fn):
        job = fn(*args, **kwargs)
        if not isinstance(job, Job):
            raise TypeError(f"{fn!r} returned {type(job).__name__}, not a futured.Job: futured "
                            f"runs kinds of the daemon, not Python functions")
        return job
    raise TypeError(f"not a kind, a Job or a function making a Job: {fn!r}")
