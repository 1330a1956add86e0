/* Unit test of the process pool against the real futured-worker, driven by a real Loop (the
 * worker sockets and SIGCHLD's signalfd registered with it, as in the daemon): workers start and
 * say hello, a job's result comes back, a kind outside the worker's table fails, a frame too big
 * and a pool with no idle worker are refused without harm, a killed worker reports its job as
 * dead and is replaced, a worker that reached max_tasks is replaced, a missing binary is refused,
 * a binary that dies before its hello is restarted by the loop's back-off timer without a fork
 * storm, and freeing the pool leaves nothing in the loop. argv[1] is futured-worker. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "frame.h"
#include "loop.h"
#include "macro.h"
#include "procpool.h"
#include "proto.h"
#include "test.h"
#include "timer.h"

static uint64_t last_job, died_job;
static int died_signal, results;
static bool last_ok;
static uint64_t last_n;

static void on_result(void *u, uint64_t job, bool ok, const uint8_t *payload, size_t len) {
        msgpack_unpacked m;

        last_job = job;
        last_ok = ok;
        results++;
        msgpack_unpacked_init(&m);
        if (msgpack_unpack_next(&m, (const char *) payload, len, NULL) == MSGPACK_UNPACK_SUCCESS)
                (void) proto_get_uint(proto_map_get(&m.data, "n"), &last_n);
        msgpack_unpacked_destroy(&m);
}

static void on_died(void *u, uint64_t job, int pid, int sig, int status) {
        died_job = job;
        died_signal = sig;
}

static const ProcPoolCallbacks cb = { on_result, on_died };

/* SIGCHLD's signalfd on the loop: reaps the pool's workers, as the daemon does. */
typedef struct Sigchld {
        LoopFile file;
        ProcPool *pool;
} Sigchld;

static void on_sigchld(LoopFile *lf, uint32_t events) {
        Sigchld *sc = container_of(lf, Sigchld, file);
        struct signalfd_siginfo si;

        while (read(lf->fd, &si, sizeof(si)) == sizeof(si))
                ;
        if (sc->pool)
                procpool_reap(sc->pool);
}

/* Turns the loop for up to `ms` or until `done(p)`. */
static void pump(Loop *l, ProcPool *p, int ms, bool (*done)(ProcPool *)) {
        uint64_t end = timer_now() + (uint64_t) ms * 1000000u;

        while (timer_now() < end && !done(p))
                REQUIRE(loop_turn(l, 50) == 0);
}

static bool never(ProcPool *p) {
        return false;
}

static bool all_alive(ProcPool *p) {
        return procpool_alive(p) == procpool_size(p);
}

static bool got_result(ProcPool *p) {
        return results > 0;
}

static bool got_death(ProcPool *p) {
        return died_job != 0;
}

static void pack_n(msgpack_sbuffer *sbuf, uint64_t n) {
        msgpack_packer pk;

        sbuf->size = 0;
        msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        proto_pack_str(&pk, "n");
        msgpack_pack_uint64(&pk, n);
}

