"""Fixtures for the integration suite: a real futured on temporary ipc endpoints.

FUTURED_BUILD names the meson build directory (default: build/ at the top of the tree).
"""
import os
import pathlib
import signal
import subprocess
import time

import msgpack
import pytest
import zmq

from pgserver import pg_database, pg_server  # noqa: F401 (fixtures for every test module)

TOP = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("FUTURED_BUILD", TOP / "build"))
FUTURED = BUILD / "daemon" / "futured"
FUTURECTL = BUILD / "cli" / "futurectl"
DATA = TOP / "tests" / "data"


def wait_for(pred, timeout=5.0, what="condition", interval=0.01):
    """Polls `pred` until it returns something true, and returns that; fails the test (naming
    `what`) when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


def load_primes():
    """The 20 classic numbers: [(n, is_prime)] from tests/data/primes.tsv."""
    rows = []
    for line in (DATA / "primes.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.lower().startswith("n\t"):
            continue
        n, is_prime = line.split("\t")[:2]
        rows.append((int(n), is_prime.strip().lower() in ("true", "1", "p", "yes")))
    return rows


class Client:
    """A raw DEALER speaking protocol v1, for tests that need full control of the bytes."""

    def __init__(self, ctx, endpoint):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.next_id = 1

    def send(self, **fields):
        """Sends a request; returns its id."""
        rid = self.next_id
        self.next_id += 1
        self.sock.send(msgpack.packb({"v": 1, "id": rid, **fields}))
        return rid

    def recv(self, timeout=10.0):
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no reply from futured")
        return msgpack.unpackb(self.sock.recv(), strict_map_key=False)

    def rq(self, op, reply_timeout=10.0, **fields):
        """Sends `op` with `fields` (a `timeout` among them is the request's own field) and
        returns its reply, waiting at most `reply_timeout` seconds for it."""
        rid = self.send(op=op, **fields)
        reply = self.recv(reply_timeout)
        assert reply["id"] == rid, reply
        return reply

    def raw(self, data, timeout=10.0):
        self.sock.send(data)
        return self.recv(timeout)

    def close(self):
        self.sock.close(0)


# The test HTTP server listens on 127.0.0.1, which futured's downloads may not reach by default
# (docs/DOWNLOADS.md, "Which addresses"): every test daemon allows loopback explicitly, unless a
# test asks for the defaults (allow_loopback=False).
ALLOW_LOOPBACK = ("--download-allow", "127.0.0.0/8", "--download-allow", "::1/128")


class Daemon:
    def __init__(self, tmp, *args, allow_loopback=True):
        self.tmp = tmp
        self.endpoint = f"ipc://{tmp}/futured.sock"
        self.events = f"ipc://{tmp}/events.sock"
        self.download_dir = tmp / "dl"
        self.download_dir.mkdir(exist_ok=True)
        self.log = open(tmp / "futured.log", "w+")
        self.ctx = zmq.Context()
        self.clients = []
        self.proc = subprocess.Popen(
            [str(FUTURED), "--listen", self.endpoint, "--events", self.events,
             "--download-dir", str(self.download_dir), "--state-dir", str(tmp / "state"),
             *(ALLOW_LOOPBACK if allow_loopback else ()), *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        c = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                c.rq("hello", reply_timeout=0.2)
                break
            except TimeoutError:
                assert self.proc.poll() is None, self.output()
                assert time.monotonic() < deadline, "futured did not answer hello"
                c.close()
                self.clients.remove(c)
                c = self.client()
        self.c = c

    def client(self):
        c = Client(self.ctx, self.endpoint)
        self.clients.append(c)
        return c

    def subscriber(self, *topics):
        """A SUB socket on the events endpoint, proven live with a probe."""
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        for t in topics:
            sub.setsockopt(zmq.SUBSCRIBE, t.encode())
        token = f"t{time.monotonic_ns()}"
        sub.setsockopt(zmq.SUBSCRIBE, f"probe/{token}".encode())
        sub.connect(self.events)
        while True:
            self.c.rq("probe", token=token)
            if sub.poll(100):
                topic, _ = sub.recv_multipart()
                if topic == f"probe/{token}".encode():
                    break
        sub.setsockopt(zmq.UNSUBSCRIBE, f"probe/{token}".encode())
        return sub

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Killed, so that the test fails rather than leave it running; and its sockets
            # closed, whose context would otherwise block the garbage collector for ever.
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.ctx.destroy(linger=0)
        return rc


@pytest.fixture
def start_daemon(tmp_path):
    """Starts futured with extra options; every daemon started is stopped and must exit 0."""
    started = []

    def start(*args, **kwargs):
        d = Daemon(tmp_path, *args, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        rc = d.stop()
        assert rc == 0, d.output()


@pytest.fixture
def daemon(start_daemon):
    return start_daemon("--processes", "2", "--threads", "4")
