#!/usr/bin/env python3
"""A small futured client, written from docs/PROTOCOL.md alone (pyzmq and msgpack).

As a library:

    from futured_client import Futured, FuturedError

    with Futured("ipc:///run/futured/futured.sock") as fd:
        ids = fd.submit_many([{"kind": "prime", "args": {"n": n}} for n in (7, 91)])
        done, not_done = fd.wait(ids, mode="all", timeout=60)
        for fid in done:
            print(fd.result(fid))           # the kind's result map, or raises FuturedError

As a program it checks the classic prime numbers: it submits every number of a primes.tsv file
(n, is_prime[, smallest_factor]) as a `prime` job, waits with each of the three wait modes,
compares every result with the file and exits 0 only if all agree:

    futured_client.py [--connect ENDPOINT] [PRIMES_TSV]
"""
import argparse
import itertools
import os
import pathlib
import sys
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1


class FuturedError(Exception):
    """An error reply (`code` from the spec's error codes, e.g. "bad_args", "not_done"), or a
    future that did not end `done` when its result was asked for (`code` is then the failure's
    code, e.g. "worker_died", or the state: "cancelled", "expired", "unknown")."""

    def __init__(self, code, message, field=None, index=None, state=None, failure=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field          # the offending request field, when the daemon names one
        self.index = index          # the offending job of a batch, when the daemon names one
        self.state = state          # for results: the future's state
        self.failure = failure      # for failed futures: the whole failure map


def default_endpoint():
    """The daemon's default endpoint (PROTOCOL.md, Transport)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.geteuid() != 0 and runtime.startswith("/"):
        return f"ipc://{runtime}/futured/futured.sock"
    return "ipc:///run/futured/futured.sock"


class Futured:
    """A connection to futured: one DEALER socket, one request at a time (not thread-safe).

    `reply_timeout` bounds how long a call waits for its reply on top of the request's own
    `timeout` (for wait and result); None waits forever. A call that times out raises
    TimeoutError, and its reply, should it come later, is dropped."""

    def __init__(self, endpoint=None, reply_timeout=30.0, context=None):
        self.endpoint = endpoint or default_endpoint()
        if self.endpoint.startswith("ipc://") and not os.path.exists(self.endpoint[6:]):
            raise ConnectionError(f"no futured socket at {self.endpoint}")
        self.reply_timeout = reply_timeout
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(self.endpoint)
        self._ids = itertools.count(1)

    def close(self):
        self._sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the wire -----------------------------------------------------------------------------

    def call(self, op, wait_seconds=0.0, **fields):
        """Sends one request and returns its reply's fields (without v, id and ok). Raises
        FuturedError for an error reply. `wait_seconds` is how long the daemon may hold the reply
        on purpose (a wait's or a result's timeout; None: as long as it takes)."""
        rid = next(self._ids)
        self._sock.send(msgpack.packb({"v": PROTOCOL_VERSION, "id": rid, "op": op, **fields}))
        if self.reply_timeout is None or wait_seconds is None:
            deadline = None
        else:
            deadline = time.monotonic() + wait_seconds + self.reply_timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sock.poll(None if left is None else int(left * 1000) + 1):
                raise TimeoutError(f"no reply to {op} from futured at {self.endpoint}")
            reply = msgpack.unpackb(self._sock.recv())
            if reply.get("id") == rid:
                break
            # A late reply to an earlier call that timed out: not ours, drop it.
        if not reply["ok"]:
            err = reply["error"]
            raise FuturedError(err["code"], err["message"], err.get("field"), err.get("index"))
        return {k: v for k, v in reply.items() if k not in ("v", "id", "ok")}

    # --- the operations -----------------------------------------------------------------------

    def hello(self):
        return self.call("hello")

    def submit(self, kind, args=None, **options):
        """Submits one job; `options` are the job fields priority, timeout, group, group_limit,
        retries. Returns its future ID."""
        job = {"kind": kind, **options}
        if args is not None:
            job["args"] = args
        return self.submit_many([job])[0]

    def submit_many(self, jobs):
        """Submits a batch of job maps (all or nothing). Returns their future IDs, in order."""
        return self.call("submit", jobs=list(jobs))["ids"]

    def status(self, ids):
        return self.call("status", ids=list(ids))["states"]

    def wait(self, ids, mode="all", timeout=None):
        """Waits as concurrent.futures.wait does; `mode` is "all", "first_completed" or
        "first_exception". Returns (done, not_done), lists of IDs in request order."""
        fields = {"ids": list(ids), "mode": mode}
        if timeout is not None:
            fields["timeout"] = float(timeout)
        r = self.call("wait", wait_seconds=timeout, **fields)
        return r["done"], r["not_done"]

    def outcome(self, future, timeout=None):
        """The finished future's reply: {"state": ..., "result": ...} or {"state": "failed",
        "failure": {...}}, etc. Raises FuturedError("not_done") if it is not finished in time."""
        fields = {"future": future}
        if timeout is not None:
            fields["timeout"] = float(timeout)
        return self.call("result", wait_seconds=timeout, **fields)

    def result(self, future, timeout=None):
        """The result map of a `done` future, as Future.result(): anything else raises
        FuturedError (failed: the failure's code; cancelled, expired, unknown: the state)."""
        r = self.outcome(future, timeout)
        state = r["state"]
        if state == "done":
            return r["result"]
        if state == "failed":
            f = r["failure"]
            raise FuturedError(f["code"], f["message"], state=state, failure=f)
        raise FuturedError(state, f"future {future} is {state}", state=state)

    def cancel(self, ids):
        return self.call("cancel", ids=list(ids))["cancelled"]

    def release(self, ids):
        return self.call("release", ids=list(ids))["released"]

    def list(self, state=None, after=0, limit=100):
        """One page: (futures, more). Continue with after = the last ID while `more`."""
        fields = {"after": after, "limit": limit}
        if state is not None:
            fields["state"] = state
        r = self.call("list", **fields)
        return r["futures"], r["more"]

    def stats(self):
        return self.call("stats")["stats"]


# --- the prime checker ------------------------------------------------------------------------

def read_primes(path):
    """[(n, is_prime, smallest_factor or None)] from a tab-separated file with a header line."""
    rows = []
    for line in pathlib.Path(path).read_text().splitlines():
        cols = line.split("\t")
        if not line.strip() or line.startswith("#") or not cols[0].strip().isdigit():
            continue  # blank, comment or header
        n = int(cols[0])
        is_prime = cols[1].strip().lower() in ("true", "1", "yes", "p")
        factor = int(cols[2]) if len(cols) > 2 and cols[2].strip() else None
        rows.append((n, is_prime, factor))
    return rows


def check_primes(fd, rows, timeout):
    """Runs every row as a prime job; returns the list of disagreements (empty: all agree)."""
    hello = fd.hello()
    limits = hello["limits"]
    print(f"connected to {hello['server']} at {fd.endpoint}: {hello['processes']} processes, "
          f"{hello['threads']} threads")
    if not any(k["name"] == "prime" for k in hello["kinds"]):
        return ["the daemon has no prime kind"]

    if len(rows) > min(limits["max_batch"], limits["max_ids"]):
        return [f"{len(rows)} numbers: this checker sends them in one batch and one wait, "
                f"so at most {min(limits['max_batch'], limits['max_ids'])}"]

    t0 = time.monotonic()
    ids = fd.submit_many({"kind": "prime", "args": {"n": n}} for n, _, _ in rows)
    print(f"submitted {len(ids)} prime jobs")

    # The three wait modes, as concurrent.futures.wait: until the first job finishes, then until
    # every job has finished unless one fails first, then until every job has finished.
    for mode in ("first_completed", "first_exception", "all"):
        done, not_done = fd.wait(ids, mode=mode, timeout=timeout)
        print(f"wait {mode:<15} -> {len(done):2d} done, {len(not_done):2d} not done "
              f"after {time.monotonic() - t0:.2f} s")
        if not done:
            return [f"wait {mode}: nothing finished within {timeout} s"]
    if not_done:
        return [f"{len(not_done)} jobs not finished within {timeout} s"]

    problems = []
    for (n, is_prime, factor), fid in zip(rows, ids):
        try:
            r = fd.result(fid, timeout=0)
        except FuturedError as e:
            problems.append(f"{n}: future {fid} {e}")
            continue
        got = (r["n"], r["is_prime"], r["smallest_factor"])
        want = (n, is_prime, factor if factor is not None else r["smallest_factor"])
        verdict = "ok" if got == want else "MISMATCH"
        print(f"{n:>20}  {'prime' if r['is_prime'] else 'composite':<9}  "
              f"smallest factor {r['smallest_factor']:<20}  {r['elapsed']:.3f} s  {verdict}")
        if got != want:
            problems.append(f"{n}: daemon says is_prime={r['is_prime']} smallest_factor="
                            f"{r['smallest_factor']}, the file says is_prime={is_prime}"
                            + (f" smallest_factor={factor}" if factor is not None else ""))
    fd.release(ids)
    return problems


def main(argv=None):
    repo = pathlib.Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description="Check primes.tsv against a running futured.")
    ap.add_argument("--connect", metavar="ENDPOINT", default=None,
                    help=f"futured's endpoint (default: {default_endpoint()})")
    ap.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                    help="how long to wait for the jobs (default: 300)")
    ap.add_argument("--reply-timeout", type=float, default=10.0, metavar="SECONDS",
                    help="how long to wait for any reply beyond that (default: 10)")
    ap.add_argument("primes", nargs="?", default=str(repo / "tests" / "data" / "primes.tsv"),
                    help="the numbers, as n<TAB>is_prime[<TAB>smallest_factor] "
                         "(default: tests/data/primes.tsv)")
    args = ap.parse_args(argv)

    try:
        rows = read_primes(args.primes)
    except OSError as e:
        print(f"futured_client: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"futured_client: no numbers in {args.primes}", file=sys.stderr)
        return 2
    try:
        with Futured(args.connect, reply_timeout=args.reply_timeout) as fd:
            problems = check_primes(fd, rows, args.timeout)
    except (ConnectionError, TimeoutError, FuturedError) as e:
        print(f"futured_client: {e}", file=sys.stderr)
        return 2
    if problems:
        for p in problems:
            print(f"futured_client: {p}", file=sys.stderr)
        print(f"{len(rows) - len(problems)}/{len(rows)} agree with {args.primes}")
        return 1
    print(f"{len(rows)}/{len(rows)} agree with {args.primes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
