/* executor: the futures domain. It owns the future table, the scheduler, the three pools, the
 * retention queue, the deferred replies' books and the counters, and it is the one door through
 * which a future changes state: submit, start, finish (done, failed, cancelled) and expire all go
 * through set_state() in executor.c, which keeps the counters. A durable store observes the
 * futures there (see docs/ARCHITECTURE.md).
 *
 * Work starts in one place only: executor_before_sleep(), which the daemon calls once per loop
 * turn. It starts what the pools have room for (a lock and a wake-up per pool per turn, not per
 * job), runs inline kinds on the loop, and tells the transfer thread about the turn's cancels.
 *
 * Finished work comes back through one completion queue (thread and transfer pools) and the
 * process pool's callbacks, all on the loop thread. Every hand-back carries a future ID and the
 * executor looks the future up again (`f->runner.job == j`), so a future cancelled or released
 * meanwhile is never touched through a stale pointer. Loop thread only. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"
#include "counters.h"
#include "events.h"
#include "loop.h"
#include "netpolicy.h"
#include "store.h"
#include "table.h"
#include "waiter.h"

typedef struct Executor Executor;

typedef struct ExecutorConfig {
        const char *worker_path;  /* futured-worker; borrowed for the call */
        const char *download_dir; /* where downloads with a `path` write, or NULL; borrowed */
        const NetPolicy *download_net; /* where downloads may connect; borrowed for the call */
        unsigned threads;
        unsigned prefetch;        /* thread jobs handed to the pool beyond its thread count */
        unsigned spin_us;
        unsigned transfers;
        unsigned processes;
        unsigned max_tasks;       /* per worker process, 0: unlimited */
        double retain;            /* seconds a finished future is kept */
        /* Per-principal quotas (principal.h; docs/PROTOCOL.md, Quotas); 0: none. */
        unsigned quota_pending;   /* unfinished futures (pending and running) */
        unsigned quota_running;   /* jobs running at once: more wait, as behind a group limit */
        unsigned quota_retained;  /* finished futures retained, and unfinished ones to come */
        uint64_t quota_download_bytes; /* body bytes its running downloads hold at once */
        uint64_t max_retained;    /* finished futures kept, past which a submit is refused (0:
                                   * no limit) */
        uint64_t max_retained_bytes; /* ... and the bytes of their outcomes (0: no limit) */
        StoreConfig store;        /* its path borrowed for executor_new() */
} ExecutorConfig;

/* A checked job of a submit (request.c checks; the executor trusts it). */
typedef struct JobSpec {
        const JobKind *kind;
        const msgpack_object *args;   /* borrowed for the call */
        const char *group;            /* NULL or 1..PROTO_MAX_GROUP bytes, NUL-terminated */
        uint32_t group_limit;
        int16_t priority;
        uint32_t timeout_ms;          /* 0: none */
        uint8_t retries;
        const char *key;              /* idempotency key: NULL, or 1..PROTO_MAX_KEY bytes */
        uint32_t key_len;
        const char *principal;        /* who submits it (principal.h); NULL: "unknown". The jobs
                                       * of one executor_submit() have the same. */
} JobSpec;

/* executor_submit()'s and executor_commit_result()'s expected outcomes. */
enum {
        EXECUTOR_QUEUE_FULL = 1, /* PROTO_MAX_PENDING unfinished futures */
        EXECUTOR_STOPPING,       /* shutting down: no new jobs */
        EXECUTOR_UNCOMMITTED,    /* the store has not committed the batch yet */
        EXECUTOR_STORE_FULL,     /* the store could not commit it: the disk is full */
        EXECUTOR_STORE_FAILED,   /* the store could not commit it: another error */
        EXECUTOR_QUOTA_PENDING,  /* the principal's unfinished futures would pass its quota */
        EXECUTOR_QUOTA_RETAINED, /* the principal's retained results would pass its quota */
        EXECUTOR_STORE_UNAVAILABLE, /* the store (a database server) cannot be reached */
        EXECUTOR_RETAINED_FULL,  /* max_retained results, or max_retained_bytes, are kept */
};

