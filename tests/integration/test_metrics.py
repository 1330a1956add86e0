"""The Prometheus endpoint (futured --metrics): real daemon, real HTTP, and the output read by
Debian's python3-prometheus-client parser, so the format is what a Prometheus server reads."""
import http.client
import os
import re
import signal
import socket
import subprocess
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import FUTURED, wait_for
from test_futures import BIG_PRIME, prime_job, sleep_job, states, stats, submit, workers

POOLS = {"thread", "process", "transfer", "inline"}


def address(d):
    """HOST:PORT the daemon serves metrics on, from its log line."""
    m = wait_for(lambda: re.search(r"metrics: serving http://(\S+)/metrics", d.output()),
                 what="the metrics log line")
    return m.group(1)


def request(addr, path="/metrics", method="GET"):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def scrape(addr):
    """{(sample name, frozenset of labels): value} of one scrape, parsed by prometheus_client."""
    status, headers, body = request(addr)
    assert status == 200, body
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def kinds_of(samples):
    """The job kinds a scrape counts (every kind of the daemon, with or without -Dtest-kinds)."""
    return {dict(k)["kind"] for n, k in samples if n == "futured_jobs_submitted_total"}


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def agrees_with_stats(addr, c):
    """The scrape, once it tells what `stats` tells (the snapshot is at most 100 ms old)."""
    s, st = scrape(addr), stats(c)
    kinds = kinds_of(s)
    by = lambda name, label, values: sum(value(s, name, **{label: v}) for v in values)
    finished = sum(value(s, "futured_jobs_finished_total", kind=k, state=st_)
                   for k in kinds for st_ in ("done", "failed", "cancelled"))
    if (by("futured_jobs_submitted_total", "kind", kinds) == st["submitted"] and
            finished == st["finished"] and
            by("futured_jobs_pending", "pool", POOLS) == st["pending"] and
            by("futured_jobs_running", "pool", POOLS) == st["running"] and
            value(s, "futured_worker_deaths_total") == st["workers_died"] and
            value(s, "futured_deferred_replies") == st["clients_deferred"] and
            value(s, "futured_transfers_in_flight") == st["transfers_running"] and
            value(s, "futured_store_commit_seconds_count") == st["store_commits"]):
        return s
    return None


def settled(addr, c):
    """The first scrape that agrees with `stats`, waiting for the snapshot to catch up."""
    return wait_for(lambda: agrees_with_stats(addr, c), 30, "the scrape to agree with stats")


def check_histogram(s, name, **labels):
    """Cumulative buckets that never fall, +Inf equal to _count; returns (count, sum)."""
    buckets = sorted(((float(dict(k)["le"]), v) for (n, k), v in s.items()
                      if n == name + "_bucket" and
                      {kk: vv for kk, vv in k if kk != "le"} == labels))
    assert len(buckets) >= 10 and buckets[-1][0] == float("inf"), buckets
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), buckets
    count, total = value(s, name + "_count", **labels), value(s, name + "_sum", **labels)
    assert counts[-1] == count
    assert total >= 0 and (count > 0 or total == 0)
    return count, total


@pytest.fixture
def metered(start_daemon):
    d = start_daemon("--processes", "2", "--threads", "4", "--metrics", "0")
    return d, address(d)


