"""futured under a service manager, with the real protocols: a NOTIFY_SOCKET listener,
systemd-socket-activate, SIGHUP reloads, and the configuration file."""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time

import msgpack
import pytest
import zmq

from conftest import FUTURED, Client, wait_for
from systemd_util import NotifyListener, ServiceDaemon, SocketActivated


def write_conf(path, **keys):
    lines = ["# written by the test", "[futured]"]
    lines += [f"{k.replace('_', '-')} = {v}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def notified(tmp_path):
    """futured with NOTIFY_SOCKET and a 1 s watchdog, its config file, and the listener."""
    listener = NotifyListener(tmp_path / "notify.sock")
    conf = tmp_path / "futured.conf"
    write_conf(conf, retain=3600, processes=1, threads=2)
    d = ServiceDaemon(tmp_path, ["--config", str(conf), "--listen", f"ipc://{tmp_path}/futured.sock"],
                      {"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"})
    d.conf = conf
    yield d, listener
    if d.proc.poll() is None:
        d.stop()
    listener.close()


def has_kind(c, name):
    return any(k["name"] == name for k in c.rq("hello")["kinds"])


def test_ready_status_watchdog_reload_stopping(notified):
    d, n = notified
    n.wait("READY", "1")
    # READY=1 only once the endpoint answers: the first request after it gets its reply.
    c = d.client()
    assert c.rq("hello", reply_timeout=5)["ok"]

    # The workers do not inherit what systemd passed to the service.
    kids = wait_for(d.children, what="worker processes")
    for pid in kids:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        names = {e.split(b"=", 1)[0] for e in env if e}
        assert not names & {b"NOTIFY_SOCKET", b"WATCHDOG_USEC", b"WATCHDOG_PID", b"LISTEN_FDS",
                            b"LISTEN_PID", b"LISTEN_FDNAMES"}, names

    # STATUS= follows the counters, at most once a second.
    c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 0.3}} for _ in range(4)])
    t0 = time.monotonic()
    wait_for(lambda: any("done 4" in m.get("STATUS", "") for _, m in n.all()), 10,
             "STATUS= with 4 done")
    time.sleep(max(0.0, 3.5 - (time.monotonic() - t0)))
    statuses = [(t, m["STATUS"]) for t, m in n.all() if "STATUS" in m]
    assert statuses[0][1].startswith("pending "), statuses
    for (t1, s1), (t2, s2) in zip(statuses, statuses[1:]):
        assert s1 != s2, statuses            # only on change
        assert t2 - t1 > 0.7, statuses        # at most once a second (generous for a busy box)

    # WATCHDOG=1 every WATCHDOG_USEC/2 (the stated cadence, with a generous tolerance).
    beats = n.times_of("WATCHDOG", "1")
    assert len(beats) >= 4, beats
    gaps = sorted(b - a for a, b in zip(beats, beats[1:]))
    assert 0.3 <= gaps[len(gaps) // 2] <= 0.7, gaps

    # SIGHUP: RELOADING=1 then READY=1, the same process, and the new retain in effect.
    write_conf(d.conf, retain=0.2, processes=1, threads=2)
    t_hup = time.monotonic()
    d.proc.send_signal(signal.SIGHUP)
    t_reloading = n.wait("RELOADING", "1", since=t_hup)
    assert "MONOTONIC_USEC" in [m for t, m in n.all() if t == t_reloading][0]
    n.wait("READY", "1", since=t_reloading)
    assert d.proc.poll() is None
    fid = c.rq("submit", jobs=[{"kind": "noop", "args": {}}])["ids"][0]
    wait_for(lambda: c.rq("status", ids=[fid])["states"][0] == "expired", 10,
             "the result to expire after the new retain")
    assert "reloaded: retain 0.2 s" in d.output()

    # A bad file on reload keeps the settings and names the line.
    d.conf.write_text("[futured]\nretain = soon\n")
    t_hup = time.monotonic()
    d.proc.send_signal(signal.SIGHUP)
    n.wait("READY", "1", since=t_hup)
    wait_for(lambda: f"{d.conf}:2: retain:" in d.output(), 5, "the bad line in the log")
    assert d.proc.poll() is None

    t_term = time.monotonic()
    assert d.stop() == 0, d.output()
    assert n.times_of("STOPPING", "1", since=t_term)


STATUS_LINE = re.compile(r"pending \d+, running \d+ \(threads \d+/2, transfers \d+/\d+, "
                         r"processes \d+/1\), done \d+, failed \d+")


def test_status_counts_running_jobs_by_pool(notified):
    """STATUS=pending N, running N (threads a/T, transfers b/X, processes c/P), done N, failed N:
    a, b and c are the jobs each pool runs now, T, X and P the pools' sizes."""
    d, n = notified
    n.wait("READY", "1")
    c = d.client()
    transfers = c.rq("stats")["stats"]["transfers"]
    sleeps = [{"kind": "sleep", "args": {"seconds": 60}} for _ in range(3)]
    prime = {"kind": "prime", "args": {"n": 18446744073709551557}}  # seconds of trial division
    ids = c.rq("submit", jobs=sleeps + [prime])["ids"]
    busy = (f"pending 1, running 3 (threads 2/2, transfers 0/{transfers}, processes 1/1), "
            "done 0, failed 0")
    wait_for(lambda: any(m.get("STATUS") == busy for _, m in n.all()), 10, busy)
    c.rq("cancel", ids=ids)
    idle = (f"pending 0, running 0 (threads 0/2, transfers 0/{transfers}, processes 0/1), "
            "done 0, failed 0")
    wait_for(lambda: any(m.get("STATUS") == idle for _, m in n.all()), 10, idle)
    statuses = [m["STATUS"] for _, m in n.all() if "STATUS" in m]
    assert all(STATUS_LINE.fullmatch(s) for s in statuses), statuses
    assert d.stop() == 0


def test_restart_only_setting_warns(notified):
    d, n = notified
    n.wait("READY", "1")
    write_conf(d.conf, retain=3600, processes=2, threads=2)
    t = time.monotonic()
    d.proc.send_signal(signal.SIGHUP)
    n.wait("READY", "1", since=t)
    wait_for(lambda: "'processes' changed" in d.output(), 5, "the restart-only warning")
    assert d.stop() == 0


def test_watchdog_stops_while_the_transfer_thread_is_wedged(notified):
    d, n = notified
    n.wait("READY", "1")
    c = d.client()
    if not has_kind(c, "wedge"):
        pytest.skip("futured built without -Dtest-kinds=true (.ci/test builds with it)")
    n.wait("WATCHDOG", "1")
    t0 = time.monotonic()
    c.rq("submit", jobs=[{"kind": "wedge", "args": {"seconds": 5}}])
    time.sleep(4)
    # The loop still serves clients while the pings stop.
    assert c.rq("stats")["ok"]
    assert not n.times_of("WATCHDOG", "1", since=t0 + 2), "WATCHDOG=1 while the transfer thread hung"
    # And they come back when the thread does.
    n.wait("WATCHDOG", "1", since=t0 + 5, timeout=10)
    assert d.stop() == 0


def test_socket_activation_answers_the_first_request(tmp_path):
    sa = SocketActivated(tmp_path, "--processes", "1", "--threads", "2", "--state-dir",
                         str(tmp_path / "state"))
    a, e, proc = sa.sock, sa.events, sa.proc
    ctx = zmq.Context()
    try:
        wait_for(lambda: a.exists() and e.exists(), 10, "the listening sockets")
        c = Client(ctx, f"ipc://{a}")
        # The very request that starts futured is answered.
        r = c.rq("hello", reply_timeout=20)
        assert r["ok"] and r["events"] == f"ipc://{e}"
        # Events go out through the passed PUB socket.
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"ipc://{e}")
        token = "activation"
        got = None
        for _ in range(100):
            c.rq("probe", token=token)
            if sub.poll(100):
                got = sub.recv_multipart()
                break
        assert got and got[0] == f"probe/{token}".encode(), got
        sub.close()
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        # The socket unit's paths stay for the next activation.
        assert a.exists() and e.exists(), sa.output()
    finally:
        sa.kill()
        ctx.term()


