"""Hostile and malformed requests (docs/PROTOCOL.md, "Error codes" and "Limits").

Every case asserts the exact error code (and `field`/`index` where the spec names them), and then
that the daemon still serves other clients and that the rejected request queued nothing: an error
reply never changes any state.
"""
import struct

import msgpack
import pytest

from conftest import wait_for

MIB = 1 << 20



def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def submitted(daemon):
    return daemon.c.rq("stats")["stats"]["submitted"]


def assert_error(reply, code, *, rid="any", field=None, index=None):
    """The reply is an error with `code`; `field`/`index` are checked when given, and `index` must
    be absent when not given (only batch errors carry one)."""
    assert reply["v"] == 1, reply
    assert reply["ok"] is False, reply
    err = reply["error"]
    assert err["code"] == code, reply
    assert isinstance(err["message"], str) and err["message"], reply
    if rid != "any":
        assert reply["id"] == rid, reply
    if field is not None:
        assert err.get("field") == field, reply
    if index is None:
        assert "index" not in err, reply
    else:
        assert err.get("index") == index, reply


def assert_serving_and_nothing_queued(daemon, before, *clients):
    """Nothing was submitted since `before`; a fresh client (and every client given, e.g. the one
    that misbehaved) still gets answers, and the next future ID is the next unused one."""
    other = daemon.client()
    st = other.rq("stats")["stats"]
    assert st["submitted"] == before, st
    assert other.rq("hello")["ok"]
    for c in clients:
        assert c.rq("hello")["ok"]
    r = other.rq("submit", jobs=[{"kind": "noop"}])
    assert r["ok"], r
    # IDs are handed out only to accepted jobs: a rejected request used none up.
    assert r["ids"] == [before + 1], r
    res = other.rq("result", future=r["ids"][0], timeout=10.0)
    assert res["state"] == "done", res


def raw_request(client, obj):
    """Sends `obj` as the whole request map (no v/id/op added) and returns the reply."""
    return client.raw(pack(obj))


# --- frames that are not one msgpack value -------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"\xc1",                      # the one byte msgpack never uses
    b"",                          # an empty frame
    b"\x92\x01",                  # an array of 2 that ends after one element
    b"\x85\xa1v\x01",             # a map of 5 that ends after one pair
    b"\xdb\xff\xff\xff\xff",      # a str32 claiming 4 GiB
    b"\x00" * 3,                  # three values (the first two are trailing... or leading)
], ids=["c1", "empty", "short-array", "short-map", "huge-str32", "three-values"])
def test_not_msgpack_is_bad_message(daemon, data):
    before = submitted(daemon)
    c = daemon.client()
    r = c.raw(data)
    assert_error(r, "bad_message", rid=None)
    assert_serving_and_nothing_queued(daemon, before, c)


def test_trailing_bytes_after_a_request_are_bad_message(daemon):
    before = submitted(daemon)
    c = daemon.client()
    good = pack({"v": 1, "id": 5, "op": "submit", "jobs": [{"kind": "noop"}]})
    for tail in (b"\x00", b"\xc0", pack({"v": 1, "id": 6, "op": "hello"})):
        r = c.raw(good + tail)
        # The frame as a whole is not one value, so the daemon does not trust the id in it.
        assert_error(r, "bad_message", rid=None)
    assert_serving_and_nothing_queued(daemon, before, c)


def test_two_frames_in_one_request_are_bad_message(daemon):
    """One frame per request: a multipart message is refused, not half-read."""
    before = submitted(daemon)
    c = daemon.client()
    c.sock.send_multipart([pack({"v": 1, "id": 1, "op": "hello"}),
                           pack({"v": 1, "id": 2, "op": "submit", "jobs": [{"kind": "noop"}]})])
    assert_error(c.recv(), "bad_message", rid=None)
    assert_serving_and_nothing_queued(daemon, before, c)


@pytest.mark.parametrize("value", [
    [1, 7, "hello"], 7, -3, "hello", None, True, 1.5, b"\x81\xa2op", msgpack.ExtType(1, b"x"),
], ids=["array", "int", "negative", "str", "nil", "bool", "float", "bin", "ext"])
def test_value_that_is_not_a_map_is_bad_request(daemon, value):
    before = submitted(daemon)
    c = daemon.client()
    r = c.raw(pack(value))
    assert_error(r, "bad_request", rid=None)
    assert_serving_and_nothing_queued(daemon, before, c)


