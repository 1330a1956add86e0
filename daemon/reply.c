/* reply: see reply.h. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <zmq.h>

#include "backlog.h"
#include "reply.h"

void reply_init(Reply *r) {
        proto_buf_init(&r->buf);
        proto_buf_packer(&r->buf, &r->pk);
}

void reply_deinit(Reply *r) {
        proto_buf_deinit(&r->buf);
}

void reply_begin(Reply *r, bool has_id, uint64_t req_id, bool ok, uint32_t n_fields) {
        msgpack_packer *pk = &r->pk;

        proto_buf_reset(&r->buf);
        r->has_id = has_id;
        r->req_id = req_id;
        msgpack_pack_map(pk, 3 + n_fields);
        proto_pack_str(pk, "v");
        msgpack_pack_uint8(pk, PROTO_VERSION);
        proto_pack_str(pk, "id");
        if (has_id)
                msgpack_pack_uint64(pk, req_id);
        else
                msgpack_pack_nil(pk);
        proto_pack_str(pk, "ok");
        if (ok)
                msgpack_pack_true(pk);
        else
                msgpack_pack_false(pk);
}

void reply_pack_error(Reply *r, bool has_id, uint64_t req_id, const ProtoError *e) {
        msgpack_packer *pk = &r->pk;

        reply_begin(r, has_id, req_id, false, 1);
        proto_pack_str(pk, "error");
        msgpack_pack_map(pk, 2 + (e->field != NULL) + (e->index >= 0) + (e->retry_after_ms > 0));
        proto_pack_str(pk, "code");
        proto_pack_str(pk, e->code);
        proto_pack_str(pk, "message");
        proto_pack_str(pk, e->message);
        if (e->field) {
                proto_pack_str(pk, "field");
                proto_pack_str(pk, e->field);
        }
        if (e->index >= 0) {
                proto_pack_str(pk, "index");
                msgpack_pack_uint64(pk, (uint64_t) e->index);
        }
        if (e->retry_after_ms > 0) {
                proto_pack_str(pk, "retry_after");
                msgpack_pack_double(pk, (double) e->retry_after_ms / 1000.0);
        }
}

void reply_pack_wait(Reply *r, const Table *t, uint64_t req_id, const uint64_t *ids, uint32_t n) {
        uint32_t n_done = 0;

        /* Two passes read each state twice, and the array counts must match what is packed.
         * They do: pool threads change only whether a visible state reads pending or running
         * (future_visible_state), never whether it is final; only this thread makes a future
         * final. A split on anything a pool thread writes must take each state once (op_list). */
        for (uint32_t i = 0; i < n; i++)
                n_done += proto_state_final(table_state_of(t, ids[i]));
        reply_begin(r, true, req_id, true, 2);
        proto_pack_str(&r->pk, "done");
        msgpack_pack_array(&r->pk, n_done);
        for (uint32_t i = 0; i < n; i++)
                if (proto_state_final(table_state_of(t, ids[i])))
                        msgpack_pack_uint64(&r->pk, ids[i]);
        proto_pack_str(&r->pk, "not_done");
        msgpack_pack_array(&r->pk, n - n_done);
        for (uint32_t i = 0; i < n; i++)
                if (!proto_state_final(table_state_of(t, ids[i])))
                        msgpack_pack_uint64(&r->pk, ids[i]);
}

/* True if a future in state `s` shows its stored result or failure. */
static bool shows_outcome(const Future *f, FutureState s) {
        return f && f->outcome && (s == STATE_DONE || s == STATE_FAILED);
}

/* Packs the `state` field and, when shows_outcome(), `result` or `failure`: 1 or 2 fields. */
static void pack_state_fields(Reply *r, const Future *f, FutureState s) {
        proto_pack_str(&r->pk, "state");
        proto_pack_str(&r->pk, proto_state_name(s));
        if (shows_outcome(f, s)) {
                /* The outcome is stored packed: splice its bytes in as the value. */
                proto_pack_str(&r->pk, s == STATE_DONE ? "result" : "failure");
                proto_buf_write(&r->buf, (const char *) f->outcome, f->outcome_len);
        }
}

void reply_pack_result(Reply *r, const Table *t, uint64_t req_id, uint64_t id) {
        FutureState s = table_state_of(t, id);
        Future *f = table_get(t, id);

        if (!proto_state_final(s)) {
                ProtoError e = { .index = -1 };
                proto_error(&e, PROTO_E_NOT_DONE, NULL, "future %" PRIu64 " is still %s", id,
                            proto_state_name(s));
                reply_pack_error(r, true, req_id, &e);
                return;
        }
        reply_begin(r, true, req_id, true, 1 + shows_outcome(f, s));
        pack_state_fields(r, f, s);
}

void reply_pack_results(Reply *r, const Table *t, uint64_t req_id, const uint64_t *ids,
                        uint32_t n) {
        reply_begin(r, true, req_id, true, 2);
        proto_pack_str(&r->pk, "ids");
        msgpack_pack_array(&r->pk, n);
        for (uint32_t i = 0; i < n; i++)
                msgpack_pack_uint64(&r->pk, ids[i]);
        proto_pack_str(&r->pk, "results");
        msgpack_pack_array(&r->pk, n);
        for (uint32_t i = 0; i < n; i++) {
                FutureState s = table_state_of(t, ids[i]);
                Future *f = table_get(t, ids[i]);
                msgpack_pack_map(&r->pk, 2 + shows_outcome(f, s));
                proto_pack_str(&r->pk, "id");
                msgpack_pack_uint64(&r->pk, ids[i]);
                pack_state_fields(r, f, s);
        }
}

void reply_send(Reply *r, void *router, Backlog *backlog, const Peer *to) {
        if (r->buf.failed) {
                /* Out of memory while packing: the small buffer always has room for this. */
                ProtoError e = { .index = -1 };
                proto_buf_deinit(&r->buf);
                proto_error(&e, PROTO_E_OUT_OF_MEMORY, NULL,
                            "out of memory while packing the reply");
                reply_pack_error(r, r->has_id, r->req_id, &e);
        } else if (backlog && !backlog_admit(backlog, to->identity, to->identity_len,
                                             r->buf.size)) {
                ProtoError e = { .index = -1 };
                uint64_t queued = backlog_bytes(backlog, to->identity, to->identity_len);
                proto_error(&e, PROTO_E_REPLY_BACKLOG, NULL,
                            "a reply of %zu bytes was dropped: %" PRIu64 " bytes of earlier "
                            "replies are not read yet (the limit is %" PRIu64 "); read them, "
                            "then ask again",
                            r->buf.size, queued, backlog->max_bytes);
                reply_pack_error(r, r->has_id, r->req_id, &e);
        }
        /* ROUTER_MANDATORY makes a send to a client that is gone fail with EHOSTUNREACH instead
         * of vanishing silently; either way the reply is dropped and nothing else changes. */
        if (zmq_send(router, to->identity, to->identity_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
                return;
        if (to->envelope)
                zmq_send(router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (backlog)
                (void) backlog_send(backlog, router, to->identity, to->identity_len, r->buf.data,
                                    r->buf.size);
        else
                zmq_send(router, r->buf.data, r->buf.size, ZMQ_DONTWAIT);
}
