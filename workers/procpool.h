/* procpool: the process pool: a fixed number of futured-worker processes, each started with
 * posix_spawn (fork + exec, never a bare fork of the threaded daemon) and connected by a
 * SOCK_SEQPACKET socketpair carrying frames (frame.h).
 *
 * The pool knows each worker's pid, so the daemon can kill the worker that runs a job to cancel
 * it or to end its timeout. A worker that dies for any reason is reported once through on_died
 * (with the job it held, if any) and replaced at once; a worker that dies before saying hello is
 * a start-up failure, and consecutive start-up failures back off exponentially (up to 5 s) so that
 * a missing binary cannot make a fork storm. The pool never "breaks".
 *
 * The pool lives on the daemon's loop (util/loop.h): each worker's socket is a LoopFile of the
 * worker's own, registered while the socket is open, and the start-up back-off is one loop Timer
 * of the pool's. The daemon calls procpool_reap() on SIGCHLD, and starts work once per loop turn
 * (in its before-sleep hook) while procpool_has_idle() says a worker is free. Loop thread only. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "loop.h"

typedef struct ProcPool ProcPool;
typedef struct Worker Worker;

typedef struct ProcPoolCallbacks {
        /* A worker finished job `job`: `ok` with the result map, or not ok with the failure map
         * (`payload` borrowed for the call). The worker is idle again when this is called, unless
         * it reached max_tasks and is being replaced. */
        void (*on_result)(void *userdata, uint64_t job, bool ok, const uint8_t *payload,
                          size_t payload_len);
        /* The worker `pid` running `job` (0: none, or one detached by procpool_kill) died by
         * `signal` (0 if it exited) or exited with `exit_status`. */
        void (*on_died)(void *userdata, uint64_t job, int pid, int signal, int exit_status);
} ProcPoolCallbacks;

/* Creates the pool on `loop` and starts `size` workers from `worker_path` (borrowed; copied). A
 * worker runs at most `max_tasks` jobs before it is replaced (0: no limit). `loop`, `cb` and
 * `userdata` are borrowed for the pool's life: the loop must outlive the pool, which registers
 * its workers' sockets and its back-off timer with it. Returns 0 or -errno. */
int procpool_new(ProcPool **ret, Loop *loop, const char *worker_path, unsigned size,
                 unsigned max_tasks, const ProcPoolCallbacks *cb, void *userdata);

/* Removes the workers' sockets from the loop and closes them, kills and reaps every worker, gives
 * the timer back and frees the pool. Accepts NULL and a half-built pool; returns NULL. */
ProcPool *procpool_free(ProcPool *p);

/* Reaps exited workers (call on SIGCHLD) and starts replacements. */
void procpool_reap(ProcPool *p);

/* Sends job `job` of `kind` (borrowed) with the packed `args` map (borrowed) to an idle worker.
 * Returns 0 with *ret set to the worker (borrowed; valid until it finishes or dies, as reported by
 * the callbacks); -EAGAIN if no worker is idle; -EMSGSIZE if the frame is too big; or another
 * -errno when the send failed: that worker was killed as dead, no callback will name the job, and
 * the job stays with the caller (to run again or to fail). *ret is untouched on failure. */
int procpool_run(ProcPool *p, uint64_t job, const char *kind, const void *args, size_t len,
                 Worker **ret);

/* True if a worker is idle. */
bool procpool_has_idle(const ProcPool *p);

/* Kills `w` with SIGKILL and detaches its job: no on_result or on_died will name that job any
 * more. The replacement starts when the death is reaped. */
void procpool_kill(ProcPool *p, Worker *w);

/* Counters for stats. */
unsigned procpool_size(const ProcPool *p);
/* Changes the jobs per worker before it is replaced (reload; 0: no limit). */
void procpool_set_max_tasks(ProcPool *p, unsigned max_tasks);
unsigned procpool_alive(const ProcPool *p);
/* Workers running a job now. */
unsigned procpool_busy(const ProcPool *p);
uint64_t procpool_started(const ProcPool *p);
uint64_t procpool_died(const ProcPool *p);
