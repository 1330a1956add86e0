"""Issue 12: no client can crash, starve or exhaust the daemon.

Every reply is well-formed while pool threads change states under it; frames are refused by their
size and shape before they are decoded, so that no declared length makes the daemon allocate more
than the frame holds (asserted on the daemon's peak memory, VmHWM, not on time); client text is
UTF-8; and the small rules docs/PROTOCOL.md states about odd requests hold.
"""
import socket
import struct
import threading

import msgpack
import pytest
import zmq

from conftest import wait_for
from test_bad_input import assert_error, assert_serving_and_nothing_queued, pack, submitted

MIB = 1 << 20


def vm_hwm_kib(daemon):
    """The daemon's peak resident set so far, in KiB."""
    for line in open(f"/proc/{daemon.proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def raw_map(*pairs):
    """A msgpack map packed pair by pair, so that a key may repeat."""
    return b"".join([bytes([0x80 | len(pairs)]) if len(pairs) < 16 else
                     b"\xde" + struct.pack(">H", len(pairs))] +
                    [pack(k) + pack(v) for k, v in pairs])


# --- 1. every reply is well-formed ----------------------------------------------------------------

def test_list_replies_decode_while_20000_thread_jobs_start(daemon):
    """`list` by state while thread-pool threads move futures from pending to running: each reply
    is read raw (no client library to hide a bad one) and must be exactly one well-formed map whose
    futures all are in the state asked for."""
    submitter = daemon.client()
    lister = daemon.client()
    jobs = [{"kind": "sleep", "args": {"seconds": 0 if i % 2 else 0.0001}} for i in range(10000)]
    for _ in range(2):
        submitter.send(op="submit", jobs=jobs)
    for i in range(400):
        lister.sock.send(pack({"v": 1, "id": i, "op": "list", "limit": 10000,
                               "state": "pending" if i % 2 else "running"}))
    seen = set()
    for _ in range(400):
        assert lister.sock.poll(30000), "no list reply"
        raw = lister.sock.recv()
        r = msgpack.unpackb(raw, strict_map_key=False)  # raises on a malformed reply
        assert r["ok"], r
        want = "pending" if r["id"] % 2 else "running"
        assert all(f["state"] == want for f in r["futures"]), r["id"]
        seen.add(r["id"])
    assert seen == set(range(400))
    for _ in range(2):
        assert submitter.sock.poll(60000), "no submit reply"
        assert msgpack.unpackb(submitter.sock.recv(), strict_map_key=False)["ok"]
    wait_for(lambda: daemon.c.rq("stats")["stats"]["finished"] == 20000, timeout=60,
             what="the 20000 sleeps to finish")


def test_stats_status_and_wait_replies_decode_while_jobs_start(daemon):
    """The other replies that read states pool threads write: stats, status and wait."""
    c = daemon.client()
    ids = c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 0}}] * 10000)["ids"]
    for i in range(300):
        op = ("stats", "status", "wait")[i % 3]
        fields = {} if op == "stats" else {"ids": ids} if op == "status" else \
            {"ids": ids, "timeout": 0}
        c.sock.send(pack({"v": 1, "id": i, "op": op, **fields}))
    for _ in range(300):
        assert c.sock.poll(30000)
        r = msgpack.unpackb(c.sock.recv(), strict_map_key=False)
        assert r["ok"], r
        if "states" in r:
            assert len(r["states"]) == len(ids)
        if "done" in r:
            assert sorted(r["done"] + r["not_done"]) == ids
    wait_for(lambda: daemon.c.rq("stats")["stats"]["finished"] == 10000, timeout=60,
             what="the sleeps to finish")


# --- 2. sizes checked before decoding ------------------------------------------------------------

HUGE_ARRAY = b"\xdd\xff\xff\xff\xff"        # an array of 2^32 - 1 elements, in 5 bytes
HUGE_MAP = b"\xdf\xff\xff\xff\xff"          # a map of 2^32 - 1 pairs
DEEP = b"\x91" * 100000 + b"\xc0"           # 100000 nested arrays


@pytest.mark.parametrize("frame", [
    HUGE_ARRAY, HUGE_MAP, HUGE_ARRAY + b"\xc0" * 1000,
    b"\x84\xa1v\x01\xa2id\x07\xa2op\xa5hello\xa1x" + HUGE_ARRAY,   # inside a request
    DEEP, b"\x84\xa1v\x01\xa2id\x07\xa2op\xa5hello\xa1x" + b"\x91" * 33 + b"\xc0",
], ids=["array32", "map32", "array32-with-some", "in-a-request", "deep", "33-deep-in-a-request"])
def test_declared_lengths_and_depth_are_bad_message_without_allocating(daemon, frame):
    before = submitted(daemon)
    hwm = vm_hwm_kib(daemon)
    c = daemon.client()
    r = c.raw(frame)
    # Not decoded at all, so not even the id is trusted.
    assert_error(r, "bad_message", rid=None)
    assert vm_hwm_kib(daemon) - hwm < 16 * 1024, (hwm, vm_hwm_kib(daemon))
    assert_serving_and_nothing_queued(daemon, before, c)


