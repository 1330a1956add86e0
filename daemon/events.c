/* events: see events.h. */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "events.h"
#include "scheduler.h"

void events_init(Events *e, void *pub) {
        e->pub = pub;
        proto_buf_init(&e->buf);
}

void events_deinit(Events *e) {
        proto_buf_deinit(&e->buf);
}

static void publish(Events *e, const char *topic, size_t topic_len) {
        if (e->buf.failed)
                return; /* out of memory while packing: no half event */
        if (zmq_send(e->pub, topic, topic_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
                zmq_send(e->pub, e->buf.data, e->buf.size, ZMQ_DONTWAIT);
}

/* Starts the map of an event about job `id` with `n` fields after id, state, kind and group
 * ("": none). */
static void pack_job(Events *e, msgpack_packer *pk, uint64_t id, const char *state,
                     const char *kind, const char *group, uint32_t n) {
        proto_buf_reset(&e->buf);
        proto_buf_packer(&e->buf, pk);
        msgpack_pack_map(pk, 4 + n);
        proto_pack_str(pk, "id");
        msgpack_pack_uint64(pk, id);
        proto_pack_str(pk, "state");
        proto_pack_str(pk, state);
        proto_pack_str(pk, "kind");
        proto_pack_str(pk, kind);
        proto_pack_str(pk, "group");
        proto_pack_str(pk, group);
}

static void pack_future(Events *e, msgpack_packer *pk, const Future *f, const char *state,
                        uint32_t n) {
        pack_job(e, pk, f->id, state, f->kind->name, f->group ? f->group->name : "", n);
}

void events_job(Events *e, uint64_t id, FutureState st, const char *kind, const char *group,
                const uint8_t *outcome, size_t outcome_len) {
        const char *state = proto_state_name(st);
        char topic[32 + PROTO_MAX_GROUP];
        bool failure = st == STATE_FAILED && outcome;
        msgpack_packer pk;
        int n;

        n = snprintf(topic, sizeof(topic), "%s/%s", state, group);
        if (n < 0 || (size_t) n >= sizeof(topic))
                return; /* a group longer than any futured writes */
        pack_job(e, &pk, id, state, kind, group, failure);
        if (failure) {
                proto_pack_str(&pk, "failure");
                proto_buf_write(&e->buf, (const char *) outcome, outcome_len);
        }
        publish(e, topic, (size_t) n);
}

void events_state(Events *e, const Future *f) {
        events_job(e, f->id, f->state, f->kind->name, f->group ? f->group->name : "",
                   f->outcome, f->outcome_len);
}

void events_progress(Events *e, const Future *f, uint64_t done, uint64_t total) {
        char topic[16 + PROTO_MAX_GROUP];
        msgpack_packer pk;
        int n;

        n = snprintf(topic, sizeof(topic), "progress/%s", f->group ? f->group->name : "");
        pack_future(e, &pk, f, "running", 2);
        proto_pack_str(&pk, "bytes");
        msgpack_pack_uint64(&pk, done);
        proto_pack_str(&pk, "total");
        msgpack_pack_uint64(&pk, total);
        publish(e, topic, (size_t) n);
}

void events_probe(Events *e, const char *token, size_t len) {
        char topic[6 + PROTO_MAX_TOKEN];
        msgpack_packer pk;

        if (len > PROTO_MAX_TOKEN)
                return;
        memcpy(topic, "probe/", 6);
        memcpy(topic + 6, token, len);
        proto_buf_reset(&e->buf);
        proto_buf_packer(&e->buf, &pk);
        msgpack_pack_map(&pk, 0);
        publish(e, topic, 6 + len);
        /* The probe proves a subscription live to its client: it is counted before the client
         * can see the probe and go on (docs/PROTOCOL.md, Events). */
        (void) events_poll(e);
}

bool events_poll(Events *e) {
        bool any = false;
        uint8_t msg[1];
        int n;

        while ((n = zmq_recv(e->pub, msg, sizeof(msg), ZMQ_DONTWAIT)) >= 0) {
                any = true;
                if (n >= 1 && msg[0] == 1)
                        e->topics++;
                else if (n >= 1 && msg[0] == 0 && e->topics > 0)
                        e->topics--;
        }
        return any;
}

bool events_subscribed(const Events *e) {
        return e->topics > 0;
}
