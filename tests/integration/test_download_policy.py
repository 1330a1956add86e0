"""Which addresses a download may connect to (--download-allow / --download-deny, and the built-in
denial of loopback, link-local and unspecified addresses): every spelling of a loopback or
metadata address, and a redirect to one, fails with `download_denied` naming the rule under the
defaults, and goes through once the operator allows it. The check runs on the address libcurl
actually connects to, so name resolution and redirects cannot get around it."""
import signal
import socket
import subprocess
import urllib.parse

import pytest

from conftest import FUTURED, wait_for
from httpserver import start_testhttp, testhttp  # noqa: F401 (fixtures)

GIF = "/flags/br/br.gif"


def fetch(daemon, url, **args):
    """The `result` reply of one inline download of `url`."""
    r = daemon.c.rq("submit", jobs=[{"kind": "download", "args": {"url": url, **args}}])
    assert r["ok"], r
    r = daemon.c.rq("result", future=r["ids"][0], timeout=20, reply_timeout=25)
    assert r["ok"], r
    return r


def spellings(port):
    """The same loopback server written four ways, and the rule each is denied by."""
    return {
        "127.0.0.1": (f"http://127.0.0.1:{port}", "127.0.0.0/8"),
        "localhost": (f"http://localhost:{port}", ("127.0.0.0/8", "::1/128")),
        "decimal": (f"http://2130706433:{port}", "127.0.0.0/8"),
        "mapped": (f"http://[::ffff:127.0.0.1]:{port}", "127.0.0.0/8"),
    }


def assert_denied(r, rules, address=None):
    assert r["state"] == "failed", r
    f = r["failure"]
    assert f["code"] == "download_denied", f
    rules = (rules,) if isinstance(rules, str) else rules
    assert f["rule"] in rules, f
    assert f["rule"] in f["message"], f
    if address:
        assert f["address"] == address, f
    assert f["address"] in f["message"], f


def port_of(server):
    return urllib.parse.urlsplit(server.url).port


