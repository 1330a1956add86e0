/* daemon: the futured daemon as one object: its sockets, the future table, the scheduler, the
 * timers and both pools, driven by one event loop in the main thread.
 *
 * Every field here belongs to the loop thread. The thread pool's threads see only the ThreadJob
 * items handed to them; the worker processes see only frames. The other daemon modules (request,
 * waiter) are parts of this one object and take it as their first argument. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "future.h"
#include "procpool.h"
#include "scheduler.h"
#include "table.h"
#include "threadpool.h"
#include "timer.h"
#include "transferpool.h"

#define DEFAULT_TRANSFERS 1024
#define MAX_TRANSFERS 65536
#define DEFAULT_SPIN_US 200

typedef struct DaemonConfig {
        char **listen;        /* ZeroMQ endpoints for the ROUTER socket */
        size_t n_listen;
        char *events;         /* the PUB endpoint */
        char *worker_path;    /* futured-worker */
        char *download_dir;   /* where `download` jobs with a `path` write, or NULL */
        unsigned threads;
        unsigned prefetch;    /* thread jobs handed to the pool beyond its thread count */
        bool prefetch_set;    /* --prefetch given; else 3 per thread */
        unsigned spin_us;     /* an idle pool thread looks for work this long before it sleeps */
        unsigned transfers;   /* downloads at once in the transfer pool */
        unsigned processes;
        unsigned max_tasks;   /* per worker process, 0: unlimited */
        double retain;        /* seconds a finished future is kept */
        double grace;         /* seconds running jobs get at shutdown */
} DaemonConfig;

typedef struct Client Client;
typedef struct Waiter Waiter;
typedef struct ThreadJob ThreadJob;

/* One entry of the retention queue: finished futures in the order they finished. */
typedef struct Retained {
        uint64_t id;
        uint64_t deadline;
} Retained;

typedef struct Daemon {
        DaemonConfig cfg;
        void *zmq;
        void *router;
        void *pub;
        int epoll_fd;
        int signal_fd;
        int timer_fd;

        Table table;
        Scheduler sched;
        TimerHeap timers;
        ThreadPool *tpool;
        unsigned threads_busy;
        TransferPool *xpool;
        unsigned transfers_busy;
        bool transfers_cancelled; /* this turn set a transfer's cancel flag: wake the thread */
        ThreadJob *thread_jobs; /* items inside the thread or transfer pool, doubly linked */
        Timer progress;       /* armed while such items run: publishes progress events */
        ProcPool *ppool;

        Retained *retained;   /* ring buffer */
        size_t retained_head, retained_len, retained_cap;

        void *clients;        /* tsearch() tree of Client*, those with deferred replies */
        Waiter *waiters;      /* every deferred reply, doubly linked */
        uint64_t n_deferred;

        uint64_t n_state[_STATE_MAX];
        uint64_t submitted, finished;
        uint64_t started_ns;

        bool stopping;        /* SIGTERM seen: no new jobs */
        bool quit;            /* leave the loop */
        Timer grace;

        msgpack_sbuffer out;  /* reused for every reply and event */
} Daemon;

/* Frees the strings of `cfg` (not `cfg` itself). */
void daemon_config_free(DaemonConfig *cfg);

/* Builds the daemon from `cfg` (the daemon takes ownership of its strings), binds its sockets and
 * starts its pools. Call from the main thread with SIGTERM, SIGINT, SIGHUP and SIGCHLD blocked.
 * Returns 0 or -errno, having logged why. */
int daemon_new(Daemon **ret, DaemonConfig *cfg);

/* Runs the loop until a shutdown completes. Returns 0 or -errno. */
int daemon_run(Daemon *d);

/* Tears everything down: pools, sockets, futures. Accepts NULL; returns NULL. */
Daemon *daemon_free(Daemon *d);
static inline void daemon_freep(Daemon **d) {
        daemon_free(*d);
}

/* Changes the state of `f`, keeping the counters. */
void daemon_set_state(Daemon *d, Future *f, FutureState state);

/* `f` reached a final state: counts it, queues it for expiry, publishes the event and answers
 * the deferred replies it satisfies. `outcome` (malloc'ed msgpack map, may be NULL) is taken. */
void daemon_finish(Daemon *d, Future *f, FutureState state, uint8_t *outcome, uint32_t outcome_len);

/* Finishes `f` as failed with a failure map built from `code` (static) and `message`; `signal`
 * and `exit_status` are added when non-zero (worker_died). */
void daemon_fail(Daemon *d, Future *f, const char *code, const char *message, int signal,
                 int exit_status);

/* Stops `f` before it finishes by itself: a pending future leaves its queue, a running one has
 * its work stopped (its worker process is killed, its thread item told to stop). It ends in
 * `state`: cancelled, or failed with the failure `code` (static; timeout, shutdown). Returns false
 * if `f` had finished already. */
bool daemon_cancel(Daemon *d, Future *f, FutureState state, const char *code);

/* Drops the finished future `f` (released, or its retention ran out): it reports `expired`
 * from now on. */
void daemon_expire(Daemon *d, Future *f);

/* The state a client sees for `id`: the future's, or `expired` / `unknown` when it is gone. */
FutureState daemon_state_of(Daemon *d, uint64_t id);

/* The state clients see for `f`: its state, except that a thread job still queued inside the pool
 * (not yet taken by a thread) is pending. */
FutureState daemon_visible_state(Daemon *d, Future *f);

/* How many thread jobs wait inside the pool's queue, not yet taken by a thread. */
unsigned daemon_thread_jobs_queued(Daemon *d);

/* Publishes a state-change event for `f`. */
void daemon_publish(Daemon *d, const Future *f);

/* Tells the transfer thread about this turn's cancels, and starts whatever pending work the pools
 * have room for. The loop calls it at the end of every turn. */
void daemon_dispatch(Daemon *d);

/* Handles one request frame from the client `identity` (both borrowed). Replies at once or
 * defers the reply (request.c). */
void request_handle(Daemon *d, const uint8_t *identity, size_t identity_len, bool envelope,
                    const uint8_t *body, size_t body_len);

/* Packs into d->out the reply to a `wait` for `ids` (borrowed): the done and not-done sets. */
void request_pack_wait_reply(Daemon *d, uint64_t req_id, const uint64_t *ids, uint32_t n);

/* Packs into d->out the reply to a `result` for `id`: the outcome, or `not_done` when the future
 * has not finished. */
void request_pack_result_reply(Daemon *d, uint64_t req_id, uint64_t id);
/* Packs the reply of `results` (and of `submit` with reply "results"): `ids`, and `results`
 * with each future's id, state and, when finished, its result or failure. */
void request_pack_results_reply(Daemon *d, uint64_t req_id, const uint64_t *ids, uint32_t n);

/* Sends the reply in d->out to `identity`; a client that is gone loses its reply, nothing
 * else. */
void request_send(Daemon *d, const uint8_t *identity, size_t identity_len, bool envelope);
