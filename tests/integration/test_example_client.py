"""docs/examples/futured_client.py, the client written from docs/PROTOCOL.md alone: its prime
checker as a program, and its library against a real futured."""
import importlib.util
import re
import subprocess
import time

import pytest

from conftest import TOP, load_primes

EXAMPLE = TOP / "docs" / "examples" / "futured_client.py"
PRIMES = TOP / "tests" / "data" / "primes.tsv"


def run_example(*args, timeout=60):
    return subprocess.run(["/usr/bin/python3", str(EXAMPLE), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("futured_client", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_agreeing_output(p, daemon, path):
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    rows = load_primes()
    assert f"{len(rows)}/{len(rows)} agree with {path}" in out, out
    for mode in ("first_completed", "first_exception", "all"):
        assert re.search(rf"^wait {mode} +-> +\d+ done", out, re.M), out
    # first_exception and all both end with every job done.
    assert re.search(rf"^wait all +-> +{len(rows)} done, +0 not done", out, re.M), out
    for n, is_prime in rows:
        kind = "prime" if is_prime else "composite"
        assert re.search(rf"^ *{n} +{kind} .* ok$", out, re.M), (n, out)
    assert "MISMATCH" not in out
    assert p.stderr == ""


def test_example_checks_primes_tsv(daemon):
    p = run_example("--connect", daemon.endpoint, PRIMES)
    check_agreeing_output(p, daemon, PRIMES)
    st = daemon.c.rq("stats")["stats"]
    assert st["submitted"] == 20 and st["finished"] == 20, st
    # It released its futures when it was done.
    assert st["done"] == 0 and st["failed"] == 0, st
    assert daemon.c.rq("status", ids=list(range(1, 21)))["states"] == ["expired"] * 20


def test_example_defaults_to_the_repository_primes_tsv(daemon):
    p = run_example("--connect", daemon.endpoint)
    check_agreeing_output(p, daemon, PRIMES)


def test_example_reports_a_disagreement(daemon, tmp_path):
    tsv = tmp_path / "wrong.tsv"
    tsv.write_text("n\tis_prime\tsmallest_factor\n7\ttrue\t7\n91\ttrue\t91\n15\tfalse\t5\n")
    p = run_example("--connect", daemon.endpoint, tsv)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"1/3 agree with {tsv}" in p.stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 2, p.stderr
    assert lines[0].startswith("futured_client: 91: daemon says is_prime=False smallest_factor=7,")
    assert lines[1].startswith("futured_client: 15: daemon says is_prime=False smallest_factor=3,")


def test_example_without_a_daemon_fails_fast(tmp_path):
    t = time.monotonic()
    p = run_example("--connect", f"ipc://{tmp_path}/nobody.sock", PRIMES)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no futured socket" in p.stderr
    assert time.monotonic() - t < 10


def test_example_library(daemon, example):
    with example.Futured(daemon.endpoint, reply_timeout=5.0) as fd:
        assert fd.hello()["version"] == 1
        fid = fd.submit("prime", {"n": 91})
        (done, not_done) = fd.wait([fid], timeout=10)
        assert done == [fid] and not_done == []
        assert fd.result(fid)["smallest_factor"] == 7

        # Error replies raise FuturedError with the daemon's code, field and index.
        with pytest.raises(example.FuturedError) as e:
            fd.submit_many([{"kind": "noop"}, {"kind": "prime", "args": {"n": -1}}])
        assert (e.value.code, e.value.field, e.value.index) == ("bad_args", "n", 1)

        slow = fd.submit("sleep", {"seconds": 5}, priority=3, group="g")
        with pytest.raises(example.FuturedError) as e:
            fd.result(slow, timeout=0.1)
        assert e.value.code == "not_done"
        assert fd.wait([slow, fid], mode="first_completed", timeout=1) == ([fid], [slow])
        deadline = time.monotonic() + 5
        while fd.status([slow]) != ["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        futures, more = fd.list(state="running")
        assert [(f["id"], f["group"], f["priority"]) for f in futures] == [(slow, "g", 3)]
        assert more is False
        assert fd.cancel([slow]) == [True]
        with pytest.raises(example.FuturedError) as e:
            fd.result(slow)
        assert e.value.code == "cancelled" and e.value.state == "cancelled"

        failing = fd.submit("sleep", {"seconds": 2}, timeout=0.05)
        with pytest.raises(example.FuturedError) as e:
            fd.result(failing)
        assert e.value.code == "timeout" and e.value.state == "failed"
        assert e.value.failure["code"] == "timeout"

        assert fd.status([fid, 9999]) == ["done", "unknown"]
        assert fd.release([fid]) == [True]
        assert fd.outcome(fid) == {"state": "expired"}
        st = fd.stats()
        assert st["submitted"] == 3 and st["processes"] == 2 and st["threads"] == 4, st