def test_32_levels_of_nesting_are_decoded(daemon):
    """The depth limit is 32 containers, the request map included."""
    c = daemon.client()
    r = c.raw(b"\x84\xa1v\x01\xa2id\x07\xa2op\xa5hello\xa1x" + b"\x91" * 31 + b"\xc0")
    assert_error(r, "unknown_field", rid=7, field="x")


def test_60_mib_frames_are_dropped_before_zeromq_allocates_them(daemon):
    """ZeroMQ's own cap (ZMQ_MAXMSGSIZE, max_message + 64 KiB) closes the connection of a larger
    frame when its header arrives, before it allocates the frame: a flood of 60 MiB frames of
    nils (which msgpack-c would expand to 1.4 GiB each) leaves the peak memory where it was."""
    before = submitted(daemon)
    hwm = vm_hwm_kib(daemon)
    c = daemon.client()
    n = 60 * MIB - 5 - 20
    frame = b"\x84\xa1v\x01\xa2id\x2a\xa2op\xa5hello\xa1x\xdd" + struct.pack(">I", n) + b"\xc0" * n
    for _ in range(20):
        c.sock.send(frame)
    with pytest.raises(TimeoutError):
        c.recv(timeout=2.0)
    grew = vm_hwm_kib(daemon) - hwm
    assert grew < 16 * 1024, f"peak memory grew by {grew} KiB"
    assert_serving_and_nothing_queued(daemon, before, c)


def test_frame_just_over_max_message_is_too_large_without_decoding(daemon):
    """Between max_message and ZeroMQ's cap a frame reaches the daemon, which refuses it by its
    size and never decodes it."""
    before = submitted(daemon)
    c = daemon.client()
    n = MIB + 32 * 1024
    frame = b"\x84\xa1v\x01\xa2id\x2a\xa2op\xa5hello\xa1x\xdd" + struct.pack(">I", n) + b"\xc0" * n
    assert_error(c.raw(frame), "too_large", rid=42)
    assert_serving_and_nothing_queued(daemon, before, c)


def test_too_large_echoes_only_an_id_near_the_start(daemon):
    c = daemon.client()
    pad = "x" * (MIB + 10)
    # The id after the padding is not searched for (that would mean reading the whole frame).
    r = c.raw(pack({"v": 1, "op": "hello", "pad": pad, "id": 9}))
    assert_error(r, "too_large", rid=None)
    r = c.raw(pack({"v": 1, "id": 8, "op": "hello", "pad": pad}))
    assert_error(r, "too_large", rid=8)


# --- 3. text is UTF-8 ----------------------------------------------------------------------------

BAD = b"caf\xc3(\xff"  # not UTF-8


def send_raw_request(c, fields):
    """Packs `fields` (whose bytes values are packed as msgpack str, not bin) and returns the
    reply, decoded strictly: an error message that is not UTF-8 fails here."""
    c.sock.send(msgpack.packb(fields, use_bin_type=False))
    assert c.sock.poll(10000)
    return msgpack.unpackb(c.sock.recv(), raw=False, strict_map_key=False)


@pytest.mark.parametrize("fields,code,field,index", [
    ({"op": BAD}, "bad_request", "op", None),
    ({"op": "submit", "jobs": [{"kind": BAD}]}, "bad_request", "kind", 0),
    ({"op": "submit", "jobs": [{"kind": "noop", "group": BAD}]}, "bad_request", "group", 0),
    ({"op": "probe", "token": BAD}, "bad_request", "token", None),
    ({"op": "list", "state": b"pending\xff"}, "bad_request", "state", None),
    ({"op": "wait", "ids": [1], "mode": BAD}, "bad_request", "mode", None),
    ({"op": "submit", "reply": BAD, "jobs": [{"kind": "noop"}]}, "bad_request", "reply", None),
    ({"op": "hello", BAD: 1}, "bad_request", None, None),
    ({"op": "submit", "jobs": [{"kind": "noop", BAD: 1}]}, "bad_request", None, 0),
    ({"op": "submit", "jobs": [{"kind": "prime", "args": {"n": 7, "method": BAD}}]},
     "bad_args", "method", 0),
    ({"op": "submit", "jobs": [{"kind": "prime", "args": {"n": 7, BAD: 1}}]},
     "bad_args", "args", 0),
    ({"op": "submit", "jobs": [{"kind": "download", "args": {"url": b"http://x/" + BAD}}]},
     "bad_args", "url", 0),
    ({"op": "submit", "jobs": [{"kind": "download", "args": {"url": "http://x/", "path": BAD}}]},
     "bad_args", "path", 0),
], ids=["op", "kind", "group", "token", "state", "mode", "reply", "key", "job-key", "method",
        "arg-name", "url", "path"])
