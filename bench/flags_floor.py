#!/usr/bin/python3
"""A raw client for the downloads benchmark: the least a client can do per fetch on a new connection.

Fetches BASE/{cc}/{cc}.gif for every code AA..ZZ (676) on one asyncio event loop, at most M at
once (--max-req, default 30), each over its own new TCP connection (as urllib does; futured
reuses its connections) with a hand-written `GET ... HTTP/1.1` + `Connection: close`, reading the
status line and discarding the body: no HTTP library, no threads, no files. What it measures is
mostly the server and the kernel's TCP on this machine with a connection per fetch.
Prints `key value` lines for bench/run: wall_s, ok, not_found, errors, max_req. Exit status 1 if
a status other than 200/404 came back or a connection failed.

Usage: bench/flags_floor.py --base-url URL [--max-req M]
"""

import argparse
import asyncio
import string
import sys
import time
from urllib.parse import urlsplit


async def fetch_status(host: str, port: int, path: str, sem: asyncio.Semaphore) -> int:
    async with sem:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f'GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n'
                         f'Connection: close\r\n\r\n'.encode())
            data = await reader.read()
        finally:
            writer.close()
        try:
            return int(data.split(b' ', 2)[1])
        except (IndexError, ValueError):
            return 0


async def main_async(base: str, max_req: int) -> tuple[float, list[int]]:
    u = urlsplit(base)
    host, port, prefix = u.hostname, u.port or 80, u.path.rstrip('/')
    codes = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
    sem = asyncio.Semaphore(max_req)
    t0 = time.perf_counter()
    statuses = await asyncio.gather(*(fetch_status(host, port, f'{prefix}/{cc}/{cc}.gif', sem)
                                      for cc in codes), return_exceptions=True)
    wall = time.perf_counter() - t0
    return wall, [s if isinstance(s, int) else 0 for s in statuses]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--base-url', required=True)
    ap.add_argument('--max-req', type=int, default=30)
    args = ap.parse_args()
    wall, statuses = asyncio.run(main_async(args.base_url, args.max_req))
    ok = statuses.count(200)
    not_found = statuses.count(404)
    errors = len(statuses) - ok - not_found
    print(f'wall_s {wall:.6f}')
    print(f'ok {ok}')
    print(f'not_found {not_found}')
    print(f'errors {errors}')
    print(f'max_req {args.max_req}')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
