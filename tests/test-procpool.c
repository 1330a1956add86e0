/* Unit test of the process pool against the real futured-worker: workers start and say hello, a
 * job's result comes back, a killed worker reports its job as dead and is replaced, a worker that
 * reached max_tasks is replaced, and a missing binary is refused. argv[1] is futured-worker. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "procpool.h"
#include "proto.h"
#include "test.h"
#include "timer.h"

static uint64_t last_job, died_job;
static int died_signal, results, idles;
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

static void on_died(void *u, uint64_t job, int sig, int status) {
        died_job = job;
        died_signal = sig;
}

static void on_idle(void *u) {
        idles++;
}

static const ProcPoolCallbacks cb = { on_result, on_died, on_idle };

/* Runs the pool's events for up to `ms` or until `*flag` becomes true. */
static void pump(ProcPool *p, int sfd, int ms, bool (*done)(ProcPool *)) {
        uint64_t end = timer_now() + (uint64_t) ms * 1000000u;

        while (timer_now() < end && !done(p)) {
                struct pollfd fds[2] = { { procpool_fd(p), POLLIN, 0 }, { sfd, POLLIN, 0 } };
                struct signalfd_siginfo si;
                if (poll(fds, 2, 50) <= 0)
                        continue;
                if (fds[1].revents) {
                        while (read(sfd, &si, sizeof(si)) == sizeof(si))
                                ;
                        procpool_reap(p);
                }
                if (fds[0].revents)
                        procpool_dispatch(p);
        }
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
        ProcPool *p = NULL;
        msgpack_sbuffer args;
        sigset_t mask;
        Worker *w;
        int sfd;

        REQUIRE(argc == 2);
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        REQUIRE(sfd >= 0);
        msgpack_sbuffer_init(&args);

        CHECK(procpool_new(&p, "/nonexistent/futured-worker", 1, 0, &cb, NULL) == -ENOENT);

        REQUIRE(procpool_new(&p, argv[1], 2, 2, &cb, NULL) == 0);
        pump(p, sfd, 5000, all_alive);
        CHECK(all_alive(p));
        CHECK(procpool_has_idle(p));

        /* A job's result comes back with its ID. */
        pack_n(&args, 97);
        w = procpool_run(p, 5, "prime", args.data, args.size);
        REQUIRE(w);
        pump(p, sfd, 5000, got_result);
        CHECK(results == 1 && last_job == 5 && last_ok && last_n == 97);

        /* Killing a busy worker detaches its job: nobody hears of job 6 again. */
        pack_n(&args, 18446744073709551557u);
        w = procpool_run(p, 6, "prime", args.data, args.size);
        REQUIRE(w);
        procpool_kill(p, w);
        pump(p, sfd, 300, got_death);
        CHECK(died_job == 0);
        pump(p, sfd, 5000, all_alive);
        CHECK(all_alive(p));

        /* A worker killed from outside reports its job and signal, and is replaced. */
        w = procpool_run(p, 7, "prime", args.data, args.size);
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
        pump(p, sfd, 5000, got_death);
        CHECK(died_job == 7 && died_signal == SIGKILL);
        pump(p, sfd, 5000, all_alive);
        CHECK(all_alive(p));
        CHECK(procpool_died(p) >= 2);

        /* max_tasks = 2: a worker that ran two jobs is retired and replaced. */
        uint64_t started = procpool_started(p);
        for (uint64_t job = 10; job < 14; job++) {
                results = 0;
                pack_n(&args, job);
                REQUIRE(procpool_run(p, job, "prime", args.data, args.size));
                pump(p, sfd, 5000, got_result);
                CHECK(results == 1 && last_job == job);
                pump(p, sfd, 5000, all_alive);
        }
        CHECK(procpool_started(p) > started);

        procpool_free(p);
        msgpack_sbuffer_destroy(&args);
        close(sfd);
        return test_end();
}
