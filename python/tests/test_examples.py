"""The book's programs ported to futured.Executor (python/examples), run as scripts against a
real futured and the real test HTTP server; their output is checked line by line."""
import os
import re
import subprocess
import sys

from conftest import DATA, TOP, load_primes

EXAMPLES = TOP / "python" / "examples"
FLAGS = DATA / "flags"


def run_example(name, daemon, *args):
    env = dict(os.environ, FUTURED_ENDPOINT=daemon.endpoint,
               PYTHONPATH=str(TOP / "python"))
    p = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.splitlines()


def test_proc_pool(daemon):
    lines = run_example("proc_pool.py", daemon)
    assert lines[0] == "Checking 20 numbers with 2 processes:"
    rows = sorted(load_primes(), reverse=True)
    assert len(lines) == 22
    for (n, is_prime), line in zip(rows, lines[1:21]):
        m = re.fullmatch(r"( *\d+)  ([P ]) +(\d+\.\d{6})s", line)
        assert m, line
        assert len(m[1]) == 16 and int(m[1]) == n
        assert m[2] == ("P" if is_prime else " ")
    assert re.fullmatch(r"Total time: \d+\.\d\ds", lines[21])


def test_flags_threadpool_futures(daemon, testhttp, tmp_path):
    dest = tmp_path / "downloaded"
    lines = run_example("flags_threadpool_futures.py", daemon, "--base-url",
                        testhttp.url + "/flags", "--dest", str(dest))
    first5 = ["BR", "CN", "ID", "IN", "US"]  # sorted(POP20_CC[:5]), as the book
    for cc, line in zip(first5, lines[:5]):
        assert re.fullmatch(rf"Scheduled for {cc}: <Future at 0x[0-9a-f]+ state=\w+( id=\d+)?>",
                            line), line
    done = []
    for line in lines[5:10]:
        m = re.fullmatch(r"<Future at 0x[0-9a-f]+ state=finished returned dict id=\d+> "
                         r"result: '([A-Z]{2})'", line)
        assert m, line
        done.append(m[1])
    assert sorted(done) == first5
    assert lines[10] == ""
    assert re.fullmatch(r"5 downloads in \d+\.\d\ds", lines[11])
    assert len(lines) == 12
    assert sorted(f.name for f in dest.iterdir()) == [f"{cc}.gif" for cc in first5]
    for cc in first5:
        lower = cc.lower()
        assert (dest / f"{cc}.gif").read_bytes() == (FLAGS / lower / f"{lower}.gif").read_bytes()
