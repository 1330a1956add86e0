"""Who may talk to futured (docs/SECURITY.md): the mode and group of its ipc:// sockets,
CurveZMQ with an allow list on tcp://, and futured's refusal to serve tcp:// without keys."""
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import msgpack
import pytest
import zmq

from conftest import FUTURECTL, FUTURED, TOP, wait_for

sys.path.insert(0, str(TOP / "python"))
import futured  # noqa: E402  (the package of this tree, as python/tests uses it)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(prefix):
    r = subprocess.run([str(FUTURECTL), "keygen", "--out", str(prefix)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return prefix.with_suffix(".key"), prefix.with_suffix(".pub")


def public_of(pub):
    return next(l.split()[1] for l in pub.read_text().splitlines() if l.startswith("public"))


def ctl(*args, env=None, as_user=None, timeout=60):
    cmd = [str(FUTURECTL), *args]
    if as_user:
        cmd = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


@pytest.fixture
def open_dir():
    """A directory any user may enter (pytest's tmp_path is 0700), so that only the socket's own
    mode decides who connects."""
    d = tempfile.mkdtemp(prefix="futured-auth-")
    os.chmod(d, 0o755)
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


@pytest.fixture
def nobody():
    """An unprivileged user (uid, gid) that is not in root's group."""
    return 65534, 65534


def start_under_umask(start_daemon, *args):
    old = os.umask(0)
    try:
        return start_daemon(*args)
    finally:
        os.umask(old)


def test_ipc_sockets_get_mode_0660_whatever_the_umask(start_daemon, open_dir, nobody):
    sock = f"{open_dir}/f.sock"
    d = start_under_umask(start_daemon, "--listen", f"ipc://{sock}", "--store", "memory")
    for path in (sock, d.endpoint[6:], d.events[6:]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660, path
    assert os.stat(sock).st_gid == os.getgid()
    # nobody is neither the owner nor in the group: refused by the kernel at connect.
    r = ctl("-c", f"ipc://{sock}", "stats", as_user=nobody[0])
    assert r.returncode == 69 and "permission denied" in r.stderr, r.stderr
    # The owner is served.
    assert ctl("-c", f"ipc://{sock}", "stats").returncode == 0


def test_socket_group_and_mode_let_a_group_in(start_daemon, open_dir, nobody):
    sock = f"{open_dir}/g.sock"
    start_under_umask(start_daemon, "--listen", f"ipc://{sock}", "--store", "memory",
                      "--socket-group", "nogroup", "--socket-mode", "0660")
    st = os.stat(sock)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == nobody[1]
    r = ctl("-c", f"ipc://{sock}", "stats", as_user=nobody[0])
    assert r.returncode == 0, r.stderr


def test_bad_socket_options_are_exit_2(tmp_path):
    for args, why in ((["--socket-mode", "0888"], "--socket-mode"),
                      (["--socket-group", "no-such-group-here"], "no such group")):
        r = subprocess.run([str(FUTURED), "--listen", f"ipc://{tmp_path}/x.sock", "--store",
                            "memory", *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and why in r.stderr, r.stderr


def test_tcp_without_a_key_pair_is_refused(tmp_path):
    r = subprocess.run([str(FUTURED), "--listen", f"tcp://127.0.0.1:{free_port()}",
                        "--events", f"ipc://{tmp_path}/ev.sock", "--store", "memory"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "without authentication" in r.stderr and "--curve-secret-key" in r.stderr
    # Events on tcp:// too.
    r = subprocess.run([str(FUTURED), "--listen", f"ipc://{tmp_path}/f.sock",
                        "--events", f"tcp://127.0.0.1:{free_port()}", "--check-config"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "without authentication" in r.stderr, r.stderr


def test_keygen_writes_a_private_key_and_never_overwrites(tmp_path):
    key, pub = keygen(tmp_path / "k")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub).st_mode) == 0o644
    assert public_of(pub) in key.read_text()
    r = ctl("keygen", "--out", str(tmp_path / "k"))
    assert r.returncode == 2 and "exists" in r.stderr
    out = ctl("keygen").stdout.split()
    assert out[0] == "public" and out[2] == "secret" and len(out[1]) == len(out[3]) == 40


def test_a_readable_secret_key_is_refused(tmp_path):
    key, _ = keygen(tmp_path / "srv")
    os.chmod(key, 0o644)
    r = subprocess.run([str(FUTURED), "--listen", f"tcp://127.0.0.1:{free_port()}",
                        "--events", f"ipc://{tmp_path}/ev.sock", "--store", "memory",
                        "--curve-secret-key", str(key)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "readable by group or others" in r.stderr, r.stderr


class CurveSetup:
    def __init__(self, tmp_path, start_daemon, allow_clients=True):
        self.server_key, self.server_pub = keygen(tmp_path / "server")
        self.client_key, self.client_pub = keygen(tmp_path / "client")
        self.other_key, self.other_pub = keygen(tmp_path / "other")
        self.allow = tmp_path / "allow"
        self.allow.write_text("# clients\n" + (self.client_pub.read_text() if allow_clients
                                               else ""))
        self.tcp = f"tcp://127.0.0.1:{free_port()}"
        self.d = start_daemon("--listen", self.tcp, "--store", "memory",
                              "--curve-secret-key", str(self.server_key),
                              "--curve-allow", str(self.allow))

    def raw_hello(self, key=None, timeout=2.0):
        """hello over tcp:// from a raw DEALER, with the key pair in `key` (a .key file) or
        none; the reply, or None when none comes within `timeout` seconds."""
        s = self.d.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if key:
            pair = dict(l.split()[:2] for l in key.read_text().splitlines()
                        if l and not l.startswith("#"))
            s.curve_serverkey = public_of(self.server_pub).encode()
            s.curve_publickey = pair["public"].encode()
            s.curve_secretkey = pair["secret"].encode()
        s.connect(self.tcp)
        try:
            s.send(msgpack.packb({"v": 1, "id": 1, "op": "hello"}))
            if not s.poll(int(timeout * 1000)):
                return None
            return msgpack.unpackb(s.recv())
        finally:
            s.close(0)


def test_only_allowed_curve_clients_are_answered(tmp_path, start_daemon):
    cs = CurveSetup(tmp_path, start_daemon)
    assert cs.raw_hello(cs.client_key)["ok"]
    assert cs.raw_hello(cs.other_key) is None      # a key not on the list
    assert cs.raw_hello(None) is None              # no CURVE at all
    assert "refused a CURVE client" in cs.d.output()
    # futurectl with options, then with the environment; the server key as a file or a key.
    r = ctl("-c", cs.tcp, "--server-key", str(cs.server_pub), "--client-key",
            str(cs.client_key), "submit", "noop", "--wait")
    assert r.returncode == 0, r.stderr
    r = ctl("-c", cs.tcp, "stats", env={"FUTURED_SERVER_KEY": public_of(cs.server_pub),
                                         "FUTURED_CLIENT_KEY": str(cs.client_key)})
    assert r.returncode == 0, r.stderr
    r = ctl("-c", cs.tcp, "--server-key", str(cs.server_pub), "--client-key",
            str(cs.other_key), "stats")
    assert r.returncode == 69 and "allow list" in r.stderr, r.stderr
    # The Python client.
    with futured.Client(cs.tcp, server_key=str(cs.server_pub),
                        client_key=str(cs.client_key)) as c:
        c.run("noop")
        assert c.call("stats")["stats"]["done"] >= 2
    with pytest.raises(futured.Unreachable):
        futured.Client(cs.tcp, server_key=str(cs.server_pub), client_key=str(cs.other_key),
                       connect_timeout=1.0)


def test_the_allow_list_is_read_again_at_sighup(tmp_path, start_daemon):
    cs = CurveSetup(tmp_path, start_daemon, allow_clients=False)
    assert cs.raw_hello(cs.client_key) is None
    cs.allow.write_text(cs.client_pub.read_text() + "\n" + public_of(cs.other_pub) + " other\n")
    cs.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "allow list: 2 client keys" in cs.d.output(), 10, "the reload")
    assert cs.raw_hello(cs.client_key)["ok"]
    assert cs.raw_hello(cs.other_key)["ok"]
    # A list that does not parse keeps the one in effect.
    cs.allow.write_text("not a key\n")
    cs.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "allow:1: expected a Z85 public key" in cs.d.output(), 10, "the error")
    assert cs.raw_hello(cs.client_key)["ok"]


def test_events_over_curve_for_the_executor_and_asyncio(tmp_path, start_daemon):
    """tcp:// events too: futured.Executor completes its futures from events (a SUB socket over
    CURVE), and futured.aio's as_completed likewise."""
    import asyncio

    server_key, server_pub = keygen(tmp_path / "server")
    client_key, client_pub = keygen(tmp_path / "client")
    allow = tmp_path / "allow"
    allow.write_text(client_pub.read_text())
    tcp, events = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    start_daemon("--listen", tcp, "--events", events, "--store", "memory",
                 "--curve-secret-key", str(server_key), "--curve-allow", str(allow))
    keys = {"server_key": str(server_pub), "client_key": str(client_key)}
    with futured.Executor(tcp, **keys) as ex:
        assert ex.client.events_endpoint == events
        assert ex.submit(futured.kinds.prime, 91).result(timeout=30)["is_prime"] is False

    async def run():
        async with futured.aio.Client(tcp, **keys) as c:
            ids = [await c.submit(futured.kinds.noop) for _ in range(3)]
            done = [f.id async for f in c.as_completed(ids, timeout=30)]
            assert sorted(done) == sorted(ids)

    asyncio.run(run())
