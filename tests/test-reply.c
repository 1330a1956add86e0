/* Unit test of reply packing and sending: each reply decodes as exactly one msgpack map with the
 * protocol's fields; `wait` splits done from not-done; `result` splices the stored outcome in
 * or answers not_done; `results` lists every ID; an error carries code, message, field and
 * index; two replies packed at once do not disturb each other; reply_send reaches a real DEALER
 * through a real ROUTER (inproc), with the REQ envelope when asked. */
#include <string.h>
#include <zmq.h>

#include "reply.h"
#include "test.h"

static const JobKind kind = { .name = "k", .pool = POOL_THREAD };

/* Decodes `r` into `msg`: exactly one value, a map. */
static const msgpack_object *decode(const Reply *r, msgpack_unpacked *msg) {
        size_t off = 0;

        msgpack_unpacked_init(msg);
        REQUIRE(msgpack_unpack_next(msg, r->buf.data, r->buf.size, &off) ==
                MSGPACK_UNPACK_SUCCESS);
        REQUIRE(off == r->buf.size);
        REQUIRE(msg->data.type == MSGPACK_OBJECT_MAP);
        return &msg->data;
}

static uint64_t uint_of(const msgpack_object *map, const char *key) {
        uint64_t v = UINT64_MAX;

        CHECK(proto_get_uint(proto_map_get(map, key), &v) == 0);
        return v;
}

static Future *add(Table *t, FutureState s, const char *outcome, uint32_t len) {
        Future *f = NULL;

        REQUIRE(future_new(&f, &kind, NULL, 0) == 0);
        REQUIRE(table_add(t, f) == 0);
        f->state = s;
        if (outcome) {
                f->outcome = malloc(len);
                memcpy(f->outcome, outcome, len);
                f->outcome_len = len;
        }
        return f;
}

