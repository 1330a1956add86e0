"""Stubs for the daemon's job kinds: `futured.kinds.prime`, `.sleep`, `.noop`, `.download`, and
any other name (`futured.kinds.whatever` is `Kind("whatever")`; the daemon's `hello` decides
whether it exists). See docs/PROTOCOL.md "Job kinds" for their parameters, in positional order:

- prime(n, method="trial")            -> {n, is_prime, smallest_factor, elapsed}
- sleep(seconds)                      -> {seconds}
- noop()                              -> {}
- download(url, path=None, inline=None, timeout=3.1, max_bytes=..., max_redirects=5)
                                      -> {url, status, http_status, bytes, content_type, elapsed,
                                          path | body}
"""

from __future__ import annotations

from ._job import Kind

__all__ = ["Kind", "prime", "sleep", "noop", "download"]

prime = Kind("prime")
sleep = Kind("sleep")
noop = Kind("noop")
download = Kind("download")


def __getattr__(name: str) -> Kind:
    if name.startswith("_"):
        raise AttributeError(name)
    return Kind(name)
