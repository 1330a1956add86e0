"""futured-testhttp for the integration suite: the real test HTTP server on a free port.

Import the fixtures into a test module (`from httpserver import testhttp, start_testhttp`).
FUTURED_BUILD names the meson build directory (default: build/ at the top of the tree), as in
conftest.py; the server is FUTURED_BUILD/tests/testhttp/futured-testhttp.
"""
import os
import pathlib
import select
import signal
import subprocess
import time

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("FUTURED_BUILD", TOP / "build"))
TESTHTTP = BUILD / "tests" / "testhttp" / "futured-testhttp"
FLAGS = TOP / "tests" / "data" / "flags"


class TestHTTP:
    """One running futured-testhttp. `url` is http://127.0.0.1:PORT, without a trailing slash."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, tmp, *args, root=FLAGS):
        assert TESTHTTP.exists(), f"{TESTHTTP} is not built (ninja -C {BUILD})"
        self.root = root
        self.args = [str(TESTHTTP), "--root", str(root), *args]
        self.log = open(tmp / f"testhttp-{time.monotonic_ns()}.log", "w+")
        self.proc = subprocess.Popen([*self.args, "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=self.log)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        assert ready, "futured-testhttp printed nothing in 10 s: " + self.output()
        line = self.proc.stdout.readline().decode()
        prefix = "listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}: {self.output()}"
        self.url = line[len(prefix):].strip()
        assert self.url.startswith("http://"), self.url

    def explain_line(self, path):
        """What the server does for a GET of `path`, by its own --explain: the status ('200',
        '404', '418') and, in delay mode, the delay in seconds (else None)."""
        out = subprocess.run([*self.args, "--explain", path], check=True, capture_output=True,
                             text=True, timeout=10).stdout.split()
        delay = None
        if len(out) > 1 and out[1].startswith("delay="):
            delay = float(out[1][len("delay="):])
        return out[0], delay

    def explain(self, path):
        """The status a GET of `path` gets: '200', '404' or '418'."""
        return self.explain_line(path)[0]

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.proc.stdout.close()
        self.log.close()
        return rc


@pytest.fixture
def start_testhttp(tmp_path):
    """Starts futured-testhttp with extra options; each one started is stopped and must exit 0."""
    started = []

    def start(*args, root=FLAGS):
        s = TestHTTP(tmp_path, *args, root=root)
        started.append(s)
        return s

    yield start
    for s in started:
        out = s.output()
        rc = s.stop()
        assert rc == 0, out


@pytest.fixture
def testhttp(start_testhttp):
    """A static-mode server of the flags tree at /flags/{cc}/{cc}.gif."""
    return start_testhttp()
