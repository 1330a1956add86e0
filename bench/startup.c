/* bench-startup: how long futured takes from execve() to its first answer. Each run makes a fresh
 * temporary directory for the ipc endpoints, connects a DEALER to the endpoint that does not exist
 * yet (ZMQ_RECONNECT_IVL 1 ms, so ZeroMQ itself retries the connect every millisecond;
 * ZMQ_IMMEDIATE, so a `hello` is only queued once a connection exists), forks, and the child
 * stamps the time into a MAP_SHARED page right before execv(futured). The parent loops: try to
 * send `hello`, zmq_poll() for 1 ms, until the reply arrives. The time from the stamp to the reply
 * is the run's start-up time. Then SIGTERM, waitpid(), clean up, next run.
 *
 * Usage: bench-startup FUTURED WORKER [RUNS]   (RUNS default 20)
 *
 * Prints one line per run, then `key value` lines for bench/run: min_ms, median_ms, max_ms,
 * runs. Exit status 1 if a run got no answer within 10 s. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "macro.h"
#include "proto.h"

#define MAX_RUNS 1000
#define GIVE_UP_NS INT64_C(10000000000)

static int64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

/* Packs the request {v: 1, id: 1, op: "hello"} into `sb`, which the caller owns (initialised). */
static void pack_hello(msgpack_sbuffer *sb) {
        msgpack_packer pk;

        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        proto_pack_str(&pk, "v");
        msgpack_pack_uint64(&pk, 1);
        proto_pack_str(&pk, "id");
        msgpack_pack_uint64(&pk, 1);
        proto_pack_str(&pk, "op");
        proto_pack_str(&pk, "hello");
}

/* True if the frame `data` (borrowed) is a reply map with ok = true. */
static bool reply_ok(const void *data, size_t len) {
        msgpack_unpacked u;
        const msgpack_object *ok;
        bool r;

        msgpack_unpacked_init(&u);
        r = msgpack_unpack_next(&u, data, len, NULL) == MSGPACK_UNPACK_SUCCESS;
        ok = r ? proto_map_get(&u.data, "ok") : NULL;
        r = ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean;
        msgpack_unpacked_destroy(&u);
        return r;
}

/* Prints the daemon's log `path` to stderr, for a run that failed. */
static void dump_log(const char *path) {
        char buf[4096];
        size_t n;
        FILE *f = fopen(path, "re");

        if (!f)
                return;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
                fwrite(buf, 1, n, stderr);
        fclose(f);
}

/* One start-up of `futured` (borrowed paths) on endpoints in a fresh directory. The zmq context
 * `ctx` is borrowed; `stamp` is the shared page the child writes its exec time into. Returns the
 * milliseconds from execv() to the hello reply, or a negative value on failure. */
