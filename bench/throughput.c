/* bench-throughput: trivial jobs end to end (submitted, run, result fetched) through futured.
 *
 *   bench-throughput ENDPOINT [JOBS] [CLIENTS] [BATCH] [IN_FLIGHT]
 *
 * Each client is a thread with its own DEALER that keeps IN_FLIGHT submit requests of BATCH
 * `noop` jobs outstanding, each submitted with reply "results" so that its one reply carries
 * every result of the batch: the protocol's batch path, spoken here directly with msgpack.
 * Prints `key value` lines: jobs, clients, seconds, jobs_per_s. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <msgpack.h>
#include <zmq.h>

typedef struct Client {
        void *ctx;
        const char *endpoint;
        size_t jobs, batch, in_flight;
        size_t done; /* results received, set by the thread */
        int failed;
} Client;

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void pack_str(msgpack_packer *pk, const char *s) {
        size_t n = strlen(s);

        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, s, n);
}

/* Packs one submit of `n` noop jobs asking for the results in the reply. */
static void pack_batch(msgpack_sbuffer *sb, uint64_t req_id, size_t n) {
        msgpack_packer pk;

        sb->size = 0;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 5);
        pack_str(&pk, "v");
        msgpack_pack_uint8(&pk, 1);
        pack_str(&pk, "id");
        msgpack_pack_uint64(&pk, req_id);
        pack_str(&pk, "op");
        pack_str(&pk, "submit");
        pack_str(&pk, "reply");
        pack_str(&pk, "results");
        pack_str(&pk, "jobs");
        msgpack_pack_array(&pk, (uint32_t) n);
        for (size_t i = 0; i < n; i++) {
                msgpack_pack_map(&pk, 1);
                pack_str(&pk, "kind");
                pack_str(&pk, "noop");
        }
}

/* Counts the done results in a reply; -1 for an error reply. */
static long count_results(const void *buf, size_t len) {
        msgpack_unpacked u;
        long n = -1;

        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, buf, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_MAP)
                for (uint32_t i = 0; i < u.data.via.map.size; i++) {
                        const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
                        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 7 &&
                            memcmp(kv->key.via.str.ptr, "results", 7) == 0 &&
                            kv->val.type == MSGPACK_OBJECT_ARRAY)
                                n = kv->val.via.array.size;
                }
        msgpack_unpacked_destroy(&u);
        return n;
}

static void *client_main(void *userdata) {
        Client *c = userdata;
        void *s = zmq_socket(c->ctx, ZMQ_DEALER);
        size_t sent = 0, outstanding = 0;
        msgpack_sbuffer sb;
        uint64_t req = 0;
        zmq_msg_t msg;
        int zero = 0;

        zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
        zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
        zmq_connect(s, c->endpoint);
        msgpack_sbuffer_init(&sb);
        zmq_msg_init(&msg);
        while (c->done < c->jobs) {
                while (outstanding < c->in_flight && sent < c->jobs) {
                        size_t n = c->jobs - sent < c->batch ? c->jobs - sent : c->batch;
                        pack_batch(&sb, ++req, n);
                        zmq_send(s, sb.data, sb.size, 0);
                        sent += n;
                        outstanding++;
                }
                if (zmq_msg_recv(&msg, s, 0) < 0) {
                        c->failed = 1;
                        break;
                }
                long got = count_results(zmq_msg_data(&msg), zmq_msg_size(&msg));
                if (got < 0) {
                        fprintf(stderr, "error reply: %.*s\n", (int) zmq_msg_size(&msg),
                                (char *) zmq_msg_data(&msg));
                        c->failed = 1;
                        break;
                }
                c->done += (size_t) got;
                outstanding--;
        }
        zmq_msg_close(&msg);
        msgpack_sbuffer_destroy(&sb);
        zmq_close(s);
        return NULL;
}

int main(int argc, char **argv) {
        size_t jobs = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;
        size_t clients = argc > 3 ? strtoul(argv[3], NULL, 10) : 1;
        size_t batch = argc > 4 ? strtoul(argv[4], NULL, 10) : 1000;
        size_t in_flight = argc > 5 ? strtoul(argv[5], NULL, 10) : 4;
        Client *cs = calloc(clients ? clients : 1, sizeof *cs);
        pthread_t *ts = calloc(clients ? clients : 1, sizeof *ts);
        void *ctx = zmq_ctx_new();
        size_t total = 0;
        int failed = 0;
        double t0, t;

        if (argc < 2 || !cs || !ts || !clients || !batch || !in_flight) {
                fprintf(stderr, "Usage: %s ENDPOINT [JOBS] [CLIENTS] [BATCH] [IN_FLIGHT]\n",
                        argv[0]);
                return 2;
        }
        t0 = now_s();
        for (size_t i = 0; i < clients; i++) {
                cs[i] = (Client){ .ctx = ctx, .endpoint = argv[1], .jobs = jobs / clients,
                                  .batch = batch, .in_flight = in_flight };
                pthread_create(&ts[i], NULL, client_main, &cs[i]);
        }
        for (size_t i = 0; i < clients; i++) {
                pthread_join(ts[i], NULL);
                total += cs[i].done;
                failed |= cs[i].failed;
        }
        t = now_s() - t0;
        printf("jobs %zu\nclients %zu\nbatch %zu\nseconds %.3f\njobs_per_s %.0f\n", total, clients,
               batch, t, (double) total / t);
        zmq_ctx_term(ctx);
        free(cs);
        free(ts);
        return failed ? 1 : 0;
}
