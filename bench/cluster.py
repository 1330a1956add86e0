#!/usr/bin/python3
"""bench/cluster.py: cluster mode (docs/CLUSTER.md) through one PostgreSQL on this machine.

    bench/cluster.py [BUILD_DIR] [--jobs N] [--trials N]

1. Throughput: N nodes (1, 2, 3) with --cluster share a fresh database; one bench-throughput
   per node submits its share of trivial `noop` jobs (reply "results": each batch's reply
   carries its results) at once; jobs/s = all jobs / the slowest client's time. Also the CPU
   seconds of each futured and of the PostgreSQL server processes over the run, and the
   server's commits (pg_stat_database.xact_commit) per second.
2. Cross-node completion latency: node A runs with --processes 0, so that a `prime` job
   submitted on A (reply "results") is open to the cluster, claimed and run by node B, and
   answered on A once B's commit notifies A; one job at a time, p50 and p99 of the time from
   the submit to A's answer.

The PostgreSQL server is the tests' (tests/integration/pgserver.py: initdb defaults, fsync on,
synchronous_commit on, a unix socket). Prints the figures as a Markdown table."""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import zmq
import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pgserver import PgServer  # noqa: E402


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def postgres_pids(pg):
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        main = int(f.readline())
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main)], capture_output=True,
                         text=True).stdout.split()
    return [main, *map(int, out)]


class Node:
    def __init__(self, build, tmp, uri, i, *args):
        self.dir = os.path.join(tmp, f"n{i}")
        os.makedirs(self.dir, exist_ok=True)
        self.endpoint = f"ipc://{self.dir}/f.sock"
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(build, "daemon", "futured"), "--listen", self.endpoint, "--events",
             f"ipc://{self.dir}/e.sock", "--store", uri, "--cluster", "--log-level", "warning",
             "--worker", os.path.join(build, "workers", "futured-worker"), *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)
        self.n = 0
        deadline = time.monotonic() + 20
        while True:
            try:
                self.rq("hello", timeout=0.3)
                break
            except TimeoutError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("node did not start: " + open(self.log.name).read())

    def send(self, op, **body):
        self.n += 1
        self.sock.send_multipart([b"", msgpack.packb({"v": 1, "id": self.n, "op": op, **body})])
        return self.n

    def recv(self, timeout=60):
        if not self.sock.poll(timeout * 1000):
            raise TimeoutError
        return msgpack.unpackb(self.sock.recv_multipart()[-1])

    def rq(self, op, timeout=60, **body):
        want = self.send(op, **body)
        while True:
            r = self.recv(timeout)
            if r.get("id") == want:
                return r

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.sock.close()
        self.ctx.term()


