/* Fuzz target: one request frame into request_handle() on a real executor (thread, transfer and
 * process pools, a real loop, a real inproc ROUTER that replies go out on and vanish), then the
 * steps of a loop turn, so that what the request set going (jobs, deferred replies, timers) runs
 * through its completion handlers too.
 *
 * Between inputs the harness cancels every unfinished future and releases every finished one, so
 * the daemon's books stay small whatever the inputs submit. Downloads and process jobs are
 * cancelled before the executor's hook could start them: a fuzzer must not reach the network, and
 * there are no worker processes (processes = 0). Thread jobs (sleep, noop) do run.
 *
 * Built with clang and libFuzzer when meson's `fuzz` option is on; built with any compiler into
 * a replay program (replay.c) that the normal test suite runs over the corpus and the regressions. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <zmq.h>

#include "executor.h"
#include "request.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Loop *loop;
static Events events;
static Executor *x;
static Requests rq;
static void *zmq_ctx;
static char dir[] = "/tmp/futured-fuzz.XXXXXX";

static void remove_dir(void) {
        rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        ExecutorConfig cfg = { .worker_path = "/bin/true", .threads = 1, .transfers = 1,
                               .processes = 0, .retain = 3600 };

        /* A real download directory (empty, never written: no download starts) for `path` checks. */
        if (!mkdtemp(dir) || loop_new(&loop) < 0)
                abort();
        atexit(remove_dir);
        cfg.download_dir = dir;
        events_init(&events, NULL);
        if (executor_new(&x, loop, &events, &cfg) < 0)
                abort();
        zmq_ctx = zmq_ctx_new();
        rq = (Requests){
                .executor = x,
                .events = &events,
                .router = zmq_ctx ? zmq_socket(zmq_ctx, ZMQ_ROUTER) : NULL,
                .events_endpoint = "inproc://events",
                .threads = 1,
                .transfers = 1,
                .store = "memory",
        };
        if (!rq.router)
                abort();
        return 0;
}

/* Cancels what must not run here (transfers, process jobs) or would pile up (everything, when
 * `all`), and releases every finished future. */
static void tidy(bool all) {
        const Table *t = executor_table(x);

        for (uint64_t id = t->base; id < t->next_id; id++) {
                Future *f = table_get(t, id);
                if (!f)
                        continue;
                if (proto_state_final(f->state))
                        executor_release(x, id);
                else if (all || f->kind->pool != POOL_THREAD)
                        executor_cancel(x, id);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const uint8_t identity[] = "fuzz";
        Peer from = { .identity = identity, .identity_len = sizeof(identity) - 1 };

        if (!x)
                LLVMFuzzerInitialize(NULL, NULL);
        from.envelope = size > 0 && (data[0] & 1); /* either reply shape */
        request_handle(&rq, &from, data, size);
        tidy(false);
        executor_before_sleep(x);
        request_answer_due(&rq);
        tidy(true);
        loop_turn(loop, 0);
        executor_before_sleep(x);
        request_answer_due(&rq);
        tidy(true);
        return 0;
}