def test_map_with_a_non_string_key_is_bad_request(daemon):
    before = submitted(daemon)
    c = daemon.client()
    r = raw_request(c, {"v": 1, "id": 3, "op": "hello", 7: "x"})
    assert_error(r, "bad_request", rid=3)
    assert_serving_and_nothing_queued(daemon, before, c)


# --- the common fields ---------------------------------------------------------------------------

def test_missing_v(daemon):
    before = submitted(daemon)
    c = daemon.client()
    r = raw_request(c, {"id": 11, "op": "submit", "jobs": [{"kind": "noop"}]})
    assert_error(r, "bad_request", rid=11, field="v")
    assert_serving_and_nothing_queued(daemon, before, c)


def test_missing_id_replies_with_nil_id(daemon):
    before = submitted(daemon)
    c = daemon.client()
    r = raw_request(c, {"v": 1, "op": "submit", "jobs": [{"kind": "noop"}]})
    assert_error(r, "bad_request", rid=None, field="id")
    assert_serving_and_nothing_queued(daemon, before, c)


def test_missing_op(daemon):
    before = submitted(daemon)
    c = daemon.client()
    r = raw_request(c, {"v": 1, "id": 12, "jobs": [{"kind": "noop"}]})
    assert_error(r, "bad_request", rid=12, field="op")
    assert_serving_and_nothing_queued(daemon, before, c)


@pytest.mark.parametrize("v", [2, 0, 1000])
def test_other_protocol_version_is_bad_version(daemon, v):
    before = submitted(daemon)
    c = daemon.client()
    r = raw_request(c, {"v": v, "id": 13, "op": "submit", "jobs": [{"kind": "noop"}]})
    assert_error(r, "bad_version", rid=13)
    assert_serving_and_nothing_queued(daemon, before, c)


@pytest.mark.parametrize("op", ["frobnicate", "", "HELLO", "submit ", "hello\0"])
def test_unknown_op(daemon, op):
    before = submitted(daemon)
    c = daemon.client()
    r = c.rq(op, jobs=[{"kind": "noop"}])
    assert_error(r, "unknown_op")
    assert_serving_and_nothing_queued(daemon, before, c)


@pytest.mark.parametrize("op,fields,bad", [
    ("hello", {"colour": "blue"}, "colour"),
    ("hello", {"jobs": []}, "jobs"),                      # a field of another operation
    ("submit", {"jobs": [{"kind": "noop"}], "priority": 5}, "priority"),  # a job field, one level up
    ("wait", {"ids": [1], "timout": 1.0}, "timout"),      # the misspelling the rule is for
    ("stats", {"reset": True}, "reset"),
], ids=["hello-colour", "hello-jobs", "submit-priority", "wait-timout", "stats-reset"])
def test_unknown_top_level_field(daemon, op, fields, bad):
    before = submitted(daemon)
    c = daemon.client()
    r = c.rq(op, **fields)
    assert_error(r, "unknown_field", field=bad)
    assert_serving_and_nothing_queued(daemon, before, c)


def test_unknown_field_inside_a_job(daemon):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[{"kind": "noop", "prio": 3}])
    assert_error(r, "unknown_field", field="prio", index=0)
    assert_serving_and_nothing_queued(daemon, before)


# --- wrong types ---------------------------------------------------------------------------------

def test_op_as_int_is_bad_request(daemon):
    before = submitted(daemon)
    c = daemon.client()
    r = raw_request(c, {"v": 1, "id": 21, "op": 1, "jobs": [{"kind": "noop"}]})
    assert_error(r, "bad_request", rid=21, field="op")
    assert_serving_and_nothing_queued(daemon, before, c)


@pytest.mark.parametrize("rid", ["7", -7, 1.0, None, [7]])
def test_id_of_the_wrong_type_is_bad_request_with_nil_id(daemon, rid):
    before = submitted(daemon)
    c = daemon.client()
    r = raw_request(c, {"v": 1, "id": rid, "op": "submit", "jobs": [{"kind": "noop"}]})
    assert_error(r, "bad_request", rid=None, field="id")
    assert_serving_and_nothing_queued(daemon, before, c)