def throughput(build, pg, n_nodes, jobs, tmp):
    uri, name = pg.new_database()
    nodes = [Node(build, tmp, uri, f"{n_nodes}-{i}") for i in range(n_nodes)]
    pids = postgres_pids(pg)
    cpu0 = [cpu_seconds(n.proc.pid) for n in nodes], sum(cpu_seconds(p) for p in pids)
    commits0 = int(pg.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = "
                           f"'{name}'")[0][0])
    t0 = time.monotonic()
    clients = [subprocess.Popen([os.path.join(build, "bench", "bench-throughput"), n.endpoint,
                                 str(jobs // n_nodes), "1", "1000", "4"],
                                stdout=subprocess.PIPE, text=True) for n in nodes]
    outs = [c.communicate(timeout=900)[0] for c in clients]
    elapsed = time.monotonic() - t0
    commits = int(pg.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = "
                          f"'{name}'")[0][0]) - commits0
    cpu_nodes = [cpu_seconds(n.proc.pid) - c for n, c in zip(nodes, cpu0[0])]
    cpu_pg = sum(cpu_seconds(p) for p in postgres_pids(pg)) - cpu0[1]
    ran = [n.rq("stats")["stats"]["cluster_ran"] for n in nodes]
    for n in nodes:
        n.stop()
    for o in outs:
        if "jobs_per_s" not in o:
            raise RuntimeError(f"bench-throughput failed: {o}")
    return {"nodes": n_nodes, "jobs_per_s": jobs / elapsed, "seconds": elapsed,
            "cpu_nodes": cpu_nodes, "cpu_pg": cpu_pg, "commits_per_s": commits / elapsed,
            "ran": ran, "db": name}


def profile(pg, db):
    """Prints the statements that took the server's time in database `db`, and resets."""
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", db=db)
    rows = pg.psql("SELECT round(total_exec_time)::int, calls, rows, "
                   "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_statements "
                   f"WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{db}') "
                   "ORDER BY total_exec_time DESC LIMIT 12", db=db)
    for ms, calls, n, q in rows:
        print(f"    {ms:>7} ms {calls:>7} calls {n:>8} rows  {q}")
    pg.psql("SELECT pg_stat_statements_reset()", db=db)


def timed(node, trials):
    """p50 and p99 in ms of a prime job submitted on `node` with reply "results"."""
    times = []
    for i in range(trials + 10):
        t0 = time.perf_counter_ns()
        r = node.rq("submit", jobs=[{"kind": "prime", "args": {"n": 1009}}], reply="results")
        t = (time.perf_counter_ns() - t0) / 1e6
        assert r.get("ok") and r["results"][0]["state"] == "done", r
        if i >= 10:
            times.append(t)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def latency(build, pg, trials, tmp):
    uri, _ = pg.new_database()
    a = Node(build, tmp, uri, "A", "--processes", "0")
    b = Node(build, tmp, uri, "B", "--processes", "2")
    p50, p99 = timed(a, trials)
    ran_b = b.rq("stats")["stats"]["cluster_ran"]
    # The same job run by the node that took it: its floor (two commits waiting for the WAL).
    local50, local99 = timed(b, trials)
    a.stop()
    b.stop()
    return {"p50_ms": p50, "p99_ms": p99, "ran_on_b": ran_b, "trials": trials,
            "local_p50_ms": local50, "local_p99_ms": local99}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
    ap.add_argument("--jobs", type=int, default=60000)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--profile", action="store_true",
                    help="after each throughput run, the statements that took the server's "
                    "time (pg_stat_statements)")
    args = ap.parse_args()
    pg = PgServer()
    if args.profile:
        with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
            f.write("shared_preload_libraries = 'pg_stat_statements'\n"
                    "pg_stat_statements.track = all\n")
        pg.stop()
        pg.start()
    try:
        settings = pg.psql("SELECT name, setting FROM pg_settings WHERE name IN "
                           "('shared_buffers', 'synchronous_commit', 'fsync', 'wal_level', "
                           "'max_connections', 'server_version') ORDER BY name")
        print("PostgreSQL:", ", ".join(f"{k}={v}" for k, v in settings))
        with tempfile.TemporaryDirectory() as tmp:
            print("| nodes | jobs/s | s | CPU s per futured | CPU s PostgreSQL | commits/s | "
                  "jobs run per node |")
            print("|---|---|---|---|---|---|---|")
            for n in args.nodes:
                r = throughput(args.build, pg, n, args.jobs, tmp)
                print(f"| {n} | {r['jobs_per_s']:,.0f} | {r['seconds']:.1f} | "
                      f"{', '.join(f'{c:.1f}' for c in r['cpu_nodes'])} | {r['cpu_pg']:.1f} | "
                      f"{r['commits_per_s']:,.0f} | {', '.join(map(str, r['ran']))} |",
                      flush=True)
                if args.profile:
                    profile(pg, r["db"])
            if args.trials == 0:
                return
            r = latency(args.build, pg, args.trials, tmp)
            print(f"\ncross-node completion (submit on A, run on B, answered on A), "
                  f"{r['trials']} jobs one at a time: p50 {r['p50_ms']:.2f} ms, "
                  f"p99 {r['p99_ms']:.2f} ms (B ran {r['ran_on_b']}); on B alone "
                  f"(submit, run and answer on B): p50 {r['local_p50_ms']:.2f} ms, "
                  f"p99 {r['local_p99_ms']:.2f} ms")
    finally:
        pg.close()


if __name__ == "__main__":
    main()
