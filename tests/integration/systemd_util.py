"""Helpers of the systemd tests: a NOTIFY_SOCKET listener and a futured started the way a
service manager starts it (its own environment, a config file)."""
import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time

import zmq

from conftest import FUTURED, Client, wait_for


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket: records (monotonic time,
    {key: value}) for every message futured sends."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self.lock:
                self.messages.append((time.monotonic(), fields))

    def all(self):
        with self.lock:
            return list(self.messages)

    def times_of(self, key, value=None, since=0.0):
        return [t for t, m in self.all() if key in m and (value is None or m[key] == value)
                and t >= since]

    def wait(self, key, value=None, since=0.0, timeout=15.0):
        """Waits for a message with `key` (= `value`) received after `since`; returns its
        time."""
        return wait_for(lambda: (self.times_of(key, value, since) or [None])[0], timeout,
                        f"{key}={value} from futured")

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


class ServiceDaemon:
    """futured started with `env` added to a clean environment, on ipc endpoints in `tmp`."""

    def __init__(self, tmp, args, env, wait_hello=True):
        self.tmp = pathlib.Path(tmp)
        self.endpoint = f"ipc://{tmp}/futured.sock"
        self.events = f"ipc://{tmp}/events.sock"
        self.log = open(self.tmp / "futured.log", "w+")
        self.ctx = zmq.Context()
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        if "--state-dir" not in args:  # never the machine's default store
            args = [*args, "--state-dir", str(self.tmp / "state")]
        self.proc = subprocess.Popen([str(FUTURED), *args], env=full_env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.clients = []

    def client(self, endpoint=None):
        c = Client(self.ctx, endpoint or self.endpoint)
        self.clients.append(c)
        return c

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def children(self):
        """PIDs whose parent is futured: its worker processes."""
        kids = []
        for d in pathlib.Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("PPid:") and int(line.split()[1]) == self.proc.pid:
                    kids.append(int(d.name))
        return kids

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(timeout)
        for c in self.clients:
            c.close()
        self.ctx.term()
        return rc


class SocketActivated:
    """futured started by `systemd-socket-activate`, which passes it the two listening sockets
    `sock` and `events` (paths in tmp_path) and starts it on the first connection; `args` are
    futured's own options beyond --listen/--events. output() is what it logged."""

    def __init__(self, tmp_path, *args):
        tool = shutil.which("systemd-socket-activate")
        assert tool, "systemd-socket-activate is missing (package systemd)"
        self.sock, self.events = tmp_path / "futured.sock", tmp_path / "events.sock"
        self.log = open(tmp_path / "futured.log", "w+")
        self.proc = subprocess.Popen(
            [tool, "-l", str(self.sock), "-l", str(self.events), str(FUTURED), "--listen",
             f"ipc://{self.sock}", "--events", f"ipc://{self.events}", *args],
            stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def kill(self):
        """Kills futured if it still runs (a test's finally)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
