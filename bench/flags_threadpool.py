#!/usr/bin/python3
"""The Python contender of the downloads benchmark: Fluent Python's flags2_threadpool, on the
standard library only.

Fetches BASE/{cc}/{cc}.gif for every code AA..ZZ (676) with a ThreadPoolExecutor of 30 threads
(--workers N) and urllib.request, saves each flag found as DEST/{CC}.gif, and tallies the outcomes
as flags2 does: ok (HTTP 200), not found (HTTP 404), errors (anything else). Prints the tally, the
elapsed time, then machine-readable `key value` lines for bench/run (wall_s, ok, not_found,
errors, requested, workers). The timer starts before the executor is created and stops when the
last download is in. Exit status 1 if any download failed.

Usage: bench/flags_threadpool.py --base-url URL --dest DIR [--workers N] [--timeout S]
"""

import argparse
import os
import string
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed

OK, NOT_FOUND, ERROR = 'ok', 'not_found', 'error'


def get_flag(base_url: str, cc: str, timeout: float) -> bytes | None:
    url = f'{base_url}/{cc}/{cc}.gif'.lower()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def download_one(base_url: str, cc: str, dest: str, timeout: float) -> str:
    image = get_flag(base_url, cc, timeout)
    if image is None:
        return NOT_FOUND
    with open(os.path.join(dest, f'{cc}.gif'), 'wb') as f:
        f.write(image)
    return OK


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--base-url', required=True)
    ap.add_argument('--dest', required=True)
    ap.add_argument('--workers', type=int, default=30)
    ap.add_argument('--timeout', type=float, default=3.1)
    args = ap.parse_args()
    os.makedirs(args.dest, exist_ok=True)
    codes = [a + b for a in string.ascii_uppercase for b in string.ascii_uppercase]

    counter: Counter[str] = Counter()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as executor:
        futures = {executor.submit(download_one, args.base_url, cc, args.dest, args.timeout): cc
                   for cc in codes}
        for future in as_completed(futures):
            try:
                status = future.result()
            except Exception as exc:  # noqa: BLE001 - tally, as flags2 does
                print(f'{futures[future]} error: {exc}', file=sys.stderr)
                status = ERROR
            counter[status] += 1
    wall = time.perf_counter() - t0

    print('--------------------')
    print(f'{counter[OK]:3} flags downloaded.')
    if counter[NOT_FOUND]:
        print(f'{counter[NOT_FOUND]:3} not found.')
    if counter[ERROR]:
        print(f'{counter[ERROR]:3} errors.')
    print(f'Elapsed time: {wall:.2f}s')
    print(f'wall_s {wall:.6f}')
    print(f'ok {counter[OK]}')
    print(f'not_found {counter[NOT_FOUND]}')
    print(f'errors {counter[ERROR]}')
    print(f'requested {len(codes)}')
    print(f'workers {args.workers}')
    return 1 if counter[ERROR] else 0


if __name__ == '__main__':
    sys.exit(main())
