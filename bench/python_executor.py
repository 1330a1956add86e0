#!/usr/bin/python3
"""The python benchmark: futured.Executor against the standard library's executors, in one run.

1. Trivial jobs: N (default 100,000) `noop` jobs through futured.Executor, with map() and with
   submit() + as_completed(), against the same N calls of a no-op function through
   ThreadPoolExecutor() and ProcessPoolExecutor() (default sizes) the same two ways. Each timer
   starts before the executor is created and stops when the last result is in.
2. CPU-bound: the 20 numbers of tests/data/primes.tsv, futured.Executor.map of the `prime` kind
   (the daemon's process pool) against ProcessPoolExecutor(P).map of the classic is_prime (P:
   the daemon's process-pool size).

Contenders alternate within each round; the best round of each is kept. Prints progress, then
`key value` lines for bench/run: jobs, rounds, and jobs_per_s / seconds of every contender.

Usage: bench/python_executor.py [--connect ENDPOINT] [--jobs N] [--rounds R] [--prime-rounds R]
(the daemon at ENDPOINT, else $FUTURED_ENDPOINT, else the default endpoint).
"""

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'python'))

import futured  # noqa: E402
from primes_pool import is_prime  # noqa: E402  (the classic function, one copy)

PRIMES_TSV = os.path.join(ROOT, 'tests', 'data', 'primes.tsv')


def noop(_=None):
    return None


def noop_job(_):
    return futured.kinds.noop.job()


def run_futured(endpoint, how, n):
    t0 = time.perf_counter()
    with futured.Executor(endpoint) as ex:
        if how == 'map':
            got = sum(1 for r in ex.map(noop_job, range(n)) if r == {})
        else:
            fs = [ex.submit(futured.kinds.noop) for _ in range(n)]
            got = sum(1 for f in as_completed(fs) if f.result() == {})
        wall = time.perf_counter() - t0
    if got != n:
        raise SystemExit(f'futured {how}: {got} of {n} results')
    return wall


def run_stdlib(cls, how, n):
    t0 = time.perf_counter()
    with cls() as ex:
        if how == 'map':
            got = sum(1 for r in ex.map(noop, range(n)) if r is None)
        else:
            fs = [ex.submit(noop) for _ in range(n)]
            got = sum(1 for f in as_completed(fs) if f.result() is None)
        wall = time.perf_counter() - t0
    if got != n:
        raise SystemExit(f'{cls.__name__} {how}: {got} of {n} results')
    return wall


def read_primes():
    rows = []
    with open(PRIMES_TSV) as f:
        next(f)
        for line in f:
            if line.strip() and not line.startswith('#'):
                n, p = line.split()[:2]
                rows.append((int(n), p == 'true'))
    return rows


def primes_futured(endpoint, rows):
    t0 = time.perf_counter()
    with futured.Executor(endpoint) as ex:
        got = [(r['n'], r['is_prime']) for r in ex.map(futured.kinds.prime, [n for n, _ in rows])]
    wall = time.perf_counter() - t0
    if got != rows:
        raise SystemExit('futured primes: wrong answers')
    return wall


def primes_pool(processes, rows):
    t0 = time.perf_counter()
    with ProcessPoolExecutor(processes) as ex:
        got = list(zip([n for n, _ in rows], ex.map(is_prime, [n for n, _ in rows])))
    wall = time.perf_counter() - t0
    if got != rows:
        raise SystemExit('ProcessPoolExecutor primes: wrong answers')
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--connect', default=None)
    ap.add_argument('--jobs', type=int, default=100_000)
    ap.add_argument('--rounds', type=int, default=1)
    ap.add_argument('--prime-rounds', type=int, default=2)
    args = ap.parse_args()
    endpoint = args.connect or futured.default_endpoint()
    with futured.Client(endpoint) as c:
        processes = c.info['processes']
        print(f'{c.server} at {endpoint}: {c.info["threads"]} threads, {processes} processes; '
              f'{os.cpu_count()} CPUs; {args.jobs:,} trivial jobs', flush=True)

    contenders = [
        ('futured_map', lambda: run_futured(endpoint, 'map', args.jobs)),
        ('futured_submit', lambda: run_futured(endpoint, 'submit', args.jobs)),
        ('thread_map', lambda: run_stdlib(ThreadPoolExecutor, 'map', args.jobs)),
        ('thread_submit', lambda: run_stdlib(ThreadPoolExecutor, 'submit', args.jobs)),
        ('process_map', lambda: run_stdlib(ProcessPoolExecutor, 'map', args.jobs)),
        ('process_submit', lambda: run_stdlib(ProcessPoolExecutor, 'submit', args.jobs)),
    ]
    best = {}
    for r in range(args.rounds):
        line = []
        for name, fn in contenders:
            t = fn()
            best[name] = min(best.get(name, t), t)
            line.append(f'{name} {args.jobs / t:,.0f}/s')
        print(f'round {r + 1}: ' + ', '.join(line), flush=True)

    rows = read_primes()
    pbest = {}
    for r in range(args.prime_rounds):
        f = primes_futured(endpoint, rows)
        p = primes_pool(processes, rows)
        pbest['futured'] = min(pbest.get('futured', f), f)
        pbest['process'] = min(pbest.get('process', p), p)
        print(f'primes round {r + 1}: futured {f:.3f} s, ProcessPoolExecutor({processes}) '
              f'{p:.3f} s', flush=True)

    print(f'jobs {args.jobs}')
    print(f'rounds {args.rounds}')
    print(f'processes {processes}')
    for name, t in best.items():
        print(f'{name}_jobs_per_s {args.jobs / t:.0f}')
        print(f'{name}_s {t:.6f}')
    print(f'primes_futured_s {pbest["futured"]:.6f}')
    print(f'primes_process_s {pbest["process"]:.6f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