def test_text_that_is_not_utf8_is_refused(daemon, fields, code, field, index):
    before = submitted(daemon)
    c = daemon.client()
    r = send_raw_request(c, {"v": 1, "id": 77, **fields})
    assert_error(r, code, rid=77, field=field, index=index)
    assert_serving_and_nothing_queued(daemon, before, c)


@pytest.mark.parametrize("fields,code,index", [
    ({"op": "é" * 40}, "unknown_op", None),
    ({"op": "submit", "jobs": [{"kind": "€" * 30}]}, "unknown_kind", 0),
    ({"op": "hello", "ü" * 50: 1}, "unknown_field", None),
    ({"op": "submit", "jobs": [{"kind": "prime", "args": {"n": 7, "ß" * 50: 1}}]}, "bad_args", 0),
    ({"op": "submit", "jobs": [{"kind": "download", "args": {"url": "ht tp://x" + "é" * 80}}]},
     "bad_url", 0),
], ids=["op", "kind", "field", "arg", "url"])
def test_quoted_client_text_is_cut_on_a_character_boundary(daemon, fields, code, index):
    """Messages quote at most a prefix of client text, never half a character (the reply is
    decoded with raw=False: a split character would fail to decode)."""
    c = daemon.client()
    r = send_raw_request(c, {"v": 1, "id": 78, **fields})
    assert_error(r, code, rid=78, index=index)
    assert "\ufffd" not in r["error"]["message"] and "?" not in r["error"]["message"], r


# --- 4. ID lists: de-duplicated fast, in request order --------------------------------------------

def test_wait_and_results_drop_repeats_in_request_order_status_keeps_them(daemon):
    c = daemon.client()
    ids = c.rq("submit", jobs=[{"kind": "noop"}] * 3)["ids"]
    c.rq("wait", ids=ids, timeout=10)
    hostile = [ids[2], ids[0]] * 4999 + [ids[1], ids[2]]     # 10000 IDs, 3 distinct
    w = c.rq("wait", ids=hostile, timeout=0)
    assert w["done"] == [ids[2], ids[0], ids[1]] and w["not_done"] == [], w
    r = c.rq("results", ids=hostile, timeout=0)
    assert r["ids"] == [ids[2], ids[0], ids[1]], r["ids"]
    assert [x["id"] for x in r["results"]] == r["ids"]
    assert c.rq("status", ids=hostile)["states"] == ["done"] * 10000
    assert c.rq("cancel", ids=[ids[0]] * 3)["cancelled"] == [False] * 3
    assert c.rq("release", ids=[ids[0]] * 3)["released"] == [True, False, False]


def test_10000_distinct_ids_in_reverse_keep_their_order(daemon):
    ids = list(range(10000, 0, -1))
    w = daemon.c.rq("wait", ids=ids, timeout=0)
    assert w["done"] == ids


# --- 5. the small rules --------------------------------------------------------------------------

@pytest.mark.parametrize("frame,field", [
    (raw_map(("v", 1), ("id", 5), ("op", "hello"), ("v", 1)), "v"),
    (raw_map(("v", 1), ("id", 5), ("op", "wait"), ("ids", [1]), ("ids", [2])), "ids"),
], ids=["v-twice", "ids-twice"])
def test_a_field_given_twice_is_bad_request(daemon, frame, field):
    c = daemon.client()
    assert_error(c.raw(frame), "bad_request", rid=5, field=field)


def test_a_job_field_or_argument_given_twice_is_refused(daemon):
    before = submitted(daemon)
    c = daemon.client()
    job = raw_map(("kind", "noop"), ("priority", 1), ("priority", 2))
    frame = raw_map(("v", 1), ("id", 6), ("op", "submit"))[1:]
    frame = b"\x84" + frame + pack("jobs") + b"\x91" + job
    assert_error(c.raw(frame), "bad_request", rid=6, field="priority", index=0)
    args = raw_map(("n", 7), ("n", 8))
    job = b"\x82" + pack("kind") + pack("prime") + pack("args") + args
    frame = b"\x84" + raw_map(("v", 1), ("id", 7), ("op", "submit"))[1:] + pack("jobs") + \
        b"\x91" + job
    assert_error(c.raw(frame), "bad_args", rid=7, field="args", index=0)
    assert_serving_and_nothing_queued(daemon, before, c)