int main(void) {
        Table t;
        Reply r, other;
        msgpack_unpacked msg;
        const msgpack_object *m, *o;

        table_init(&t, 1);
        add(&t, STATE_DONE, "\x81\xa1x\x2a", 4);        /* 1: done, {x: 42} */
        add(&t, STATE_RUNNING, NULL, 0);                /* 2 */
        add(&t, STATE_FAILED, "\x81\xa4" "code\xa1z", 8); /* 3: failed, {code: z} */
        reply_init(&r);
        reply_init(&other);

        /* wait: done [1, 3, 9 (unknown counts as finished)], not_done [2]. */
        reply_pack_wait(&r, &t, 7, (uint64_t[]){ 1, 2, 3, 9 }, 4);
        reply_begin(&other, true, 8, true, 0); /* packing another reply meanwhile changes nothing */
        m = decode(&r, &msg);
        CHECK(uint_of(m, "v") == PROTO_VERSION && uint_of(m, "id") == 7);
        CHECK(proto_map_get(m, "ok")->via.boolean);
        o = proto_map_get(m, "done");
        REQUIRE(o && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 3);
        CHECK(o->via.array.ptr[0].via.u64 == 1 && o->via.array.ptr[2].via.u64 == 9);
        o = proto_map_get(m, "not_done");
        REQUIRE(o && o->via.array.size == 1 && o->via.array.ptr[0].via.u64 == 2);
        msgpack_unpacked_destroy(&msg);

        /* result of a done future: its stored map, spliced in. */
        reply_pack_result(&r, &t, 5, 1);
        m = decode(&r, &msg);
        CHECK(proto_str_eq(proto_map_get(m, "state"), "done"));
        o = proto_map_get(m, "result");
        REQUIRE(o && o->type == MSGPACK_OBJECT_MAP);
        CHECK(uint_of(o, "x") == 42);
        msgpack_unpacked_destroy(&msg);

        /* result of a running future: the error not_done, echoing the request id. */
        reply_pack_result(&r, &t, 6, 2);
        m = decode(&r, &msg);
        CHECK(!proto_map_get(m, "ok")->via.boolean && uint_of(m, "id") == 6);
        CHECK(proto_str_eq(proto_map_get(proto_map_get(m, "error"), "code"), PROTO_E_NOT_DONE));
        msgpack_unpacked_destroy(&msg);

        /* results: every ID with its state; the failure of 3; expired for a released one. */
        future_free(table_steal(&t, 1));
        reply_pack_results(&r, &t, 4, (uint64_t[]){ 1, 2, 3 }, 3);
        m = decode(&r, &msg);
        o = proto_map_get(m, "results");
        REQUIRE(o && o->via.array.size == 3);
        CHECK(proto_str_eq(proto_map_get(&o->via.array.ptr[0], "state"), "expired"));
        CHECK(proto_str_eq(proto_map_get(&o->via.array.ptr[1], "state"), "running"));
        CHECK(proto_str_eq(proto_map_get(proto_map_get(&o->via.array.ptr[2], "failure"), "code"),
                           "z"));
        CHECK(proto_map_get(m, "ids")->via.array.size == 3);
        msgpack_unpacked_destroy(&msg);

        /* An error with every field; a request without an id gets nil. */
        {
                ProtoError e = { .index = -1 };
                proto_error(&e, PROTO_E_BAD_REQUEST, "jobs", "bad %s", "thing");
                e.index = 3;
                reply_pack_error(&r, false, 0, &e);
                m = decode(&r, &msg);
                CHECK(proto_map_get(m, "id")->type == MSGPACK_OBJECT_NIL);
                o = proto_map_get(m, "error");
                CHECK(proto_str_eq(proto_map_get(o, "message"), "bad thing"));
                CHECK(proto_str_eq(proto_map_get(o, "field"), "jobs"));
                CHECK(uint_of(o, "index") == 3);
                msgpack_unpacked_destroy(&msg);
        }

        /* A reply bigger than the buffer's own array moves to the heap intact. */
        {
                static uint64_t many[5000];
                for (int i = 0; i < 5000; i++)
                        many[i] = 1000 + (uint64_t) i;
                reply_pack_wait(&r, &t, 1, many, 5000);
                CHECK(r.buf.data != r.buf.small);
                m = decode(&r, &msg);
                CHECK(proto_map_get(m, "done")->via.array.size == 5000);
                msgpack_unpacked_destroy(&msg);
        }

        /* The other reply, packed in between, is still whole. */
        m = decode(&other, &msg);
        CHECK(uint_of(m, "id") == 8);
        msgpack_unpacked_destroy(&msg);

        /* Sending: a real ROUTER and DEALER, inproc; with and without the REQ envelope. */
        {
                void *ctx = zmq_ctx_new(), *router = zmq_socket(ctx, ZMQ_ROUTER),
                     *dealer = zmq_socket(ctx, ZMQ_DEALER);
                char buf[64];
                REQUIRE(zmq_bind(router, "inproc://reply") == 0);
                REQUIRE(zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "c1", 2) == 0);
                REQUIRE(zmq_connect(dealer, "inproc://reply") == 0);
                REQUIRE(zmq_send(dealer, "hi", 2, 0) == 2); /* so that the ROUTER knows c1 */
                REQUIRE(zmq_recv(router, buf, sizeof(buf), 0) == 2);
                REQUIRE(zmq_recv(router, buf, sizeof(buf), 0) == 2);
                reply_begin(&r, true, 77, true, 0);
                reply_send(&r, router, NULL, &(Peer){ .identity = (const uint8_t *) "c1",
                                                .identity_len = 2 });
                int n = zmq_recv(dealer, buf, sizeof(buf), 0);
                CHECK(n == (int) r.buf.size && memcmp(buf, r.buf.data, r.buf.size) == 0);
                reply_send(&r, router, NULL, &(Peer){ .identity = (const uint8_t *) "c1",
                                                .identity_len = 2, .envelope = true });
                CHECK(zmq_recv(dealer, buf, sizeof(buf), 0) == 0); /* the empty delimiter */
                CHECK(zmq_recv(dealer, buf, sizeof(buf), 0) == (int) r.buf.size);
                /* A client that is gone loses its reply, nothing else. */
                reply_send(&r, router, NULL, &(Peer){ .identity = (const uint8_t *) "gone",
                                                .identity_len = 4 });
                zmq_close(dealer);
                zmq_close(router);
                zmq_ctx_term(ctx);
        }

        reply_deinit(&r);
        reply_deinit(&other);
        table_deinit(&t);
        return test_end();
}
