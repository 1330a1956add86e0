#!/usr/bin/python3
"""The Python contender of the primes benchmark: Fluent Python's proc_pool, written with
concurrent.futures.ProcessPoolExecutor.

Checks the numbers of tests/data/primes.tsv (path as argument) with the classic is_prime (2, then
odd trial divisors up to math.isqrt(n)) in a ProcessPoolExecutor of 2 processes (--processes N),
one job per number, and prints the results in completion order, the total time, then
machine-readable `key value` lines for bench/run (wall_s, processes, numbers). The timer starts
before the executor is created (its processes are part of the cost, as fork is for the floor) and
stops when the last result is in. Exit status 1 if an answer disagrees with the file.

Usage: bench/primes_pool.py PRIMES.TSV [--processes N]
"""

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n == 2:
        return True
    if n % 2 == 0:
        return False

    root = math.isqrt(n)
    for i in range(3, root + 1, 2):
        if n % i == 0:
            return False
    return True


def check(n: int) -> tuple[int, bool, float]:
    t0 = time.perf_counter()
    res = is_prime(n)
    return n, res, time.perf_counter() - t0


def read_numbers(path: str) -> list[tuple[int, bool]]:
    numbers = []
    with open(path) as f:
        next(f)  # header
        for line in f:
            if not line.strip() or line.startswith('#'):
                continue
            n, prime, _factor = line.split()
            numbers.append((int(n), prime == 'true'))
    return numbers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('tsv')
    ap.add_argument('--processes', type=int, default=2)
    args = ap.parse_args()
    numbers = read_numbers(args.tsv)
    expect = dict(numbers)

    print(f'Checking {len(numbers)} numbers with {args.processes} processes:', flush=True)
    wrong = 0
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.processes) as executor:
        futures = [executor.submit(check, n) for n, _ in numbers]
        for future in as_completed(futures):
            n, prime, elapsed = future.result()
            label = 'P' if prime else ' '
            print(f'{n:16}  {label} {elapsed:9.6f}s', flush=True)
            if prime != expect[n]:
                print(f'primes_pool: {n}: is_prime says {prime}, the file disagrees',
                      file=sys.stderr)
                wrong += 1
    wall = time.perf_counter() - t0
    print(f'Total time: {wall:.2f}s')
    print(f'wall_s {wall:.6f}')
    print(f'processes {args.processes}')
    print(f'numbers {len(numbers)}')
    return 1 if wrong else 0


if __name__ == '__main__':
    sys.exit(main())