@pytest.mark.parametrize("op", ["status", "wait", "cancel", "release"])
@pytest.mark.parametrize("ids", ["1,2", 1, [1, "2"], [1, -2], [1.0]], ids=["str", "int", "str-in-list", "negative-in-list", "float-in-list"])
def test_ids_of_the_wrong_type_are_bad_request(daemon, op, ids):
    before = submitted(daemon)
    r = daemon.c.rq(op, ids=ids)
    assert_error(r, "bad_request", field="ids")
    assert_serving_and_nothing_queued(daemon, before)


@pytest.mark.parametrize("op,fields,bad", [
    ("wait", {"ids": [1], "timeout": "1"}, "timeout"),
    ("wait", {"ids": [1], "timeout": -1}, "timeout"),
    ("wait", {"ids": [1], "timeout": float("nan")}, "timeout"),
    ("wait", {"ids": [1], "mode": "some"}, "mode"),
    ("wait", {"ids": [1], "mode": 1}, "mode"),
    ("wait", {"ids": []}, "ids"),
    ("result", {"future": "1"}, "future"),
    ("result", {}, "future"),
    ("result", {"future": 1, "timeout": "soon"}, "timeout"),
    ("list", {"limit": 0}, "limit"),
    ("list", {"limit": 10001}, "limit"),
    ("list", {"state": "finished"}, "state"),
    ("list", {"after": -1}, "after"),
    ("probe", {"token": ""}, "token"),
    ("probe", {"token": "x" * 65}, "token"),
    ("submit", {"jobs": []}, "jobs"),
    ("submit", {"jobs": {"kind": "noop"}}, "jobs"),
    ("submit", {}, "jobs"),
    ("submit", {"jobs": [{"kind": "noop"}], "reply": "all"}, "reply"),
    # The 4e6 s cap of every timeout (PROTOCOL.md, bad_request); 4e6 itself is accepted below.
    ("wait", {"ids": [1], "timeout": 4e6 + 1}, "timeout"),
    ("result", {"future": 1, "timeout": 4000001}, "timeout"),
    ("results", {"ids": [1], "timeout": 4e6 + 1}, "timeout"),
    ("results", {"ids": []}, "ids"),
    ("cancel", {"ids": []}, "ids"),
    ("release", {"ids": []}, "ids"),
])
def test_operation_field_of_the_wrong_type_or_range(daemon, op, fields, bad):
    before = submitted(daemon)
    r = daemon.c.rq(op, **fields)
    assert_error(r, "bad_request", field=bad)
    assert_serving_and_nothing_queued(daemon, before)


def test_the_edges_of_the_documented_ranges_are_accepted(daemon):
    c = daemon.c
    r = c.rq("submit", jobs=[{"kind": "noop", "timeout": 4e6, "priority": 1000, "retries": 100,
                              "group": "g" * 64, "group_limit": 2**32 - 1,
                              "idempotency_key": "k" * 128},
                             {"kind": "noop", "priority": -1000, "timeout": 0}])
    assert r["ok"], r
    a, b = r["ids"]
    assert c.rq("result", future=a, timeout=4e6)["state"] == "done"
    assert c.rq("wait", ids=[a, b], timeout=4e6)["not_done"] == []
    assert [x["state"] for x in c.rq("results", ids=[a, b], timeout=4e6)["results"]] == \
        ["done", "done"]
    assert c.rq("list", limit=10000)["ok"] and c.rq("list", limit=1)["ok"]
    assert c.rq("status", ids=[])["states"] == []
    assert c.rq("probe", token="t" * 64)["ok"]