def test_counters_after_known_jobs(metered):
    d, addr = metered
    c = d.c
    done = submit(c, {"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"},
                  sleep_job(0.05), sleep_job(0.05),
                  {"kind": "prime", "args": {"n": 1000003}}, {"kind": "prime", "args": {"n": 12}})
    failed = submit(c, sleep_job(5, timeout=0.01))
    running = submit(c, sleep_job(30))
    wait_for(lambda: states(c, *done, *failed, *running) ==
             ["done"] * len(done) + ["failed", "running"], 20, "the jobs to finish")
    c.rq("cancel", ids=running)
    s = settled(addr, c)

    assert value(s, "futured_jobs_submitted_total", kind="noop") == 3
    assert value(s, "futured_jobs_submitted_total", kind="sleep") == 4
    assert value(s, "futured_jobs_submitted_total", kind="prime") == 2
    assert value(s, "futured_jobs_submitted_total", kind="download") == 0
    expect = {("noop", "done"): 3, ("sleep", "done"): 2, ("sleep", "failed"): 1,
              ("sleep", "cancelled"): 1, ("prime", "done"): 2}
    assert {"prime", "sleep", "noop", "download"} <= kinds_of(s)
    for k in kinds_of(s):
        for st in ("done", "failed", "cancelled"):
            assert value(s, "futured_jobs_finished_total", kind=k, state=st) == \
                expect.get((k, st), 0), (k, st)
    for p in POOLS:
        assert value(s, "futured_jobs_pending", pool=p) == 0
        assert value(s, "futured_jobs_running", pool=p) == 0
    # Every one of these jobs ran before it finished, so each run is in its kind's histogram;
    # the two 50 ms sleeps alone took 0.1 s.
    assert check_histogram(s, "futured_job_duration_seconds", kind="noop")[0] == 3
    assert check_histogram(s, "futured_job_duration_seconds", kind="prime")[0] == 2
    count, total = check_histogram(s, "futured_job_duration_seconds", kind="sleep")
    assert count == 4 and total >= 0.1
    assert check_histogram(s, "futured_job_duration_seconds", kind="download") == (0, 0)
    assert check_histogram(s, "futured_store_commit_seconds")[0] >= 1
    version = subprocess.run([str(FUTURED), "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert value(s, "futured_build_info", version=version) == 1


def test_a_cancelled_pending_job_finishes_without_a_run(start_daemon):
    d = start_daemon("--threads", "1", "--prefetch", "0", "--metrics", "127.0.0.1:0")
    addr, c = address(d), d.c
    first, second, third = submit(c, sleep_job(30), sleep_job(30), sleep_job(30))
    wait_for(lambda: states(c, first) == ["running"], 30, "the first sleep to run")
    s = settled(addr, c)
    assert value(s, "futured_jobs_running", pool="thread") == 1
    assert value(s, "futured_jobs_pending", pool="thread") == 2
    c.rq("cancel", ids=[second])
    c.rq("cancel", ids=[first, third])
    s = settled(addr, c)
    assert value(s, "futured_jobs_finished_total", kind="sleep", state="cancelled") == 3
    # Only the first ran: the other two never started, so they have no run time.
    assert check_histogram(s, "futured_job_duration_seconds", kind="sleep")[0] == 1


def test_gauges_worker_deaths_and_deferred_replies(start_daemon):
    d = start_daemon("--processes", "1", "--metrics", "127.0.0.1:0")
    addr, c = address(d), d.c
    big = prime_job(BIG_PRIME)
    run, queued = submit(c, big, big)
    wait_for(lambda: states(c, run, queued) == ["running", "pending"], 30, "one prime to run")
    waiter = d.client()
    waiter.send(op="wait", ids=[run], timeout=30)
    s = wait_for(lambda: agrees_with_stats(addr, c) if stats(c)["clients_deferred"] else None,
                 30, "the wait to be deferred")
    assert value(s, "futured_jobs_running", pool="process") == 1
    assert value(s, "futured_jobs_pending", pool="process") == 1
    assert value(s, "futured_deferred_replies") == 1
    assert value(s, "futured_worker_deaths_total") == 0
    (victim,) = workers(d)
    os.kill(victim, signal.SIGKILL)
    assert waiter.recv()["ok"]
    wait_for(lambda: states(c, run, queued) == ["failed", "running"], 30,
             "the second to run on a new worker")
    c.rq("cancel", ids=[queued])  # kills its worker on purpose: not a death
    s = settled(addr, c)
    assert value(s, "futured_worker_deaths_total") == 1
    assert value(s, "futured_deferred_replies") == 0
    assert value(s, "futured_jobs_finished_total", kind="prime", state="failed") == 1
    assert value(s, "futured_jobs_finished_total", kind="prime", state="cancelled") == 1


def test_format_is_read_by_the_prometheus_parser(metered):
    d, addr = metered
    status, headers, body = request(addr)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = {f.name: f.type for f in text_string_to_metric_families(body)}
    assert fams == {
        "futured_build_info": "gauge",
        "futured_jobs_submitted": "counter",
        "futured_jobs_finished": "counter",
        "futured_jobs_pending": "gauge",
        "futured_jobs_running": "gauge",
        "futured_job_duration_seconds": "histogram",
        "futured_results_retained": "gauge",
        "futured_worker_deaths": "counter",
        "futured_worker_processes": "gauge",
        "futured_transfers_in_flight": "gauge",
        "futured_deferred_replies": "gauge",
        "futured_store_commit_seconds": "histogram",
        "futured_store_size_bytes": "gauge",
        "process_cpu_seconds": "counter",
        "process_start_time_seconds": "gauge",
        "process_resident_memory_bytes": "gauge",
        "process_virtual_memory_bytes": "gauge",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
    }, fams
    s = scrape(addr)
    assert value(s, "process_resident_memory_bytes") > 1 << 20
    assert value(s, "process_open_fds") >= 3
    assert value(s, "process_max_fds") >= value(s, "process_open_fds")
    assert value(s, "process_cpu_seconds_total") > 0
    with open(f"/proc/{d.proc.pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        btime = int(next(l for l in f if l.startswith("btime")).split()[1])
    assert abs(value(s, "process_start_time_seconds") - (btime + ticks / 100)) < 2


def test_memory_store_has_no_store_metrics(start_daemon):
    d = start_daemon("--store", "memory", "--metrics", "0")
    names = {n for n, _ in scrape(address(d))}
    assert "futured_jobs_pending" in names
    assert not any(n.startswith("futured_store_") for n in names), names


def test_other_paths_and_methods(metered):
    d, addr = metered
    for path in ("/", "/metrics/", "/metricsx", "/favicon.ico"):
        assert request(addr, path)[0] == 404, path
    status, headers, _ = request(addr, method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert request(addr, method="DELETE")[0] == 405
    status, headers, body = request(addr, method="HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 1000
    assert request(addr, "/metrics?name[]=x")[0] == 200


def listening(port):
    """The local addresses (hex, as /proc/net/tcp* writes them) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, st = line.split()[1], line.split()[3]
                if st == "0A" and int(local.split(":")[1], 16) == port:
                    found.append(local.split(":")[0])
    return found


def test_a_port_alone_binds_the_loopback_only(start_daemon):
    d = start_daemon("--metrics", "0")
    addr = address(d)
    assert addr.startswith("127.0.0.1:")
    assert listening(int(addr.split(":")[1])) == ["0100007F"]  # 127.0.0.1, nothing else
    assert request(addr)[0] == 200


def test_ipv6_address(start_daemon):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    d = start_daemon("--metrics", "[::1]:0")
    addr = address(d)
    assert addr.startswith("[::1]:")
    assert listening(int(addr.rsplit(":", 1)[1])) == ["00000000000000000000000001000000"]
    assert request(addr)[0] == 200


def run_futured(tmp_path, *args):
    return subprocess.run(
        [str(FUTURED), "--listen", f"ipc://{tmp_path}/s.sock", "--events",
         f"ipc://{tmp_path}/e.sock", "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("bad", ["", "x", ":9464", "9464:", "65536", "127.0.0.1:-1",
                                 "127.0.0.1:80x", "example.com:9464", "::1:9464", "[::1]",
                                 "[nothing]:9464", "1.2.3:9464", "0x7f.1:9464"])
def test_bad_address_is_exit_2(tmp_path, bad):
    if bad == "":
        # An empty value turns metrics off (so that the command line can undo the file).
        r = run_futured(tmp_path, "--metrics", "", "--check-config")
        assert r.returncode == 0 and "metrics = \n" in r.stdout, r
        return
    r = run_futured(tmp_path, "--metrics", bad)
    assert r.returncode == 2, r
    assert f"--metrics takes PORT or ADDRESS:PORT" in r.stderr and f"not '{bad}'" in r.stderr, r


def test_bad_address_in_the_config_file_is_exit_2(tmp_path):
    conf = tmp_path / "futured.conf"
    conf.write_text("[futured]\nmetrics = everywhere:80\n")
    r = run_futured(tmp_path, "--config", str(conf))
    assert r.returncode == 2, r
    assert f"{conf}:2: metrics: --metrics takes" in r.stderr, r.stderr
    conf.write_text("[futured]\nmetrics = [::1]:9464\n")
    r = run_futured(tmp_path, "--config", str(conf), "--check-config")
    assert r.returncode == 0 and "metrics = [::1]:9464\n" in r.stdout, r
    r = run_futured(tmp_path, "--config", str(conf), "--metrics", "9465", "--check-config")
    assert r.returncode == 0 and "metrics = 9465\n" in r.stdout, r


def test_address_in_use_is_exit_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_futured(tmp_path, "--metrics", f"127.0.0.1:{port}")
    assert r.returncode == 2, r
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr, r.stderr


def test_address_not_here_is_exit_2(tmp_path):
    r = run_futured(tmp_path, "--metrics", "192.0.2.1:9464")  # TEST-NET-1: no host has it
    assert r.returncode == 2, r
    assert "cannot listen on 192.0.2.1:9464: Cannot assign requested address" in r.stderr, r


def test_requests_are_answered_while_a_client_hammers_metrics(metered):
    """Scrapes in a tight loop, on fresh and kept-alive connections, from four threads, while
    the daemon runs jobs: the loop never waits for the HTTP thread, so every request is
    answered and every scrape is complete."""
    d, addr = metered
    stop = threading.Event()
    results = {"ok": 0, "bad": []}
    lock = threading.Lock()
    host, port = addr.rsplit(":", 1)

    def hammer(keep_alive):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while not stop.is_set():
            try:
                if not keep_alive:
                    conn.close()
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read().decode()
                # A whole scrape: its last family is there (Content-Length says it is complete).
                good = r.status == 200 and "\nprocess_max_fds " in body
                with lock:
                    if good:
                        results["ok"] += 1
                    else:
                        results["bad"].append(r.status)
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    results["bad"].append(repr(e))
                conn.close()
        conn.close()

    threads = [threading.Thread(target=hammer, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        c = d.c
        for _ in range(20):
            ids = submit(c, *[{"kind": "noop"}] * 100, sleep_job(0.001))
            assert c.rq("wait", ids=ids, timeout=30, reply_timeout=40)["not_done"] == []
            assert c.rq("hello")["ok"]
        wait_for(lambda: results["ok"] >= 20, 30, "scrapes to be answered")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results["bad"] == [], results["bad"][:5]
    s = settled(addr, d.c)
    assert value(s, "futured_jobs_finished_total", kind="noop", state="done") == 2000


def test_reload_keeps_the_address_and_warns(tmp_path, start_daemon):
    conf = tmp_path / "futured.conf"
    conf.write_text("[futured]\nmetrics = 127.0.0.1:0\n")
    d = start_daemon("--config", str(conf))
    addr = address(d)
    conf.write_text("[futured]\nmetrics = 127.0.0.1:1\n")
    d.proc.send_signal(1)  # SIGHUP
    wait_for(lambda: "'metrics' changed; it takes effect at the next restart" in d.output(),
             what="the restart-only warning")
    assert request(addr)[0] == 200
