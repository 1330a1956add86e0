/* bench-roundtrip: sequential submit -> result of a trivial job through futured, against the
 * floor: a raw ZeroMQ DEALER/ROUTER echo over the same kind of endpoint.
 *
 *   bench-roundtrip FUTURED_ENDPOINT ECHO_ENDPOINT [N]
 *
 * The job is `noop` submitted with reply "results", so one request carries the job in and its
 * result out: what `executor.submit(f).result()` costs a client. The echo runs a ROUTER in a
 * thread of this process that sends every message straight back. Prints `key value` lines:
 * p50_us, p99_us, echo_p50_us, echo_p99_us, ratio_p50. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "futured/client.h"

static double now_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e6 + (double) ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

/* Sorts `v` in place and returns its p-th percentile (0..100). */
static double percentile(double *v, size_t n, double p) {
        qsort(v, n, sizeof *v, cmp_double);
        return v[(size_t) ((double) (n - 1) * p / 100.0)];
}

typedef struct Echo {
        void *ctx;
        const char *endpoint;
} Echo;

/* The floor's server: a ROUTER that returns each [identity, body] as it came. */
static void *echo_main(void *userdata) {
        Echo *e = userdata;
        void *s = zmq_socket(e->ctx, ZMQ_ROUTER);
        zmq_msg_t id, body;

        if (zmq_bind(s, e->endpoint) < 0) {
                fprintf(stderr, "echo: cannot bind %s: %s\n", e->endpoint, zmq_strerror(errno));
                exit(1);
        }
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        for (;;) {
                if (zmq_msg_recv(&id, s, 0) < 0 || zmq_msg_recv(&body, s, 0) < 0)
                        break;
                if (zmq_msg_size(&body) == 4 && memcmp(zmq_msg_data(&body), "stop", 4) == 0)
                        break;
                zmq_msg_send(&id, s, ZMQ_SNDMORE);
                zmq_msg_send(&body, s, 0);
        }
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        zmq_close(s);
        return NULL;
}

/* A request of about the size of a submit, echoed n times; fills lat[] in microseconds. */
static void run_echo(const char *endpoint, size_t n, double *lat) {
        Echo e = { .ctx = zmq_ctx_new(), .endpoint = endpoint };
        char msg[64] = "a request about the size of a futured submit";
        pthread_t t;
        void *s;

        pthread_create(&t, NULL, echo_main, &e);
        s = zmq_socket(e.ctx, ZMQ_DEALER);
        zmq_connect(s, endpoint);
        for (size_t i = 0; i < n + n / 10; i++) {
                double t0 = now_us();
                char buf[128];

                zmq_send(s, msg, sizeof msg, 0);
                zmq_recv(s, buf, sizeof buf, 0);
                if (i >= n / 10) /* the first tenth warms up */
                        lat[i - n / 10] = now_us() - t0;
        }
        zmq_send(s, "stop", 4, 0);
        pthread_join(t, NULL);
        zmq_close(s);
        zmq_ctx_term(e.ctx);
}

static int run_futured(const char *endpoint, size_t n, double *lat) {
        futured_job job = { .kind = "noop" };
        futured_outcome out;
        futured *c;
        futured_id id;
        int r;

        r = futured_connect(&c, endpoint, 5);
        if (r < 0) {
                fprintf(stderr, "cannot reach futured at %s: %s\n", endpoint, strerror(-r));
                return r;
        }
        for (size_t i = 0; i < n + n / 10; i++) {
                double t0 = now_us();

                r = futured_run(c, &job, 1, &id, &out);
                if (r < 0 || out.state != FUTURED_DONE) {
                        fprintf(stderr, "run: %s\n", futured_error_message(c));
                        futured_free(c);
                        return -EIO;
                }
                futured_outcome_clear(&out);
                if (i >= n / 10)
                        lat[i - n / 10] = now_us() - t0;
        }
        futured_free(c);
        return 0;
}

int main(int argc, char **argv) {
        size_t n = argc > 3 ? strtoul(argv[3], NULL, 10) : 20000;
        double *lat = calloc(n, sizeof *lat), *echo = calloc(n, sizeof *echo);
        double p50, p99, e50, e99;

        if (argc < 3 || !lat || !echo || n == 0) {
                fprintf(stderr, "Usage: %s FUTURED_ENDPOINT ECHO_ENDPOINT [N]\n", argv[0]);
                return 2;
        }
        run_echo(argv[2], n, echo);
        if (run_futured(argv[1], n, lat) < 0)
                return 1;
        p50 = percentile(lat, n, 50);
        p99 = percentile(lat, n, 99);
        e50 = percentile(echo, n, 50);
        e99 = percentile(echo, n, 99);
        printf("jobs %zu\np50_us %.1f\np99_us %.1f\necho_p50_us %.1f\necho_p99_us %.1f\n"
               "ratio_p50 %.2f\n",
               n, p50, p99, e50, e99, p50 / e50);
        free(lat);
        free(echo);
        return 0;
}