typedef struct ExecutorStats {
        uint64_t n_state[_STATE_MAX]; /* as clients see them: queued thread jobs are pending */
        uint64_t submitted, finished;
        unsigned threads_running;     /* jobs a pool thread has taken (not the prefetched) */
        unsigned transfers_running;
        unsigned processes_running;   /* workers running a job */
        unsigned processes_alive;
        uint64_t workers_started, workers_died;
        uint64_t deferred;
        uint64_t retained, retained_bytes; /* finished futures kept, and their outcomes' bytes */
        const char *store;            /* the backend's name, static */
        StoreStats store_stats;
} ExecutorStats;

/* Opens the store and recovers what it keeps (logging how many futures of each state and how
 * long it took), then starts the pools (and libcurl's global state) on `loop` (borrowed, like
 * `events`). Logs why when it fails; a store that cannot be used is -EBADMSG, -EPROTO or -EBUSY
 * (see sqlitestore.h). Returns 0 or -errno. */
int executor_new(Executor **ret, Loop *loop, Events *events, const ExecutorConfig *cfg);

/* Applies the live settings of `cfg` (reload): retain (also for the finished futures kept now),
 * transfers, prefetch, spin_us, max_tasks, the quotas, download_dir and download_net (for
 * downloads that start afterwards); the others take a restart and are ignored. Returns 0, or
 * -errno when the new download directory cannot be opened (nothing is changed then) or -ENOMEM. */
int executor_reconfigure(Executor *x, const ExecutorConfig *cfg);

/* Stops the pools (waiting for every item to come back), frees every future and waiter. Accepts
 * NULL; returns NULL. */
Executor *executor_free(Executor *x);
static inline void executor_freep(Executor **x) {
        executor_free(*x);
}

/* After EXECUTOR_RETAINED_FULL: in how many milliseconds the oldest result kept expires (at
 * least 1), a hint for when to try again. */
uint64_t executor_retry_after_ms(const Executor *x);

/* Queues the `n` jobs of `specs` as new pending futures and puts their IDs in `ids` (n of them,
 * caller's array). A job whose idempotency key names a future still retained is not queued
 * again: its ID is that future's (also when the key came earlier in the same batch). All or
 * nothing: on any refusal or failure nothing is left behind (no future, no ID issued, no
 * counter moved). The quotas of the jobs' principal are checked for the jobs that are new. With a
 * durable store the jobs start, and the submit may be acknowledged, only
 * once the store has committed batch *ret_seq (see executor_commit_result()); *ret_seq is 0 when
 * there is nothing to wait for. Returns 0, EXECUTOR_QUEUE_FULL, EXECUTOR_RETAINED_FULL (checked
 * before the batch: the futures it adds may finish past the budget), EXECUTOR_STOPPING,
 * EXECUTOR_QUOTA_PENDING, EXECUTOR_QUOTA_RETAINED, EXECUTOR_STORE_UNAVAILABLE, or -ENOMEM. */
int executor_submit(Executor *x, const JobSpec *specs, uint32_t n, uint64_t *ids,
                    uint64_t *ret_seq);

/* What became of store batch `seq`: 0 (committed), EXECUTOR_UNCOMMITTED, EXECUTOR_STORE_FULL or
 * EXECUTOR_STORE_FAILED (the batch's new jobs then failed with `store_full` or `internal`). */
int executor_commit_result(const Executor *x, uint64_t seq);

/* The store batch that records the changes made so far (0 with the memory store): a reply that
 * acknowledges them (a cancel's, a submit's "ids") waits for it, and its commit is then made
 * durable (store_want_durable). With a durable store a finish is seen (state, result, events,
 * waiters) only once its batch is committed. */
uint64_t executor_change_seq(Executor *x);

/* True when every finish recorded up to batch `seq` is seen: that batch, or a later one that
 * carried its changes after it failed, is committed. */
bool executor_seen(const Executor *x, uint64_t seq);

