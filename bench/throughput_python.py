#!/usr/bin/python3
"""The Python contender of the throughput benchmark: trivial calls through
concurrent.futures.ThreadPoolExecutor, in-process.

Submits N calls (--jobs, default 200,000) of a no-op function (it returns None at once) to a
ThreadPoolExecutor of W threads (--workers, default min(32, os.cpu_count() + 4): the size of
futured's default thread pool on the same machine, and Python's own default since 3.8, given
explicitly here), all from the main thread, then calls result() on every future in submission
order: each call is submitted, run and its result fetched, the end-to-end path that
bench-throughput measures through futured. The timer starts before the executor is created and
stops when the last result is in (the shutdown that joins the idle threads is not timed). Prints
machine-readable `key value` lines for bench/run: jobs, workers, seconds, jobs_per_s. Exit status
1 if a result is not the no-op's None.

Usage: bench/throughput_python.py [--jobs N] [--workers W]
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def noop():
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--jobs', type=int, default=200_000)
    ap.add_argument('--workers', type=int, default=min(32, (os.cpu_count() or 1) + 4))
    args = ap.parse_args()
    if args.jobs < 1 or args.workers < 1:
        ap.error('--jobs and --workers take a positive number')

    wrong = 0
    t0 = time.perf_counter()
    executor = ThreadPoolExecutor(max_workers=args.workers)
    futures = [executor.submit(noop) for _ in range(args.jobs)]
    for future in futures:
        if future.result() is not None:
            wrong += 1
    wall = time.perf_counter() - t0
    executor.shutdown()
    if wrong:
        print(f'throughput_python: {wrong} results were not None', file=sys.stderr)
    print(f'jobs {args.jobs}')
    print(f'workers {args.workers}')
    print(f'seconds {wall:.6f}')
    print(f'jobs_per_s {args.jobs / wall:.0f}')
    return 1 if wrong else 0


if __name__ == '__main__':
    sys.exit(main())