def test_passed_socket_matching_no_endpoint_is_a_config_error(tmp_path):
    tool = shutil.which("systemd-socket-activate")
    other = tmp_path / "other.sock"
    proc = subprocess.Popen([tool, "-l", str(other), str(FUTURED), "--listen",
                             f"ipc://{tmp_path}/futured.sock", "--processes", "1",
                             "--state-dir", str(tmp_path / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ctx = zmq.Context()
    try:
        wait_for(other.exists, 10, "the listening socket")
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(f"ipc://{other}")
        s.send(msgpack.packb({"v": 1, "id": 1, "op": "hello"}))
        assert proc.wait(30) == 2
        assert b"matches no --listen or --events endpoint" in proc.stdout.read()
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.term()


def run_futured(*args):
    return subprocess.run([str(FUTURED), *args], capture_output=True, text=True, timeout=30)


def test_check_config_prints_settings_and_options_beat_the_file(tmp_path):
    conf = tmp_path / "futured.conf"
    conf.write_text("[futured]\n; a comment\nthreads = 3\nretain = 7\nlisten = ipc:///a/x.sock\n"
                    "listen = ipc:///a/y.sock\nlog-level = debug\n")
    r = run_futured("--config", str(conf), "--check-config")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for want in ["threads = 3", "retain = 7", "listen = ipc:///a/x.sock", "listen = ipc:///a/y.sock",
                 "events = ipc:///a/events.sock", "log-level = debug", "grace = 10"]:
        assert want in lines, r.stdout
    r = run_futured("--config", str(conf), "--check-config", "--threads", "5",
                    "--listen", "ipc:///b/z.sock")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "threads = 5" in lines and "threads = 3" not in lines
    assert [l for l in lines if l.startswith("listen")] == ["listen = ipc:///b/z.sock"]


@pytest.mark.parametrize("body, where", [
    ("[futured]\nthreads = zero\n", "2: threads: --threads takes a number from 1 to 1024, not 'zero'"),
    ("[futured]\n\nfrobnicate = 1\n", "3: frobnicate: expected one of futured's long options"),
    ("[other]\nthreads = 2\n", "2: threads: expected the one section [futured]"),
    ("[futured]\nthreads\n", "2: expected 'key = value'"),
    ("[futured]\nconfig = /x\n", "2: config: expected"),
])
def test_bad_config_is_exit_2_naming_the_line(tmp_path, body, where):
    conf = tmp_path / "futured.conf"
    conf.write_text(body)
    r = run_futured("--config", str(conf), "--check-config")
    assert r.returncode == 2
    assert f"{conf}:{where}" in r.stderr, r.stderr


def test_missing_config_file_given_is_exit_2(tmp_path):
    r = run_futured("--config", str(tmp_path / "none.conf"), "--check-config")
    assert r.returncode == 2 and "none.conf" in r.stderr


def test_events_required_without_an_ipc_listen_endpoint():
    r = run_futured("--listen", "tcp://127.0.0.1:5999", "--check-config")
    assert r.returncode == 2 and "--events is required" in r.stderr


FUTURECTL_PATH = FUTURED.parent.parent / "cli" / "futurectl"


def test_workers_ignore_sigterm_and_offer_themselves_to_the_oom_killer(daemon):
    kids = wait_for(lambda: [p for p in ServiceDaemon.children(daemon) if p], 10, "workers")
    # A worker sets its score itself once exec'd: under ASan that may be after it is first seen.
    for pid in kids:
        wait_for(lambda: open(f"/proc/{pid}/oom_score_adj").read().strip() == "500", 10,
                 f"worker {pid}'s OOM score")
    # A prime of a few seconds survives SIGTERM sent to its worker.
    n = 2305843009213693951  # prime: takes a while
    fid = daemon.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": n}}])["ids"][0]
    wait_for(lambda: daemon.c.rq("status", ids=[fid])["states"][0] == "running", 10, "running")
    for pid in ServiceDaemon.children(daemon):
        os.kill(pid, signal.SIGTERM)
    r = daemon.c.rq("result", future=fid, timeout=60, reply_timeout=70)
    assert r["ok"], r
    assert daemon.c.rq("status", ids=[fid])["states"] == ["done"]


def test_futurectl_says_permission_denied(tmp_path, daemon):
    sock = daemon.endpoint[len("ipc://"):]
    os.chmod(sock, 0o660)
    os.chmod(tmp_path, 0o755)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        str(FUTURECTL_PATH), "--connect", daemon.endpoint, "stats"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 69, r
    assert f"permission denied on {sock} (are you in group futured?)" in r.stderr, r.stderr


def test_client_default_endpoint_falls_back_to_the_system_socket():
    # A runtime directory the unprivileged user can reach (pytest's tmp_path is root's only).
    runtime = pathlib.Path(tempfile.mkdtemp(prefix="futured-runtime-"))
    os.chmod(runtime, 0o777)
    env = {"PATH": os.environ["PATH"], "XDG_RUNTIME_DIR": str(runtime)}
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        str(FUTURECTL_PATH), "stats"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 69 and "/run/futured/futured.sock" in r.stderr, r.stderr
    (runtime / "futured").mkdir()
    (runtime / "futured" / "futured.sock").touch()
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        str(FUTURECTL_PATH), "stats"], capture_output=True, text=True,
                       env=env, timeout=30)
    shutil.rmtree(runtime)
    assert r.returncode == 69 and f"{runtime}/futured/futured.sock" in r.stderr, r.stderr


@pytest.mark.parametrize("level", ["debug", "info", "warning"])
def test_log_levels_of_deaths_timeouts_and_state_changes(start_daemon, level):
    """Worker deaths are warnings, job timeouts notices, state changes debug lines (the journal
    fields of the same lines are checked in a booted container by packaging/test-deb)."""
    d = start_daemon("--log-level", level, "--processes", "1", "--threads", "1")
    c = d.c
    prime, sleeper = c.rq("submit", jobs=[
        {"kind": "prime", "args": {"n": 18446744073709551557}},
        {"kind": "sleep", "args": {"seconds": 30}, "timeout": 0.2}])["ids"]
    wait_for(lambda: c.rq("status", ids=[prime])["states"] == ["running"], 10, "the prime to run")
    def children():
        kids = []
        for path in pathlib.Path(f"/proc/{d.proc.pid}/task").glob("*/children"):
            kids += [int(p) for p in path.read_text().split()]
        return kids
    (worker,) = wait_for(children, what="the worker process")
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: c.rq("status", ids=[prime, sleeper])["states"] == ["failed", "failed"], 10,
             "both jobs to fail")
    out = d.output()
    death = f"futured: future {prime} (prime): worker {worker}: the worker process died of signal 9"
    timeout = (f"futured: future {sleeper} (sleep) failed: "
               "the job ran longer than its 0.200 s timeout")
    change = f"futured: future {prime} (prime): pending -> running"
    assert death in out, out
    assert (timeout in out) == (level != "warning"), out
    assert (change in out) == (level == "debug"), out