/* Cancels the future `id`: a pending one leaves its queue, a running one has its work stopped
 * (its worker killed, its thread item or transfer told to stop). Returns true if it is cancelled
 * now (or was already), false if it finished otherwise or is unknown. */
bool executor_cancel(Executor *x, uint64_t id);

/* Drops the finished future `id` and its result. Returns true if it was finished and is gone. */
bool executor_release(Executor *x, uint64_t id);

/* The futures, read-only (states through table_state_of()). */
const Table *executor_table(const Executor *x);

/* The deferred replies' books: request.c adds waiters and answers the due ones. */
WaiterSet *executor_waiters(Executor *x);

void executor_stats(const Executor *x, ExecutorStats *ret);

/* The counters by kind and pool (see counters.h), with pending and running as clients see them,
 * as executor_stats() counts them. Copies them whole into `ret`. */
void executor_counters(const Executor *x, Counters *ret);

/* From now on, times the runs of jobs for the counters' histograms (metrics, see counters.h). */
void executor_time_runs(Executor *x);

/* A number that changes whenever what executor_stats() or executor_counters() report may have
 * changed (but for the store's file size): cheap, for a reader that copies them only then. */
uint64_t executor_generation(const Executor *x);

/* The loop's before-sleep work: starts pending work, the only place that does. Returns true when
 * inline work is left over for the next turn (the loop must not sleep). */
bool executor_before_sleep(Executor *x);

/* SIGCHLD arrived: reaps worker processes (the process pool replaces them). */
void executor_reap(Executor *x);

/* Begins the shutdown: no new jobs, every pending job (also thread jobs queued inside the pool)
 * is cancelled; running ones go on. Puts how many were running and pending. */
void executor_stop(Executor *x, uint64_t *ret_running, uint64_t *ret_pending);

/* Ends the shutdown: whatever still runs fails with `shutdown`, and every finish is seen now,
 * committed or not (the loop ends next; executor_free() commits them). */
void executor_abort(Executor *x);

/* Cluster mode (docs/CLUSTER.md). True for a node of a cluster. */
bool executor_clustered(const Executor *x);

/* The node's cluster (cluster.h), or NULL outside cluster mode. */
Cluster *executor_cluster(const Executor *x);

/* PostgreSQL: the ID a submit's reply names for the job `id`: the existing job whose
 * idempotency key it repeats when the database had the key already (the job was dropped as its
 * batch committed), else `id`. Valid until executor_twins_sent(), which the replies of the
 * batches committed so far call once they are sent. */
uint64_t executor_twin(const Executor *x, uint64_t id);
void executor_twins_sent(Executor *x);

/* Asks the database for the rows of `ids` (IDs this node does not hold), which then become
 * futures of the table (mirrors); returns the lookup's number, 0 when it could not be asked
 * (not a cluster, or out of memory). executor_looked_up() is the last answered: every lookup
 * up to it. */
uint64_t executor_lookup(Executor *x, const uint64_t *ids, size_t n);
uint64_t executor_looked_up(const Executor *x);
/* True when lookup `seq` (answered) could not be read: the database could not be reached. */
bool executor_lookup_failed(const Executor *x, uint64_t seq);

typedef struct ExecutorClusterStats {
        bool on;
        bool connected;           /* the cluster's connection to the database */
        uint64_t ran;             /* jobs that ran on this node */
        uint64_t claimed;         /* jobs it claimed from the open ones */
        uint64_t taken_back;      /* jobs of dead nodes it took back */
        uint64_t expired;         /* expired rows it deleted for nodes that are gone */
        uint64_t notifications;   /* notifications it received */
        uint64_t lookups;         /* IDs it read for its clients and waiters */
        uint64_t lease_lost;
        uint64_t fenced;          /* starts or finishes the database refused (fencing) */
        uint64_t foreign;         /* futures of other nodes' IDs it holds */
} ExecutorClusterStats;
void executor_cluster_stats(const Executor *x, ExecutorClusterStats *ret);

/* True when no future runs and every finish is seen (its commit came back): the shutdown may
 * end. */
bool executor_settled(const Executor *x);