def test_more_than_32_arguments_are_bad_args(daemon):
    r = daemon.c.rq("submit", jobs=[{"kind": "noop", "args": {f"a{i}": i for i in range(33)}}])
    assert_error(r, "bad_args", field="args", index=0)


def test_a_job_timeout_of_nil_means_none(daemon):
    r = daemon.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 0.01}, "timeout": None}])
    assert r["ok"], r
    assert daemon.c.rq("result", future=r["ids"][0], timeout=10)["state"] == "done"


@pytest.mark.parametrize("state", ["expired", "unknown"])
def test_list_of_a_state_no_future_is_held_in_is_bad_request(daemon, state):
    assert_error(daemon.c.rq("list", state=state), "bad_request", field="state")


@pytest.mark.parametrize("v", ["1", 1.0, None, -1])
def test_a_version_that_is_not_the_uint_1_is_bad_version(daemon, v):
    r = daemon.c.raw(pack({"v": v, "id": 3, "op": "hello"}))
    assert_error(r, "bad_version", rid=3, field="v")


def test_req_socket_with_its_empty_delimiter_is_served(daemon):
    """A REQ socket sends [empty, map]; the reply comes back with the delimiter."""
    req = daemon.ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(daemon.endpoint)
    try:
        req.send(pack({"v": 1, "id": 1, "op": "hello"}))
        assert req.poll(10000)
        r = msgpack.unpackb(req.recv(), strict_map_key=False)
        assert r["ok"] and r["id"] == 1, r
    finally:
        req.close(0)


def test_download_path_too_long_for_its_temporary_file_is_bad_args_at_submit(daemon):
    before = submitted(daemon)
    for path in ["x" * 218, "d" * 256 + "/x"]:
        r = daemon.c.rq("submit", jobs=[{"kind": "download",
                                         "args": {"url": "http://127.0.0.1:9/", "path": path}}])
        assert_error(r, "bad_args", field="path", index=0)
    assert submitted(daemon) == before
    # The longest file name allowed does get its temporary file (and fails only to connect).
    r = daemon.c.rq("submit", jobs=[{"kind": "download",
                                     "args": {"url": "http://127.0.0.1:9/", "path": "x" * 217}}])
    assert r["ok"], r
    res = daemon.c.rq("result", future=r["ids"][0], timeout=10)
    assert res["failure"]["code"] == "connection", res


def test_download_path_in_a_missing_directory_says_so(daemon):
    r = daemon.c.rq("submit", jobs=[{"kind": "download",
                                     "args": {"url": "http://127.0.0.1:9/", "path": "no/such.gif"}}])
    assert_error(r, "bad_args", field="path", index=0)
    assert "does not exist" in r["error"]["message"], r


class RawHTTP:
    """A misbehaving HTTP server: answers every connection with the same raw bytes."""

    def __init__(self, response):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.response = response
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.response)

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("response,check", [
    (b"HTTP/1.1 418 I'm a \xff\xfe teap\xc3\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
     lambda r: r["state"] == "failed" and r["failure"]["code"] == "http_error" and
     r["failure"]["message"].startswith("HTTP error 418 - I'm a ?? teap")),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/\xff\xc3\r\nContent-Length: 2\r\nConnection: close"
     b"\r\n\r\nhi",
     lambda r: r["state"] == "done" and r["result"]["content_type"] is None and
     r["result"]["body"] == b"hi"),
], ids=["reason-phrase", "content-type"])
def test_server_text_that_is_not_utf8_does_not_break_the_reply(daemon, response, check):
    """What an HTTP server sends reaches a reply as text only when it is UTF-8: a reason phrase is
    repaired ('?' for each bad byte), a Content-Type that is not text becomes nil."""
    server = RawHTTP(response)
    try:
        c = daemon.client()
        r = c.rq("submit", jobs=[{"kind": "download", "args": {"url": server.url}}])
        assert r["ok"], r
        c.sock.send(pack({"v": 1, "id": 99, "op": "result", "future": r["ids"][0],
                          "timeout": 10}))
        assert c.sock.poll(15000)
        res = msgpack.unpackb(c.sock.recv(), raw=False, strict_map_key=False)
        assert check(res), res
    finally:
        server.close()