@pytest.mark.parametrize("job,bad", [
    ({"kind": "sleep", "args": {"seconds": 1}, "timeout": "5"}, "timeout"),
    ({"kind": "sleep", "args": {"seconds": 1}, "timeout": -1.0}, "timeout"),
    ({"kind": "noop", "priority": 1001}, "priority"),
    ({"kind": "noop", "priority": -1001}, "priority"),
    ({"kind": "noop", "priority": 1.0}, "priority"),
    ({"kind": "noop", "group": ""}, "group"),
    ({"kind": "noop", "group": "g" * 65}, "group"),
    ({"kind": "noop", "group": 7}, "group"),
    ({"kind": "noop", "group_limit": 1}, "group_limit"),  # requires a group
    ({"kind": "noop", "group": "g", "group_limit": -1}, "group_limit"),
    ({"kind": "noop", "retries": 101}, "retries"),
    ({"kind": "noop", "retries": "1"}, "retries"),
    ({"kind": "noop", "timeout": 4e6 + 1}, "timeout"),
    ({"kind": "noop", "timeout": 2**40}, "timeout"),
    ({"kind": "noop", "group": "g", "group_limit": 2**32}, "group_limit"),
    ({"kind": "noop", "idempotency_key": ""}, "idempotency_key"),
    ({"kind": "noop", "idempotency_key": "k" * 129}, "idempotency_key"),
    ({"kind": 7}, "kind"),
    ({"args": {}}, "kind"),
])
def test_job_field_of_the_wrong_type_or_range(daemon, job, bad):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[job])
    assert_error(r, "bad_request", field=bad, index=0)
    assert_serving_and_nothing_queued(daemon, before)


def test_job_that_is_not_a_map_is_bad_request_with_index(daemon):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[{"kind": "noop"}, "noop"])
    assert_error(r, "bad_request", index=1)
    assert_serving_and_nothing_queued(daemon, before)


def test_job_limits_at_their_bounds_are_accepted(daemon):
    """The other side of the range checks above: the extreme legal values are taken."""
    jobs = [{"kind": "noop", "priority": 1000}, {"kind": "noop", "priority": -1000},
            {"kind": "noop", "group": "g" * 64, "group_limit": 1, "retries": 100},
            {"kind": "sleep", "args": {"seconds": 0}, "timeout": 0}]
    r = daemon.c.rq("submit", jobs=jobs)
    assert r["ok"], r
    w = daemon.c.rq("wait", ids=r["ids"], timeout=10.0)
    assert w["done"] == r["ids"] and w["not_done"] == [], w


# --- job kinds and their arguments ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["frobnicate", "", "Prime", "prime\0"])
def test_unknown_job_kind(daemon, kind):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[{"kind": kind}])
    assert_error(r, "unknown_kind", index=0)
    assert_serving_and_nothing_queued(daemon, before)


@pytest.mark.parametrize("args,bad", [
    ({"n": -1}, "n"),
    ({"n": "abc"}, "n"),
    ({"n": 1e30}, "n"),
    ({"n": 1.5}, "n"),
    ({"n": 7.0}, "n"),            # a float, even an integral one, is not a uint
    ({"n": True}, "n"),
    ({"n": None}, "n"),
    ({"n": b"\x07"}, "n"),
    ({"n": msgpack.ExtType(0, b"\x01" * 9)}, "n"),
    ({}, "n"),                    # missing
    ({"n": 7, "method": "guess"}, "method"),
    ({"n": 7, "method": 1}, "method"),
    # The field of an unknown argument is `args` (PROTOCOL.md, Job kinds); the message names it.
    ({"n": 7, "bogus": 1}, "args"),
], ids=["minus-1", "abc", "1e30", "1.5", "7.0", "bool", "nil", "bin", "ext", "missing",
        "bad-method", "method-int", "unknown-arg"])
def test_prime_bad_args(daemon, args, bad):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[{"kind": "prime", "args": args}])
    assert_error(r, "bad_args", field=bad, index=0)
    assert_serving_and_nothing_queued(daemon, before)


def test_prime_args_that_are_not_a_map(daemon):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[{"kind": "prime", "args": [7]}])
    assert_error(r, "bad_args", index=0)
    assert_serving_and_nothing_queued(daemon, before)


