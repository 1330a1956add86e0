#!/usr/bin/python3
"""bench/store_recovery.py: two figures of the SQLite store, each on a fresh state directory.

    store_recovery.py --futured PATH --worker PATH [--retained N] [--pending N] [--cycles N]

recovery: fills a store with N retained (finished) noop futures and N pending sleeps (one thread,
so the sleeps stay pending), kills futured with SIGKILL, starts it again and measures the time
from exec to its first answer, and the recovery time futured logs.
size: runs N submit-and-release cycles of noop jobs (batches of 1,000) and reports the file's
size (database + WAL) at the end, and its largest along the way.

Prints `key value` lines."""
import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import msgpack
import zmq


class Daemon:
    def __init__(self, args, state, *options):
        self.dir = os.path.dirname(state)
        self.endpoint = f'ipc://{self.dir}/futured.sock'
        self.log = open(os.path.join(self.dir, 'futured.log'), 'a+')
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([args.futured, '--listen', self.endpoint, '--events',
                                      f'ipc://{self.dir}/events.sock', '--worker', args.worker,
                                      '--state-dir', state, '--retain', '86400',
                                      # one principal keeps 1,100,000 futures: past the
                                      # per-principal defaults and --max-retained's
                                      '--quota-retained', '0', '--quota-pending', '0',
                                      '--max-retained', '0', *options],
                                     stdout=self.log, stderr=self.log)
        self.ctx = zmq.Context()
        self.s = self.ctx.socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.connect(self.endpoint)
        self.next = 1
        self.rq('hello', timeout=120)
        self.ready = time.perf_counter() - self.t0

    def rq(self, op, timeout=60, **fields):
        rid = self.next
        self.next += 1
        self.s.send(msgpack.packb({'v': 1, 'id': rid, 'op': op, **fields}))
        if not self.s.poll(int(timeout * 1000)):
            raise RuntimeError(f'no reply to {op}')
        r = msgpack.unpackb(self.s.recv(), strict_map_key=False)
        if not r['ok']:
            raise RuntimeError(f'{op}: {r["error"]}')
        return r

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(120)
        self.s.close()
        self.ctx.term()


def size(state):
    return sum(os.path.getsize(os.path.join(state, f)) for f in os.listdir(state)
               if f.startswith('futured.db'))


def recovery(args, tmp):
    state = os.path.join(tmp, 'state')
    d = Daemon(args, state, '--threads', '1', '--prefetch', '0')
    last = None
    for _ in range(args.retained // 10000):
        last = d.rq('submit', jobs=[{'kind': 'noop'}] * 10000)['ids']
    d.rq('wait', ids=last, timeout=600)
    for _ in range(args.pending // 10000):
        d.rq('submit', jobs=[{'kind': 'sleep', 'args': {'seconds': 3600}}] * 10000)
    st = d.rq('stats')['stats']
    time.sleep(1)  # let the last batch commit
    d.stop(signal.SIGKILL)
    print(f'recovery_retained {st["done"]}')
    print(f'recovery_pending {st["pending"]}')
    print(f'recovery_file_bytes {size(state)}')
    d = Daemon(args, state, '--threads', '1', '--prefetch', '0')
    print(f'recovery_ready_s {d.ready:.3f}')
    st = d.rq('stats')['stats']
    print(f'recovery_recovered {st["done"] + st["pending"] + st["running"]}')
    d.log.seek(0)
    m = re.findall(r'futures in ([0-9.]+) s', d.log.read())
    if m:
        print(f'recovery_logged_s {m[-1]}')
    d.stop(signal.SIGKILL)


def cycles(args, tmp):
    state = os.path.join(tmp, 'state')
    d = Daemon(args, state)
    largest = 0
    for i in range(args.cycles // 1000):
        ids = d.rq('submit', jobs=[{'kind': 'noop'}] * 1000)['ids']
        d.rq('wait', ids=ids)
        d.rq('release', ids=ids)
        if i % 100 == 0:
            largest = max(largest, size(state))
    time.sleep(1)
    largest = max(largest, size(state))
    print(f'cycles {args.cycles}')
    print(f'cycles_file_bytes_end {size(state)}')
    print(f'cycles_file_bytes_max {largest}')
    d.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--futured', required=True)
    ap.add_argument('--worker', required=True)
    ap.add_argument('--retained', type=int, default=1_000_000)
    ap.add_argument('--pending', type=int, default=100_000)
    ap.add_argument('--cycles', type=int, default=2_000_000)
    args = ap.parse_args()
    for what in (recovery, cycles):
        tmp = tempfile.mkdtemp(prefix='futured-store-')
        try:
            what(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
