#!/usr/bin/python3
"""proc_pool.py: Fluent Python's prime checker (2nd ed., chapter 20), with
futures.ProcessPoolExecutor replaced by futured.Executor: the numbers are checked by the
daemon's process pool (the `prime` kind) instead of by processes this script forks.

The lines that changed from the original are marked `# futured`. Usage: proc_pool.py
(the daemon at $FUTURED_ENDPOINT, else at its default endpoint).
"""

import sys
from time import perf_counter
from typing import NamedTuple

import futured  # futured: instead of `from concurrent import futures`

NUMBERS = [
    2, 142702110479723, 299593572317531, 3333333333333301, 3333333333333333,
    3333335652092209, 4444444444444423, 4444444444444444, 4444444488888889,
    5555553133149889, 5555555555555503, 5555555555555555, 6666666666666666,
    6666666666666719, 6666667141414921, 7777777536340681, 7777777777777753,
    7777777777777777, 9999999999999917, 9999999999999999,
]


class PrimeResult(NamedTuple):
    n: int
    flag: bool
    elapsed: float


def check(r: dict) -> PrimeResult:  # futured: is_prime ran in the daemon; r is its result
    return PrimeResult(r['n'], r['is_prime'], r['elapsed'])


def main() -> None:
    executor = futured.Executor()  # futured: the pool is the daemon's
    actual_workers = executor.client.info['processes']  # futured: from the daemon's hello

    print(f'Checking {len(NUMBERS)} numbers with {actual_workers} processes:')

    t0 = perf_counter()

    numbers = sorted(NUMBERS, reverse=True)
    with executor:
        for n, prime, elapsed in map(check, executor.map(futured.kinds.prime, numbers)):  # futured
            label = 'P' if prime else ' '
            print(f'{n:16}  {label} {elapsed:9.6f}s')

    time = perf_counter() - t0
    print(f'Total time: {time:.2f}s')


if __name__ == '__main__':
    sys.exit(main())
