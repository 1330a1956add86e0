/* store: where futures are kept durably, behind one small interface with a backend per kind of
 * store: `memory` (nothing is kept: today's behaviour), `sqlite` (an embedded file, the
 * default) and `postgresql` (a database server; docs/CLUSTER.md: one node per database so far,
 * several nodes sharing one is the cluster mode it plans).
 *
 * The executor tells the store every change it makes, at its one door (executor.c: set_state):
 * a job added, started (with its attempt), finished (with its outcome), requeued after a worker
 * died, removed (released or expired). The store appends each change to the open batch. Once per
 * loop turn the executor calls store_flush(): the open batch goes to the store's own thread,
 * which commits it in one transaction, while the loop goes on filling the next one. When the
 * commit is done the store calls on_commit() on the loop thread (through a LoopFile) with the
 * batch's sequence number: only then are that batch's submits acknowledged and its new jobs
 * started. The loop never waits on the disk. One batch is in flight at a time; changes made
 * meanwhile wait for the next (group commit).
 *
 * IDs come from the store: store_next_id() is one past the highest ID ever issued, never reused.
 * A running job carries its attempt number and its owner (the node that started it, "HOST:PID":
 * a shared store fences on owner and attempt).
 *
 * Threads: every function is the loop thread's; the backend's commit runs on the store thread,
 * which sees only batches (copies), never a Future. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "histogram.h"
#include "loop.h"
#include "storebatch.h"

typedef struct Store Store;

typedef enum StoreKind {
        STORE_MEMORY,
        STORE_SQLITE,
        STORE_POSTGRESQL,
} StoreKind;

/* "memory", "sqlite" or "postgresql". */
const char *store_kind_to_string(StoreKind kind);

typedef enum StoreSync {
        STORE_SYNC_NORMAL, /* survives a crash of the process (SQLite synchronous=NORMAL, WAL) */
        STORE_SYNC_FULL,   /* also a power loss: every commit is fsync'ed */
} StoreSync;

typedef struct StoreConfig {
        StoreKind kind;
        const char *path;  /* sqlite: the database file; postgresql: the libpq URI; borrowed
                            * for store_open() */
        StoreSync sync;
        bool clock_ids;    /* memory: IDs start at the wall clock's microseconds, not 1 */
        bool cluster;      /* postgresql: several nodes share the database (docs/CLUSTER.md) */
        unsigned lease_ms; /* cluster: a node's lease */
} StoreConfig;

/* Called on the loop thread when batch `seq` (and every batch before it) is committed. `error`
 * is 0, or -ENOSPC (the disk is full) or another -errno: the batch was not committed. */
typedef void (*StoreCommitFn)(void *userdata, uint64_t seq, int error);

/* Cluster mode: called on the loop thread, before on_commit(), for each job of a committed
 * batch whose start or finish the database refused: the job is no longer this node's (its
 * lease expired and another node took it back, or it was cancelled). */
typedef void (*StoreFencedFn)(void *userdata, uint64_t id);
void store_set_fenced(Store *s, StoreFencedFn fn);

/* PostgreSQL: called on the loop thread, before on_commit(), for each new job of a committed
 * batch that was not inserted because the row `existing` has its idempotency key already (keys
 * are unique in the database: another node's submit, docs/CLUSTER.md). */
typedef void (*StoreTwinFn)(void *userdata, uint64_t id, uint64_t existing);
void store_set_twin(Store *s, StoreTwinFn fn);

/* Opens the store and, for a durable one, its file (created when missing) and its thread. Logs
 * why when it fails; a damaged, newer or locked file is -EBADMSG, -EPROTO or -EBUSY and is left
 * untouched. `loop` and `on_commit`/`userdata` are borrowed for the store's life. Returns 0 or
 * -errno. */
int store_open(Store **ret, const StoreConfig *cfg, Loop *loop, StoreCommitFn on_commit,
               void *userdata);

/* Waits for the batch in flight, commits what is left, stops the thread, closes the file.
 * Accepts NULL; returns NULL. */
Store *store_close(Store *s);
static inline void store_closep(Store **s) {
        store_close(*s);
}

/* True for a store that keeps jobs across restarts. */
bool store_durable(const Store *s);

const char *store_kind_name(const Store *s);

/* One past the highest ID ever issued (1 for a new store; with `clock_ids`, the memory store's
 * first is the wall clock's microseconds when it opened). */
uint64_t store_next_id(const Store *s);

/* Calls `fn` for every job kept, in ID order (durable stores; the memory store has none), on the
 * calling thread, before the loop runs. `job` is borrowed for the call. Returns 0, the first
 * negative value `fn` returned, or -errno. */
int store_recover(Store *s, StoreRecoverFn fn, void *userdata);

/* The changes. Each returns 0 or -ENOMEM (the change is then lost: the caller fails the request
 * or logs). The data is copied into the open batch. */
int store_add(Store *s, const StoreJob *job);
int store_start(Store *s, uint64_t id, uint8_t attempt);
int store_finish(Store *s, uint64_t id, uint8_t state, const uint8_t *outcome, uint32_t len,
                 int64_t finished_at_ms, uint8_t attempt);
int store_requeue(Store *s, uint64_t id, uint8_t attempt);
int store_remove(Store *s, uint64_t id);

/* Issues `n` (at most PROTO_MAX_BATCH) consecutive IDs from the store: the first is returned,
 * or 0 when the store cannot issue IDs now (postgresql: the database cannot be reached). */
uint64_t store_issue_ids(Store *s, uint32_t n);

/* The sequence number of the open batch: what a submit made now waits for. The batch is then
 * committed at the next store_flush() even if it holds no change (a submit whose every job was
 * known by its idempotency key still waits for the batch that holds them). 0 for the memory
 * store. */
uint64_t store_open_seq(Store *s);

/* Marks the open batch as one whose commit must be on disk (the WAL flushed) before it is
 * reported committed: a reply acknowledges what it holds. A batch that holds only new jobs no
 * reply acknowledges yet (a submit whose reply waits for the results) and starts is committed
 * without waiting for the disk where the backend can (postgresql: synchronous_commit off for
 * that transaction): the durable commit of its jobs' finishes, later in the same log, carries
 * it (docs/DURABILITY.md). Finishes, requeues and removals always make the batch durable. */
void store_want_durable(Store *s);

/* Hands the open batch to the store thread if it has changes and none is in flight. The memory
 * store "commits" at once, calling on_commit() before it returns. Loop thread, once per turn. */
void store_flush(Store *s);

/* For stats: the file's size in bytes (0: none), the last commit's number of changes and its
 * duration in microseconds; whether the last commit failed (the disk is full, the database
 * cannot be reached): 1, else 0; and every commit's duration (metrics). */
typedef struct StoreStats {
        uint64_t file_bytes;
        uint64_t last_batch;
        uint64_t last_commit_us;
        uint64_t commits;
        uint64_t unflushed; /* commits that did not wait for the disk (store_want_durable) */
        Histogram commit_seconds;
        uint64_t failing;
} StoreStats;
void store_stats(const Store *s, StoreStats *ret);

/* The owner this node writes on the jobs it runs ("HOST:PID:BOOT" in cluster mode), or NULL
 * for a store that keeps none. */
const char *store_owner(const Store *s);

/* postgresql: the process ID of the server process that commits this store's batches (the
 * sender of their notifications); 0 for other stores. Any thread. */
int store_commit_pid(const Store *s);

/* The number of commits so far: cheap (store_stats() looks at the file). */
uint64_t store_commits(const Store *s);