int main(int argc, char **argv) {
        Sigchld sigchld = {};
        ProcPool *p = NULL;
        msgpack_sbuffer args;
        msgpack_packer pk;
        sigset_t mask;
        Worker *w, *w2;
        Loop *l = NULL;
        int sfd;

        REQUIRE(argc == 2);
        REQUIRE(loop_new(&l) == 0);
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        REQUIRE(sfd >= 0);
        REQUIRE(loop_add(l, &sigchld.file, sfd, EPOLLIN, on_sigchld) == 0);
        msgpack_sbuffer_init(&args);

        CHECK(procpool_new(&p, l, "/nonexistent/futured-worker", 1, 0, &cb, NULL) == -ENOENT);
        CHECK(timer_peek(loop_timers(l)) == NULL);

        REQUIRE(procpool_new(&p, l, argv[1], 2, 2, &cb, NULL) == 0);
        sigchld.pool = p;
        pump(l, p, 5000, all_alive);
        CHECK(all_alive(p));
        CHECK(procpool_has_idle(p));

        /* A job's result comes back with its ID. */
        pack_n(&args, 97);
        w = NULL;
        CHECK(procpool_run(p, 5, "prime", args.data, args.size, &w) == 0);
        REQUIRE(w);
        pump(l, p, 5000, got_result);
        CHECK(results == 1 && last_job == 5 && last_ok && last_n == 97);

        /* A worker runs only the kinds of its own table: a transfer kind comes back failed. */
        results = 0;
        pack_n(&args, 1);
        w = NULL;
        CHECK(procpool_run(p, 9, "download", args.data, args.size, &w) == 0);
        pump(l, p, 5000, got_result);
        CHECK(results == 1 && last_job == 9 && !last_ok);
        pump(l, p, 5000, all_alive); /* a second job under max_tasks 2: wait for the replacement */

        /* A frame too big is refused, and the worker it would have gone to stays idle. */
        {
                size_t big = FRAME_MAX + 1;
                char *s = calloc(1, big);
                REQUIRE(s);
                memset(s, 'x', big);
                args.size = 0;
                msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
                msgpack_pack_map(&pk, 1);
                proto_pack_str(&pk, "n");
                msgpack_pack_str_with_body(&pk, s, big);
                free(s);
                w = NULL;
                CHECK(procpool_run(p, 8, "prime", args.data, args.size, &w) == -EMSGSIZE);
                CHECK(w == NULL);
                CHECK(all_alive(p) && procpool_has_idle(p));
        }

        /* With every worker busy, the pool says so and leaves *ret alone. */
        pack_n(&args, 18446744073709551557u);
        w = w2 = NULL;
        REQUIRE(procpool_run(p, 20, "prime", args.data, args.size, &w) == 0);
        REQUIRE(procpool_run(p, 21, "prime", args.data, args.size, &w2) == 0);
        CHECK(w && w2 && w != w2);
        CHECK(!procpool_has_idle(p));
        {
                Worker *none = NULL;
                CHECK(procpool_run(p, 22, "prime", args.data, args.size, &none) == -EAGAIN);
                CHECK(none == NULL);
        }
        died_job = 0;
        procpool_kill(p, w);
        procpool_kill(p, w2);
        pump(l, p, 5000, all_alive);
        CHECK(all_alive(p));
        CHECK(died_job == 0);

        /* Killing a busy worker detaches its job: nobody hears of job 6 again. */
        w = NULL;
        CHECK(procpool_run(p, 6, "prime", args.data, args.size, &w) == 0);
        REQUIRE(w);
        procpool_kill(p, w);
        pump(l, p, 300, got_death);
        CHECK(died_job == 0);
        pump(l, p, 5000, all_alive);
        CHECK(all_alive(p));

        /* A worker killed from outside reports its job and signal, and is replaced. */
        w = NULL;
        CHECK(procpool_run(p, 7, "prime", args.data, args.size, &w) == 0);
        REQUIRE(w);
        {
                /* The pool does not export pids, and this test's children are exactly the
                 * workers: ask the kernel for them. */
                char path[64], buf[256] = "";
                FILE *f;
                snprintf(path, sizeof(path), "/proc/%d/task/%d/children", getpid(), getpid());
                f = fopen(path, "re");
                REQUIRE(f);
                REQUIRE(fgets(buf, sizeof(buf), f));
                fclose(f);
                /* Kill them all: the idle one dies without a job, the busy one with job 7. */
                for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n"))
                        kill(atoi(tok), SIGKILL);
        }
        pump(l, p, 5000, got_death);
        CHECK(died_job == 7 && died_signal == SIGKILL);
        pump(l, p, 5000, all_alive);
        CHECK(all_alive(p));
        CHECK(procpool_died(p) >= 2);

        /* max_tasks = 2: a worker that ran two jobs is retired and replaced. */
        uint64_t started = procpool_started(p);
        for (uint64_t job = 10; job < 14; job++) {
                results = 0;
                pack_n(&args, job);
                w = NULL;
                REQUIRE(procpool_run(p, job, "prime", args.data, args.size, &w) == 0);
                CHECK(w != NULL);
                pump(l, p, 5000, got_result);
                CHECK(results == 1 && last_job == job);
                pump(l, p, 5000, all_alive);
        }
        CHECK(procpool_started(p) > started);

        /* Freeing the pool takes every socket and its timer out of the loop: turns after it call
         * nothing of the pool (ASan would see a freed worker). */
        sigchld.pool = procpool_free(p);
        CHECK(timer_peek(loop_timers(l)) == NULL);
        CHECK(loop_turn(l, 0) == 0);

        /* A binary that exits before its hello is a start-up failure: the loop's timer restarts it
         * after a back-off that doubles from 20 ms, not in a fork storm (the first second has
         * room for 1 + 5 starts). */
        REQUIRE(procpool_new(&p, l, "/bin/false", 1, 0, &cb, NULL) == 0);
        sigchld.pool = p;
        pump(l, p, 1000, never);
        CHECK(procpool_started(p) >= 3);
        CHECK(procpool_started(p) <= 8);
        CHECK(procpool_alive(p) == 0);
        CHECK(!procpool_has_idle(p));
        CHECK(procpool_died(p) >= 2);
        /* Freed while its timer is armed or a restart is under way: nothing is left behind. */
        sigchld.pool = procpool_free(p);
        CHECK(timer_peek(loop_timers(l)) == NULL);
        CHECK(loop_turn(l, 0) == 0);

        loop_remove(l, &sigchld.file);
        close(sfd);
        loop_free(l);
        msgpack_sbuffer_destroy(&args);
        return test_end();
}