def test_prime_n_of_2_to_the_64(daemon):
    """2**64 is one over the range of `n`. msgpack has no encoding for an integer that large (uint64
    is its widest), so a client cannot even send it as an integer: the library refuses. The closest
    a client can send is the float 2.0**64, which is not a uint and so is bad_args."""
    with pytest.raises(OverflowError):
        msgpack.packb(2 ** 64)
    # Nor is there a wider integer on the wire: 0xcf is uint64, and its 8 bytes are all there is.
    assert msgpack.unpackb(b"\xcf" + struct.pack(">Q", 2 ** 64 - 1)) == 2 ** 64 - 1
    before = submitted(daemon)
    for n in (2.0 ** 64, float(2 ** 64 - 1)):
        r = daemon.c.rq("submit", jobs=[{"kind": "prime", "args": {"n": n}}])
        assert_error(r, "bad_args", field="n", index=0)
    assert_serving_and_nothing_queued(daemon, before)


def test_prime_n_of_2_to_the_64_minus_1_is_accepted(daemon):
    """The top of the range works (Miller-Rabin, so that it is fast): 2**64-1 = 3 * 5 * 17 * ..."""
    r = daemon.c.rq("submit", jobs=[{"kind": "prime",
                                     "args": {"n": 2 ** 64 - 1, "method": "miller-rabin"}}])
    assert r["ok"], r
    res = daemon.c.rq("result", future=r["ids"][0], timeout=10.0)
    assert res["state"] == "done", res
    assert res["result"]["n"] == 2 ** 64 - 1
    assert res["result"]["is_prime"] is False
    assert res["result"]["smallest_factor"] == 3


@pytest.mark.parametrize("args,bad", [
    ({"seconds": -0.5}, "seconds"),
    ({"seconds": 86400.5}, "seconds"),
    ({"seconds": "1"}, "seconds"),
    ({"seconds": float("inf")}, "seconds"),
    ({}, "seconds"),
])
def test_sleep_bad_args(daemon, args, bad):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[{"kind": "sleep", "args": args}])
    assert_error(r, "bad_args", field=bad, index=0)
    assert_serving_and_nothing_queued(daemon, before)


def test_noop_takes_no_args(daemon):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[{"kind": "noop", "args": {"x": 1}}])
    assert_error(r, "bad_args", index=0)
    assert_serving_and_nothing_queued(daemon, before)


# --- batches: all or nothing ---------------------------------------------------------------------

@pytest.mark.parametrize("bad_job,code,field", [
    ({"kind": "prime", "args": {"n": -1}}, "bad_args", "n"),
    ({"kind": "frobnicate"}, "unknown_kind", None),
    ({"kind": "noop", "colour": 1}, "unknown_field", "colour"),
    ({"kind": "noop", "priority": 5000}, "bad_request", "priority"),
])
def test_batch_with_bad_job_3_queues_nothing(daemon, bad_job, code, field):
    before = submitted(daemon)
    good = [{"kind": "sleep", "args": {"seconds": 0.01}}, {"kind": "noop"},
            {"kind": "prime", "args": {"n": 7}}]
    r = daemon.c.rq("submit", jobs=good + [bad_job] + good)
    assert_error(r, code, field=field, index=3)
    st = daemon.c.rq("stats")["stats"]
    assert st["pending"] == 0 and st["running"] == 0, st
    assert daemon.c.rq("list")["futures"] == []
    assert_serving_and_nothing_queued(daemon, before)


def test_batch_of_10001_jobs_is_too_many_and_queues_nothing(daemon):
    before = submitted(daemon)
    r = daemon.c.rq("submit", jobs=[{"kind": "noop"}] * 10001)
    assert_error(r, "too_many", field="jobs")
    assert daemon.c.rq("status", ids=[before + 1])["states"] == ["unknown"]
    assert_serving_and_nothing_queued(daemon, before)


def test_batch_of_10000_jobs_is_the_limit_and_accepted(daemon):
    r = daemon.c.rq("submit", jobs=[{"kind": "noop"}] * 10000)
    assert r["ok"], r
    assert r["ids"] == list(range(1, 10001))
    w = daemon.c.rq("wait", ids=r["ids"], timeout=30.0, reply_timeout=30.0)
    assert len(w["done"]) == 10000 and w["not_done"] == [], (len(w["done"]), len(w["not_done"]))
    assert daemon.c.rq("stats")["stats"]["submitted"] == 10000


# --- ID lists ------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,n", [("wait", 100000), ("wait", 10001), ("status", 10001),
                                  ("cancel", 10001), ("release", 10001)])
