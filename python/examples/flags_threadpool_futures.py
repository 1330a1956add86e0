#!/usr/bin/python3
"""flags_threadpool_futures.py: Fluent Python's flag downloader with futures made visible (2nd
ed., chapter 20), with futures.ThreadPoolExecutor replaced by futured.Executor: each flag is a
`download` job of the daemon (its transfer pool fetches the URL and returns the body inline);
this script saves the bodies in its destination directory.

The lines that changed from the original are marked `# futured`. Usage:
    flags_threadpool_futures.py [--base-url URL] [--dest DIR]
(the daemon at $FUTURED_ENDPOINT, else at its default endpoint).
"""

import argparse
import time
from pathlib import Path

from concurrent import futures

import futured  # futured

POP20_CC = ('CN IN US ID BR PK NG BD RU JP MX PH VN ET EG DE IR TR CD FR').split()

BASE_URL = 'https://www.fluentpython.com/data/flags'
DEST_DIR = Path('downloaded')


def save_flag(img: bytes, filename: str) -> None:
    (DEST_DIR / filename).write_bytes(img)


def get_flag(cc: str) -> futured.Job:  # futured: a download job instead of httpx.get
    url = f'{BASE_URL}/{cc}/{cc}.gif'.lower()
    return futured.kinds.download.job(url, inline=True)


def download_many(cc_list: list[str]) -> int:
    cc_list = cc_list[:5]
    with futured.Executor() as executor:  # futured
        to_do: dict[futures.Future, str] = {}  # futured: a dict, to know each future's cc
        for cc in sorted(cc_list):
            future = executor.submit(get_flag, cc)  # futured: get_flag makes the job
            to_do[future] = cc
            print(f'Scheduled for {cc}: {future}')

        for count, future in enumerate(futures.as_completed(to_do), 1):
            res: str = to_do[future]
            save_flag(future.result()['body'], f'{res}.gif')  # futured: saved here
            print(f'{future} result: {res!r}')

    return count


def main(downloader) -> None:
    global BASE_URL, DEST_DIR
    ap = argparse.ArgumentParser(description='Download 5 of the 20 most populous flags.')
    ap.add_argument('--base-url', default=BASE_URL)
    ap.add_argument('--dest', default=str(DEST_DIR))
    args = ap.parse_args()
    BASE_URL, DEST_DIR = args.base_url, Path(args.dest)
    DEST_DIR.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    count = downloader(POP20_CC)
    elapsed = time.perf_counter() - t0
    print(f'\n{count} downloads in {elapsed:.2f}s')


if __name__ == '__main__':
    main(download_many)