@pytest.fixture
def listener():
    """A TCP socket listening on 127.0.0.1 that never accepts: a connection made to it stays in
    its backlog, so untouched() tells whether anything connected at all."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    s.setblocking(False)
    yield s
    s.close()


def untouched(s):
    try:
        s.accept()[0].close()
        return False
    except BlockingIOError:
        return True


@pytest.fixture
def strict(start_daemon):
    """A daemon with the default rules: loopback is not allowed."""
    return start_daemon("--threads", "2", "--processes", "1", allow_loopback=False)


def test_defaults_deny_every_spelling_of_loopback(strict, listener):
    port = listener.getsockname()[1]
    for name, (base, rule) in spellings(port).items():
        r = fetch(strict, base + GIF)
        assert_denied(r, rule)
        assert "--download-allow" in r["failure"]["message"], r
    assert_denied(fetch(strict, f"http://127.0.0.1:{port}/"), "127.0.0.0/8", "127.0.0.1")
    assert_denied(fetch(strict, f"http://[::ffff:127.0.0.1]:{port}/"), "127.0.0.0/8", "127.0.0.1")
    assert_denied(fetch(strict, f"http://2130706433:{port}/"), "127.0.0.0/8", "127.0.0.1")
    # Refused before the socket existed: no connection was ever made.
    assert untouched(listener)


@pytest.mark.parametrize("url, rule, address", [
    ("http://169.254.169.254/latest/meta-data/", "169.254.0.0/16", "169.254.169.254"),
    ("http://[::ffff:169.254.169.254]/", "169.254.0.0/16", "169.254.169.254"),
    ("http://0.0.0.0:9/", "0.0.0.0/8", "0.0.0.0"),
    ("http://[::1]:9/", "::1/128", "::1"),
    ("http://[::]:9/", "::/128", "::"),
])
def test_defaults_deny_link_local_and_unspecified(strict, url, rule, address):
    r = fetch(strict, url, timeout=5)
    assert_denied(r, rule, address)


def test_a_redirect_to_a_denied_address_is_denied(start_daemon, start_testhttp, listener):
    # The first hop is a loopback address the operator allowed alone (127.0.0.2); every target of
    # its redirects is still denied by the built-in rules.
    d = start_daemon("--threads", "2", "--processes", "1", "--download-allow", "127.0.0.2",
                     allow_loopback=False)
    hop = start_testhttp("--host", "127.0.0.2")
    assert fetch(d, hop.url + GIF)["state"] == "done"
    targets = dict(spellings(listener.getsockname()[1]))
    targets["metadata"] = ("http://169.254.169.254", "169.254.0.0/16")
    for name, (base, rule) in targets.items():
        to = urllib.parse.quote(base + GIF, safe="")
        r = fetch(d, f"{hop.url}/misbehave/redirect?to={to}", timeout=5)
        assert_denied(r, rule)
    assert untouched(listener)


def test_allowing_loopback_lets_every_spelling_through(daemon, testhttp, start_testhttp):
    # The `daemon` fixture runs with --download-allow 127.0.0.0/8 and ::1/128.
    body = (testhttp.root / GIF.lstrip("/").split("/", 1)[1]).read_bytes()
    for name, (base, _) in spellings(port_of(testhttp)).items():
        r = fetch(daemon, base + GIF)
        assert r["state"] == "done" and r["result"]["body"] == body, (name, r)
        to = urllib.parse.quote(base + GIF, safe="")
        r = fetch(daemon, f"{testhttp.url}/misbehave/redirect?to={to}")
        assert r["state"] == "done" and r["result"]["body"] == body, (name, r)
    if socket.has_ipv6:
        try:
            v6 = start_testhttp("--host", "::1")
        except AssertionError:
            v6 = None  # no IPv6 loopback on this machine
        if v6:
            r = fetch(daemon, v6.url + GIF)
            assert r["state"] == "done" and r["result"]["body"] == body, r


def test_allowing_link_local_gets_past_the_check(start_daemon):
    d = start_daemon("--download-allow", "169.254.0.0/16", allow_loopback=False)
    r = fetch(d, "http://169.254.169.254/", timeout=0.5)
    # Whatever answers there (nothing, on a test machine), the policy did not stop it.
    assert r["state"] != "failed" or r["failure"]["code"] != "download_denied", r


def test_the_longest_prefix_decides(start_daemon, testhttp):
    port = port_of(testhttp)
    d = start_daemon("--download-deny", "127.0.0.1/32", "--download-deny", "::ffff:0:0/96",
                     "--download-allow", "127.0.0.0/9")
    # 127.0.0.1/32 (the operator's deny) beats the allows of 127.0.0.0/8 and /9.
    r = fetch(d, f"http://127.0.0.1:{port}{GIF}")
    assert_denied(r, "127.0.0.1/32")
    assert "--download-deny" in r["failure"]["message"], r
    # 127.0.0.2 falls under the allows, longer than the deny of every IPv4 address (0.0.0.0/0).
    r = fetch(d, f"http://127.0.0.2:{port}{GIF}")
    assert r["state"] == "failed" and r["failure"]["code"] == "connection", r  # nobody there
    # 198.51.100.1 (TEST-NET-2) is denied by 0.0.0.0/0 alone.
    assert_denied(fetch(d, "http://198.51.100.1/", timeout=1), "0.0.0.0/0", "198.51.100.1")


def test_reload_applies_to_new_and_reused_connections(start_daemon, testhttp, tmp_path):
    conf = tmp_path / "futured.conf"
    conf.write_text("[futured]\ndownload-allow = 127.0.0.0/8\n")
    d = start_daemon("--config", str(conf), allow_loopback=False)
    assert fetch(d, testhttp.url + GIF)["state"] == "done"  # its connection stays in the cache
    conf.write_text("[futured]\ndownload-deny = 10.0.0.0/8\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "download-allow/download-deny rules" in d.output(), what="the reload")
    assert_denied(fetch(d, testhttp.url + GIF), "127.0.0.0/8", "127.0.0.1")
    conf.write_text("[futured]\ndownload-allow = 127.0.0.1\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.output().count("download-allow/download-deny rules") == 2,
             what="the second reload")
    assert fetch(d, testhttp.url + GIF)["state"] == "done"


@pytest.mark.parametrize("args, message", [
    (["--download-allow", "127.0.0.1/8"], "bits set past the prefix length"),
    (["--download-deny", "10.0.0.0/33"], "an IPv4 prefix length is 0 to 32, not '10.0.0.0/33'"),
    (["--download-deny", "fe80::/129"], "an IPv6 prefix length is 0 to 128"),
    (["--download-allow", "localhost"], "expected an IPv4 or IPv6 address or network"),
    (["--download-allow", "2130706433"], "expected an IPv4 or IPv6 address or network"),
    (["--download-allow", ""], "expected an IPv4 or IPv6 address or network"),
])
def test_a_bad_network_exits_2(tmp_path, args, message):
    p = subprocess.run([str(FUTURED), "--listen", f"ipc://{tmp_path}/x.sock", "--store", "memory",
                        *args], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, (args, p.stderr)
    assert message in p.stderr, p.stderr
    assert not (tmp_path / "x.sock").exists()


def test_config_file_rules_are_listed_and_checked(tmp_path):
    conf = tmp_path / "futured.conf"
    conf.write_text("[futured]\ndownload-allow = ::ffff:127.0.0.0/104\n"
                    "download-deny = 10.0.0.0/8\n")
    p = subprocess.run([str(FUTURED), "--config", str(conf), "--listen", f"ipc://{tmp_path}/x.sock",
                        "--store", "memory", "--download-allow", "::1", "--check-config"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    lines = [x for x in p.stdout.splitlines() if x.startswith(("download-allow", "download-deny"))]
    assert lines == ["download-allow = 127.0.0.0/8", "download-deny = 10.0.0.0/8",
                     "download-allow = ::1/128"], p.stdout
    conf.write_text("[futured]\ndownload-deny = 10.1.0.0/8\n")
    p = subprocess.run([str(FUTURED), "--config", str(conf), "--listen", f"ipc://{tmp_path}/x.sock",
                        "--store", "memory"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "3: download-deny: " not in p.stderr
    assert "2: download-deny: the address has bits set" in p.stderr, p.stderr
