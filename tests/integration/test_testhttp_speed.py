"""futured-testhttp itself: a connection costs no thread, waits do not block other connections,
kept-alive connections are reused, and SIGTERM stops the server even with connections in the
middle of a wait (tests/testhttp/testhttp.c, head comment)."""
import http.client
import os
import selectors
import signal
import socket
import time

from httpserver import start_testhttp  # noqa: F401 (fixture)

N = 300


def host_port(server):
    host, port = server.url[len("http://"):].rsplit(":", 1)
    return host, int(port)


def open_requests(server, paths):
    """One new connection per path, each with a GET sent; returns [(socket, time sent)]."""
    host, port = host_port(server)
    out = []
    for path in paths:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        out.append((s, time.monotonic()))
    return out


def read_all(conns, timeout):
    """Reads every connection to EOF (or a reset); returns [(status or None, time of the first
    byte or None)]."""
    sel = selectors.DefaultSelector()
    data, first = [b""] * len(conns), [None] * len(conns)
    for i, (s, _) in enumerate(conns):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    while sel.get_map():
        left = deadline - time.monotonic()
        assert left > 0, f"{len(sel.get_map())} connections still open after {timeout} s"
        for key, _ in sel.select(left):
            i = key.data
            try:
                chunk = key.fileobj.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                if first[i] is None:
                    first[i] = time.monotonic()
                data[i] += chunk
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
    out = []
    for d, t in zip(data, first):
        head = d.split(b" ", 2)
        out.append((int(head[1]) if len(head) > 1 and head[1].isdigit() else None, t))
    return out


def threads(server):
    return len(os.listdir(f"/proc/{server.proc.pid}/task"))


def test_keep_alive_reuses_the_connection(start_testhttp):
    server = start_testhttp()
    conn = http.client.HTTPConnection(*host_port(server), timeout=10)
    conn.request("GET", "/flags/br/br.gif")
    r = conn.getresponse()
    assert r.status == 200 and not r.will_close
    r.read()
    sock = conn.sock
    conn.request("GET", "/flags/zz/zz.gif")
    r = conn.getresponse()
    assert r.status == 404 and not r.will_close
    r.read()
    assert conn.sock is sock  # http.client would have reconnected had the server closed
    conn.close()


def test_many_waiting_connections_cost_no_threads(start_testhttp):
    delay = 0.5
    server = start_testhttp("--mode", "delay", "--delay", str(delay))
    before = threads(server)
    conns = open_requests(server, [f"/flags/{a}{b}/{a}{b}.gif" for a in "abcdefghijkl"
                                   for b in "abcdefghijklmnopqrstuvwxyz"][:N])
    during = threads(server)
    results = read_all(conns, timeout=delay + 10)
    assert during == before <= 4, (before, during)
    assert all(status in (200, 404) for status, _ in results), results
    # Each answer waited the delay from its own request (read_all's timeout bounds the rest).
    waits = [first - sent for (_, sent), (_, first) in zip(conns, results)]
    assert min(waits) >= delay - 0.01, min(waits)


def test_sigterm_stops_at_once_with_connections_waiting(start_testhttp):
    server = start_testhttp("--mode", "delay", "--delay", "30")
    conns = open_requests(server, ["/flags/br/br.gif"] * 100)
    conns += open_requests(server, ["/misbehave/trickle", "/misbehave/slow-headers",
                                    "/misbehave/large?bytes=100000000&rate=1000"])
    time.sleep(0.5)  # every one suspended, waiting on the timer
    server.proc.send_signal(signal.SIGTERM)
    # Long before the 30 s delays end (a server that waited them out would fail here).
    assert server.proc.wait(5) == 0
    results = read_all(conns, timeout=5)
    assert all(status is None for status, _ in results[:100]), results[:100]
