"""Fixtures of the Python package's tests: a real futured on temporary ipc endpoints, started and
stopped as tests/integration/conftest.py does (its Daemon class is reused), and the real test
HTTP server (tests/integration/httpserver.py). FUTURED_BUILD names the meson build directory
(default: build/ at the top of the tree). The package is imported from python/, not from an
installed copy."""
import importlib.util
import pathlib
import sys

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
INTEGRATION = TOP / "tests" / "integration"
sys.path.insert(0, str(TOP / "python"))
sys.path.insert(0, str(INTEGRATION))

# The integration suite's conftest under another module name (ours is `conftest`).
_spec = importlib.util.spec_from_file_location("futured_integration_fixtures",
                                               INTEGRATION / "conftest.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

from httpserver import start_testhttp, testhttp  # noqa: E402,F401 (fixtures)

import futured  # noqa: E402

BUILD = fixtures.BUILD
DATA = fixtures.DATA
TOP = TOP
wait_for = fixtures.wait_for
load_primes = fixtures.load_primes

# The integration suite's own fixtures: start_daemon (every daemon started is stopped and must
# exit 0; downloads from loopback, the test HTTP server, are allowed) and daemon.
start_daemon = fixtures.start_daemon
daemon = fixtures.daemon


@pytest.fixture
def client(daemon):
    with futured.Client(daemon.endpoint) as c:
        yield c


@pytest.fixture
def executor(daemon):
    ex = futured.Executor(daemon.endpoint)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)
