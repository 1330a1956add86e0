#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets: a few valid requests of every operation (and a few
classic malformed ones) for `request` and `proto`, worker frames of each kind for `frame`, and
futurectl command lines (arguments after the program name, each ended by a NUL) for `argv`.
Run it from anywhere; it rewrites tests/fuzz/corpus/."""
import hashlib
import pathlib
import shutil

import msgpack

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def req(op, **fields):
    return pack({"v": 1, "id": 7, "op": op, **fields})


REQUESTS = [
    req("hello"),
    req("stats"),
    req("probe", token="t1"),
    req("submit", jobs=[{"kind": "noop"}]),
    req("submit", jobs=[{"kind": "sleep", "args": {"seconds": 0.001}, "priority": 5,
                         "timeout": 1.5, "group": "g", "group_limit": 2, "retries": 1}]),
    req("submit", reply="results", jobs=[{"kind": "noop"}, {"kind": "sleep", "args": {"seconds": 0}}]),
    req("submit", jobs=[{"kind": "prime", "args": {"n": 97, "method": "miller-rabin"}}]),
    req("submit", jobs=[{"kind": "download", "args": {
        "url": "http://127.0.0.1:9/x", "path": "a.gif", "timeout": 1, "max_bytes": 100,
        "max_redirects": 0}}]),
    req("submit", jobs=[{"kind": "download", "args": {"url": "https://example.invalid/",
                                                      "inline": True}}]),
    req("status", ids=[1, 2, 3, 1]),
    req("wait", ids=[1, 2, 2], mode="first_completed", timeout=0),
    req("wait", ids=[1], mode="first_exception", timeout=0.001),
    req("result", future=1, timeout=0),
    req("result", future=1),
    req("results", ids=[1, 2], timeout=0.01),
    req("cancel", ids=[1, 2]),
    req("release", ids=[1]),
    req("list", state="pending", after=0, limit=10),
    req("list"),
    b"\xdd\xff\xff\xff\xff",
    b"\x91" * 40 + b"\xc0",
    pack({"v": 1, "id": 1, "op": "hello", "x": "caf\xe9".encode("latin-1")}),
]

FRAMES = [
    pack({"job": 1, "kind": "prime"}) + pack({"n": 97}),
    pack({"job": 1, "ok": True}) + pack({"n": 97, "is_prime": True, "smallest_factor": 97,
                                          "elapsed": 0.001}),
    pack({"job": 2, "ok": False}) + pack({"code": "internal", "message": "x", "signal": 9}),
    pack({"hello": 1234}) + pack({}),
]


COMMAND_LINES = [
    ["--help"],
    ["--version"],
    ["--json", "-c", "ipc:///tmp/x.sock", "stats"],
    ["submit", "prime", "97", "method=miller-rabin", "--wait", "--priority", "-5", "--timeout",
     "1.5", "--group", "g", "--group-limit", "2", "--retries", "1", "--key", "k"],
    ["submit", "--priority=1000", "sleep", "seconds=0.1"],
    ["result", "1", "--timeout", "0"],
    ["status", "1", "2", "3"],
    ["wait", "1", "2", "--any", "--timeout", "2.5"],
    ["wait", "--first-error", "7"],
    ["cancel", "1"],
    ["release", "1", "2"],
    ["list", "--state", "pending", "--after", "10", "--limit", "50"],
    ["watch", "done/", "failed/g"],
    ["map", "prime", "97", "98", "n=99,method=miller-rabin", "--timeout", "3"],
    ["primes", "--as-completed", "--method", "trial", "2", "18446744073709551557"],
    ["primes", "--json"],
    ["keygen", "--out", "/nonexistent/k"],
    ["--server-key", "x.pub", "--client-key", "c.key", "stats"],
    ["flags", "-e", "-m", "100", "--limit", "5", "--server", "delay", "-v"],
    ["flags", "--base-url", "http://127.0.0.1:8000/flags", "--dest", "/tmp/x", "br", "CN", "A"],
    ["flags", "-a", "-l", "3"],
    ["submit", "--help"],
    ["bogus"],
    [],
]


def write(name, items):
    d = CORPUS / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for data in items:
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


write("request", REQUESTS)
write("proto", REQUESTS)
write("frame", FRAMES)
write("argv", [b"".join(a.encode() + b"\0" for a in line) for line in COMMAND_LINES])
