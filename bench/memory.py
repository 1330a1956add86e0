#!/usr/bin/python3
"""The memory benchmark: what one retained future costs futured.

Starts futured (--retain 86400, so nothing expires during the run) on a fresh ipc endpoint, reads
its VmRSS right after start-up (once `hello` answers), submits 1,000,000 `noop` jobs in batches of
10,000 (op `submit` with `jobs`; max_pending is 1,000,000), waits for all of them (op `wait`,
10,000 IDs per request, all requests in flight at once), checks with `stats` that every one is
`done` and retained, then reads VmRSS and VmHWM from /proc/PID/status. Prints `key value` lines for
bench/run:

  base_rss_kb, rss_kb, hwm_kb, futures, bytes_per_future ((rss - base) / futures),
  hwm_bytes_per_future ((hwm - base) / futures), submit_s, wait_s

Usage: bench/memory.py --futured PATH --worker PATH [--jobs N] [--batch N]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... of `pid` in kB."""
    out = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            key, _, rest = line.partition(':')
            if key.startswith('Vm') or key.startswith('Rss'):
                out[key] = int(rest.split()[0])
    return out


class Client:
    def __init__(self, ctx: zmq.Context, endpoint: str):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.next_id = 1

    def send(self, op: str, **fields) -> int:
        rid = self.next_id
        self.next_id += 1
        self.sock.send(msgpack.packb({'v': 1, 'id': rid, 'op': op, **fields}))
        return rid

    def recv(self, timeout_ms: int = 120_000) -> dict:
        if not self.sock.poll(timeout_ms):
            raise TimeoutError('futured did not answer')
        reply = msgpack.unpackb(self.sock.recv())
        if not reply['ok']:
            raise RuntimeError(f'futured refused request {reply["id"]}: {reply["error"]}')
        return reply

    def call(self, op: str, timeout_ms: int = 120_000, **fields) -> dict:
        self.send(op, **fields)
        return self.recv(timeout_ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--futured', required=True)
    ap.add_argument('--worker', required=True)
    ap.add_argument('--jobs', type=int, default=1_000_000)
    ap.add_argument('--batch', type=int, default=10_000)
    ap.add_argument('futured_args', nargs='*', help='more options for futured (after --)')
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix='futured-memory-')
    endpoint = f'ipc://{tmp}/futured.sock'
    log = open(os.path.join(tmp, 'futured.log'), 'w+')
    daemon = subprocess.Popen([args.futured, '--listen', endpoint, '--worker', args.worker,
                               '--retain', '86400', '--state-dir', os.path.join(tmp, 'state'),
                               *args.futured_args], stdout=log, stderr=log)
    ctx = zmq.Context()
    try:
        c = Client(ctx, endpoint)
        hello = c.call('hello', timeout_ms=10_000)
        time.sleep(0.2)  # let the worker processes it forks settle
        base = proc_status(daemon.pid)
        print(f'# futured pid {daemon.pid}, {hello["threads"]} threads, '
              f'{hello["processes"]} processes, max_pending {hello["limits"]["max_pending"]}',
              flush=True)

        batch = msgpack.packb([{'kind': 'noop'}] * args.batch)
        jobs = msgpack.unpackb(batch)
        ids: list[int] = []
        t0 = time.perf_counter()
        sent = received = 0
        n_batches = (args.jobs + args.batch - 1) // args.batch
        window = 4  # submits in flight
        while received < n_batches:
            while sent < n_batches and sent - received < window:
                size = min(args.batch, args.jobs - sent * args.batch)
                c.send('submit', jobs=jobs[:size])
                sent += 1
            reply = c.recv()
            ids.extend(reply['ids'])
            received += 1
        submit_s = time.perf_counter() - t0
        # Replies come in completion order; the IDs are still exactly the set submitted.
        ids.sort()

        t1 = time.perf_counter()
        for i in range(0, len(ids), 10_000):
            c.send('wait', ids=ids[i:i + 10_000])
        for _ in range(0, len(ids), 10_000):
            reply = c.recv(600_000)
            if reply['not_done']:
                raise RuntimeError(f'{len(reply["not_done"])} futures not done')
        wait_s = time.perf_counter() - t1

        stats = c.call('stats')['stats']
        after = proc_status(daemon.pid)
        if stats['done'] != args.jobs:
            raise RuntimeError(f'stats says {stats["done"]} done, expected {args.jobs}')

        grown = (after['VmRSS'] - base['VmRSS']) * 1024
        print(f'futures {args.jobs}')
        print(f'base_rss_kb {base["VmRSS"]}')
        print(f'rss_kb {after["VmRSS"]}')
        print(f'hwm_kb {after["VmHWM"]}')
        print(f'bytes_per_future {grown / args.jobs:.1f}')
        print(f'hwm_bytes_per_future {(after["VmHWM"] - base["VmRSS"]) * 1024 / args.jobs:.1f}')
        print(f'submit_s {submit_s:.3f}')
        print(f'wait_s {wait_s:.3f}')
        print(f'jobs_per_s {args.jobs / (submit_s + wait_s):.0f}')
        return 0
    except Exception as exc:  # noqa: BLE001 - report with the daemon's log
        log.seek(0)
        print(f'memory.py: {exc}\nfutured log:\n{log.read()}', file=sys.stderr)
        return 1
    finally:
        ctx.destroy(linger=0)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