def test_id_list_over_max_ids_is_too_many(daemon, op, n):
    r = daemon.c.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 30}}])
    fid = r["ids"][0]
    wait_for(lambda: daemon.c.rq("status", ids=[fid])["states"] == ["running"],
             what="the sleep to run")
    before = submitted(daemon)
    r = daemon.c.rq(op, ids=[fid] + list(range(2, n + 1)))
    assert_error(r, "too_many", field="ids")
    # Neither cancelled nor released nor waited on.
    assert daemon.c.rq("status", ids=[fid])["states"] == ["running"]
    assert daemon.c.rq("stats")["stats"]["clients_deferred"] == 0
    assert daemon.c.rq("cancel", ids=[fid])["cancelled"] == [True]
    assert_serving_and_nothing_queued(daemon, before)


def test_id_list_of_max_ids_is_accepted(daemon):
    ids = list(range(1, 10001))
    assert daemon.c.rq("status", ids=ids)["states"] == ["unknown"] * 10000
    w = daemon.c.rq("wait", ids=ids, timeout=0)
    assert w["done"] == ids and w["not_done"] == []


def test_status_of_unknown_ids_is_unknown_not_pending(daemon):
    r = daemon.c.rq("submit", jobs=[{"kind": "noop"}])
    fid = r["ids"][0]
    assert daemon.c.rq("result", future=fid)["state"] == "done"
    ids = [0, fid, fid + 1, fid + 1000, 2 ** 63, 2 ** 64 - 1]
    st = daemon.c.rq("status", ids=ids)
    assert st["states"] == ["unknown", "done", "unknown", "unknown", "unknown", "unknown"], st
    # An empty list is allowed for status (0 to max_ids).
    assert daemon.c.rq("status", ids=[])["states"] == []
    # And the other operations agree: unknown IDs are finished for wait, cannot be cancelled or
    # released, and their result is the state "unknown".
    w = daemon.c.rq("wait", ids=[fid + 1, 2 ** 64 - 1])
    assert w["done"] == [fid + 1, 2 ** 64 - 1] and w["not_done"] == [], w
    assert daemon.c.rq("cancel", ids=[fid + 1])["cancelled"] == [False]
    assert daemon.c.rq("release", ids=[fid + 1])["released"] == [False]
    res = daemon.c.rq("result", future=fid + 1)
    assert res["ok"] and res["state"] == "unknown" and "result" not in res, res


# --- size limits ---------------------------------------------------------------------------------

def padded_hello(rid, total):
    """A hello request of exactly `total` (> 65535) bytes, padded with an unknown str field."""
    head = {"v": 1, "id": rid, "op": "hello"}
    # The empty pad is a 1-byte fixstr; a pad this long has a 5-byte str32 header.
    data = pack({**head, "pad": "x" * (total - len(pack({**head, "pad": ""})) - 4)})
    assert len(data) == total, (len(data), total)
    return data


def test_message_just_over_1_mib_is_too_large_and_echoes_the_id(daemon):
    before = submitted(daemon)
    c = daemon.client()
    r = c.raw(padded_hello(4242, MIB + 1))
    assert_error(r, "too_large", rid=4242)
    # A valid submit over the limit (under ZeroMQ's cap, max_message + 64 KiB) queues nothing
    # either.
    data = pack({"v": 1, "id": 4243, "op": "submit",
                 "jobs": [{"kind": "noop", "group": "g" * 64}] * 13000})
    assert MIB < len(data) <= MIB + 64 * 1024
    assert_error(c.raw(data), "too_large", rid=4243)
    # Not even msgpack, and too large: no id to echo.
    assert_error(c.raw(b"\xc1" * (MIB + 1)), "too_large", rid=None)
    assert_serving_and_nothing_queued(daemon, before, c)


def test_message_of_exactly_1_mib_is_read(daemon):
    c = daemon.client()
    # Exactly max_message bytes is within the limit: the daemon reads it and finds the pad field.
    r = c.raw(padded_hello(4244, MIB))
    assert_error(r, "unknown_field", rid=4244, field="pad")