static double one_run(void *ctx, const char *futured, const char *worker, _Atomic int64_t *stamp,
                      const msgpack_sbuffer *hello) {
        char dir[] = "/tmp/futured-startup-XXXXXX";
        char listen[256], events[256], log[256], sock[256], state[256];
        int ivl = 1, immediate = 1, linger = 0;
        bool sent = false, got = false;
        double ms = -1;
        void *s;
        pid_t pid;
        int status;

        if (!mkdtemp(dir)) {
                fprintf(stderr, "bench-startup: mkdtemp: %m\n");
                return -1;
        }
        snprintf(listen, sizeof listen, "ipc://%s/futured.sock", dir);
        snprintf(events, sizeof events, "ipc://%s/events.sock", dir);
        snprintf(log, sizeof log, "%s/futured.log", dir);
        snprintf(state, sizeof state, "%s/state", dir);
        s = zmq_socket(ctx, ZMQ_DEALER);
        zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(s, listen) < 0) {
                fprintf(stderr, "bench-startup: connect %s: %s\n", listen, zmq_strerror(errno));
                zmq_close(s);
                return -1;
        }
        atomic_store(stamp, 0);

        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "bench-startup: fork: %m\n");
                zmq_close(s);
                return -1;
        }
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                int nul = open("/dev/null", O_RDWR);

                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                if (nul >= 0)
                        dup2(nul, STDIN_FILENO);
                atomic_store(stamp, now_ns());
                execl(futured, futured, "--listen", listen, "--events", events, "--worker", worker,
                      "--state-dir", state, (char *) NULL);
                _exit(127);
        }

        for (;;) {
                zmq_pollitem_t item = { .socket = s, .events = ZMQ_POLLIN };
                int64_t t0 = atomic_load(stamp);

                if (!sent && zmq_send(s, hello->data, hello->size, ZMQ_DONTWAIT) >= 0)
                        sent = true;
                if (zmq_poll(&item, 1, 1) > 0 && (item.revents & ZMQ_POLLIN)) {
                        zmq_msg_t msg;

                        zmq_msg_init(&msg);
                        if (zmq_msg_recv(&msg, s, 0) >= 0) {
                                int64_t t1 = now_ns();
                                got = reply_ok(zmq_msg_data(&msg), zmq_msg_size(&msg));
                                if (got && t0 == 0)
                                        t0 = atomic_load(stamp);
                                if (got)
                                        ms = (double) (t1 - t0) / 1e6;
                        }
                        zmq_msg_close(&msg);
                        break;
                }
                if (t0 && now_ns() - t0 > GIVE_UP_NS)
                        break;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        pid = 0;
                        break;
                }
        }
        zmq_close(s);
        if (!got) {
                fprintf(stderr, "bench-startup: no answer from %s%s; its log:\n", futured,
                        pid ? " within 10 s" : " (it exited)");
                dump_log(log);
        }
        if (pid > 0) {
                kill(pid, SIGTERM);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
        }
        snprintf(sock, sizeof sock, "%s/futured.sock", dir);
        (void) unlink(sock);
        snprintf(sock, sizeof sock, "%s/events.sock", dir);
        (void) unlink(sock);
        (void) unlink(log);
        for (const char *const *f = (const char *const[]){ "futured.db", "futured.db-wal",
                                                            "futured.db-shm", NULL };
             *f; f++) {
                snprintf(sock, sizeof sock, "%s/state/%s", dir, *f);
                (void) unlink(sock);
        }
        (void) rmdir(state);
        (void) rmdir(dir);
        return got ? ms : -1;
}

int main(int argc, char **argv) {
        static double ms[MAX_RUNS];
        msgpack_sbuffer hello;
        _Atomic int64_t *stamp;
        unsigned long runs = 20;
        void *ctx;
        int r = EXIT_SUCCESS;

        if (argc < 3 || argc > 4) {
                fprintf(stderr, "Usage: %s FUTURED WORKER [RUNS]\n", argv[0]);
                return 2;
        }
        if (argc == 4) {
                char *end;
                runs = strtoul(argv[3], &end, 10);
                if (*end || runs < 1 || runs > MAX_RUNS) {
                        fprintf(stderr, "%s: RUNS is 1 to %d\n", argv[0], MAX_RUNS);
                        return 2;
                }
        }
        stamp = mmap(NULL, sizeof *stamp, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                     0);
        if (stamp == MAP_FAILED) {
                fprintf(stderr, "%s: mmap: %m\n", argv[0]);
                return 1;
        }
        msgpack_sbuffer_init(&hello);
        pack_hello(&hello);
        ctx = zmq_ctx_new();

        for (unsigned long i = 0; i < runs; i++) {
                ms[i] = one_run(ctx, argv[1], argv[2], stamp, &hello);
                if (ms[i] < 0) {
                        r = EXIT_FAILURE;
                        runs = i;
                        break;
                }
                printf("run %2lu: %7.2f ms\n", i + 1, ms[i]);
                fflush(stdout);
        }
        if (runs > 0) {
                qsort(ms, runs, sizeof ms[0], cmp_double);
                printf("min_ms %.3f\n", ms[0]);
                printf("median_ms %.3f\n", runs % 2 ? ms[runs / 2]
                                                    : (ms[runs / 2 - 1] + ms[runs / 2]) / 2);
                printf("max_ms %.3f\n", ms[runs - 1]);
        }
        printf("runs %lu\n", runs);
        zmq_ctx_term(ctx);
        msgpack_sbuffer_destroy(&hello);
        munmap(stamp, sizeof *stamp);
        return r;
}
