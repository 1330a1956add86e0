"""The per-principal quota on download bytes held at once (--quota-download-bytes; docs/SECURITY.md,
Downloads per principal): a download whose next body bytes would take its principal's running
downloads past the quota fails with `download_quota`; below it downloads are served; another
principal's downloads are not counted. Against the real test HTTP server: /misbehave/large?hold=K
sends K bytes and then nothing for 60 s, so a transfer holds exactly K bytes while the test goes
on. The two principals are root (the test) and nobody (a raw client under setpriv)."""
import time

import pytest

from conftest import wait_for
from httpserver import start_testhttp, testhttp  # noqa: F401 (fixtures)
from test_download import files, next_event, pattern, state_of, submit
from test_principals import NOBODY, as_nobody, open_dir, start_shared  # noqa: F401 (fixture)


def large(srv, n, hold=None):
    return f"{srv.url}/misbehave/large?bytes={n}" + (f"&hold={hold}" if hold else "")


def result(d, fid, wait=20.0):
    r = d.c.rq("result", future=fid, timeout=wait, reply_timeout=wait + 5)
    assert r["ok"], r
    return r


def hold_bytes(d, sub, srv, n, hold, path):
    """Starts a download of `n` bytes that stops after `hold` and waits (its progress events) until
    the daemon has received them: its principal then holds `hold` bytes. Returns its ID."""
    fid = submit(d, url=large(srv, n, hold), path=path, timeout=120)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, ev = next_event(sub, deadline - time.monotonic())
        if ev and ev["id"] == fid and ev["bytes"] >= hold:
            assert ev["bytes"] == hold, ev
            return fid
    pytest.fail(f"the held download never reported {hold} bytes: {state_of(d, fid)}")


def test_a_download_past_the_quota_fails_and_one_at_it_is_served(start_daemon, testhttp):
    d = start_daemon("--store", "memory", "--quota-download-bytes", "100000")
    assert d.c.rq("hello")["quotas"]["download_bytes"] == 100000
    # Exactly at the quota: served, inline and to a file.
    r = result(d, submit(d, url=large(testhttp, 100000)))
    assert r["state"] == "done" and r["result"]["body"] == pattern(100000), r["state"]
    r = result(d, submit(d, url=large(testhttp, 100000), path="at.bin"))
    assert r["state"] == "done", r
    assert (d.download_dir / "at.bin").read_bytes() == pattern(100000)
    # One byte more: the documented failure, naming the principal and the quota; a file download
    # leaves nothing behind.
    for args in ({}, {"path": "over.bin"}):
        r = result(d, submit(d, url=large(testhttp, 100001), **args))
        assert r["state"] == "failed", r
        assert r["failure"]["code"] == "download_quota", r
        assert "uid:0" in r["failure"]["message"], r
        assert "100000 bytes" in r["failure"]["message"], r
    wait_for(lambda: files(d) == ["at.bin"], 5, f"left behind: {files(d)}")
    # Bytes come back with each transfer: the same download again is served.
    r = result(d, submit(d, url=large(testhttp, 100000)))
    assert r["state"] == "done", r


def test_the_quota_counts_every_running_download_of_one_principal_only(start_daemon, testhttp,
                                                                      open_dir):
    d, sock = start_shared(start_daemon, open_dir, "--store", "memory",
                           "--quota-download-bytes", "1000000")
    with d.subscriber("progress/") as sub:
        held = hold_bytes(d, sub, testhttp, 2000000, 700000, "held.bin")
    # root holds 700,000 bytes: 400,000 more would pass 1,000,000 ...
    r = result(d, submit(d, url=large(testhttp, 400000)))
    assert r["state"] == "failed" and r["failure"]["code"] == "download_quota", r
    assert "other downloads held 700000" in r["failure"]["message"], r
    # ... 300,000 more reach it exactly: served.
    r = result(d, submit(d, url=large(testhttp, 300000)))
    assert r["state"] == "done" and len(r["result"]["body"]) == 300000, r["state"]
    # Another principal is not counted with root: nobody downloads 900,000 bytes meanwhile.
    (hello, sub_reply) = as_nobody(open_dir, sock, {"op": "hello"}, {
        "op": "submit", "reply": "results",
        "jobs": [{"kind": "download", "args": {"url": large(testhttp, 900000), "path": "n.bin"}}]})
    assert hello["principal"] == f"uid:{NOBODY}"
    assert sub_reply["ok"], sub_reply
    assert sub_reply["results"][0]["state"] == "done", sub_reply
    assert (d.download_dir / "n.bin").read_bytes() == pattern(900000)
    # The held transfer is still running, holding its bytes; cancelling it gives them back.
    assert state_of(d, held) == "running"
    assert d.c.rq("cancel", ids=[held])["cancelled"] == [True]
    r = result(d, submit(d, url=large(testhttp, 1000000)))
    assert r["state"] == "done", r["state"]


def test_a_reload_changes_the_quota(start_daemon, testhttp, tmp_path):
    conf = tmp_path / "futured.conf"
    conf.write_text("[futured]\nquota-download-bytes = 1000\n")
    d = start_daemon("--store", "memory", "--config", str(conf))
    r = result(d, submit(d, url=large(testhttp, 5000)))
    assert r["failure"]["code"] == "download_quota", r
    conf.write_text("[futured]\nquota-download-bytes = 0\n")
    d.proc.send_signal(1)  # SIGHUP
    wait_for(lambda: d.c.rq("hello")["quotas"]["download_bytes"] == 0, 5, "no reload")
    r = result(d, submit(d, url=large(testhttp, 5000)))
    assert r["state"] == "done", r