def test_frame_over_max_message_and_64_kib_is_dropped_unanswered(daemon):
    """ZeroMQ itself refuses frames over max_message + 64 KiB (ZMQ_MAXMSGSIZE): no reply, and the
    client's connection is dropped and re-made, after which the client is served as before."""
    before = submitted(daemon)
    c = daemon.client()
    c.sock.send(pack({"v": 1, "id": 99, "op": "hello", "pad": "x" * (MIB + 65 * 1024)}))
    with pytest.raises(TimeoutError):
        c.recv(timeout=1.0)
    assert_serving_and_nothing_queued(daemon, before, c)


def test_hello_announces_the_limits_tested_here(daemon):
    limits = daemon.c.rq("hello")["limits"]
    assert limits == {"max_message": MIB, "max_batch": 10000, "max_ids": 10000,
                      "max_pending": 1000000, "max_deferred": 1000,
                      "max_retained": 1000000, "max_retained_bytes": 256 * MIB,
                      "max_deferred_total": 100000, "max_deferred_ids": 2000000}


# --- deferred replies ----------------------------------------------------------------------------

def deferred(daemon):
    return daemon.c.rq("stats")["stats"]["clients_deferred"]


def test_client_that_disconnects_during_a_deferred_wait(daemon):
    gone = daemon.client()
    fid = gone.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 0.5}}])["ids"][0]
    gone.send(op="wait", ids=[fid])
    gone.send(op="result", future=fid)
    wait_for(lambda: deferred(daemon) == 2, what="two deferred replies")
    gone.close()
    daemon.clients.remove(gone)
    # The daemon keeps serving while the replies are outstanding...
    assert daemon.client().rq("hello")["ok"]
    # ...and drops them when they come due.
    assert daemon.c.rq("result", future=fid, timeout=5.0)["state"] == "done"
    wait_for(lambda: deferred(daemon) == 0, timeout=2.0, what="clients_deferred back to 0")
    assert_serving_and_nothing_queued(daemon, 1)


def test_client_that_disconnects_during_a_deferred_wait_with_timeout(daemon):
    """Same, but the reply comes due by its timeout rather than by the future finishing."""
    gone = daemon.client()
    fid = gone.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 30}}])["ids"][0]
    gone.send(op="wait", ids=[fid], timeout=0.3)
    wait_for(lambda: deferred(daemon) == 1, what="one deferred reply")
    gone.close()
    daemon.clients.remove(gone)
    wait_for(lambda: deferred(daemon) == 0, timeout=2.0, what="clients_deferred back to 0")
    assert daemon.c.rq("cancel", ids=[fid])["cancelled"] == [True]
    assert_serving_and_nothing_queued(daemon, 1)


def test_too_many_deferred(daemon):
    """max_deferred (1000) outstanding wait/result replies per client; the next is refused at once,
    other clients are not affected, and the 1000 all arrive when the future finishes."""
    greedy = daemon.client()
    fid = greedy.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 60}}])["ids"][0]
    sent = [greedy.send(op="wait" if i % 2 else "result", **(
        {"ids": [fid]} if i % 2 else {"future": fid})) for i in range(1000)]
    wait_for(lambda: deferred(daemon) == 1000, what="1000 deferred replies")
    rid = greedy.send(op="wait", ids=[fid])
    r = greedy.recv()
    assert_error(r, "too_many_deferred", rid=rid)
    # Answers that need no deferring still come.
    assert greedy.rq("wait", ids=[fid], timeout=0)["not_done"] == [fid]
    # Another client has its own allowance.
    other = daemon.client()
    w = other.rq("wait", ids=[fid], timeout=0.2)
    assert w["ok"] and w["not_done"] == [fid], w
    assert deferred(daemon) == 1000
    assert daemon.c.rq("cancel", ids=[fid])["cancelled"] == [True]
    got = {}
    for _ in range(1000):
        rep = greedy.recv(timeout=5.0)
        got[rep["id"]] = rep
    assert sorted(got) == sorted(sent)
    for rid, rep in got.items():
        assert rep["ok"], rep
        assert rep.get("state") == "cancelled" or rep.get("done") == [fid], rep
    assert deferred(daemon) == 0
    # The allowance is back.
    fid2 = greedy.rq("submit", jobs=[{"kind": "sleep", "args": {"seconds": 0.05}}])["ids"][0]
    assert greedy.rq("result", future=fid2, timeout=5.0)["state"] == "done"
