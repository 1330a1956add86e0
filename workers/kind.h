/* kind: the registry of job kinds. A kind is one file (prime.c, sleep.c, ...) that defines one
 * JobKind, plus one entry in the daemon's table in kind-table.c (and one in futured-worker's, in
 * worker-main.c, if a worker process may run it). The daemon validates a job's arguments with
 * kind_validate() before it queues the job; a thread-pool thread or a futured-worker process then
 * calls kind->run(), or, for a transfer kind, the transfer thread calls kind->start() and later
 * kind->finish().
 *
 * Each executable has its own table so that futured-worker links neither libcurl nor the pools:
 * kind.c (the jobs library, which both link) only looks kinds up in a table it is given, and the
 * daemon's table of every kind, download included, is in kind-table.c, in the pools library that
 * only the daemon's side links. The tables are constant: any thread. */
#pragma once

#include <msgpack.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto.h"

typedef enum PoolType {
        POOL_THREAD,   /* blocking work on a thread-pool thread: run() */
        POOL_PROCESS,  /* CPU work in a futured-worker process: run() */
        POOL_TRANSFER, /* a libcurl transfer on the one transfer thread: start() and finish() */
        _POOL_MAX,
} PoolType;

typedef enum ParamType {
        PARAM_UINT,
        PARAM_FLOAT,
        PARAM_STR,
        PARAM_BOOL,
} ParamType;

typedef struct JobParam {
        const char *name;
        ParamType type;
        bool required;
} JobParam;

/* Why a job failed: a failure code of docs/PROTOCOL.md (static string) and a message. */
typedef struct JobFailure {
        const char *code;
        char message[256];
        int signal;      /* worker_died: the signal, or 0 */
        int exit_status; /* worker_died: the exit status when no signal */
        int http_status; /* http_error: the status */
        char rule[52];   /* download_denied: the network rule that refused, or "" */
        char address[52]; /* download_denied: the address it refused, or "" */
} JobFailure;

/* What a running job may consult. Owned by whoever runs the job (thread pool item or worker);
 * lives for the duration of run(). */
typedef struct JobContext {
        /* Nonzero once the daemon wants the job stopped (cancel or timeout). Thread-pool jobs poll
         * it; process jobs are killed instead and may ignore it. */
        const atomic_int *cancel;
        /* Where a thread-pool job may report progress (bytes so far and expected, 0 if unknown);
         * the daemon reads them a few times a second for progress events. NULL in workers. */
        _Atomic uint64_t *progress_done;
        _Atomic uint64_t *progress_total;
        /* Transfer kinds: the body bytes that the running downloads of the job's principal hold
         * (docs/SECURITY.md, Downloads per principal), shared by all of them and read by the
         * loop; NULL: not counted. `principal` is its name, for a failure's message. Both outlive
         * the transfer. */
        _Atomic uint64_t *download_held;
        const char *principal;
} JobContext;

typedef struct JobKind {
        const char *name;
        PoolType pool;
        /* Non-blocking and short: the daemon may run it on its loop thread instead of handing it
         * to a pool thread, where the hand-over and the wake-ups would cost more than the job.
         * Set it only on a POOL_THREAD kind whose run() never blocks and stays short whatever
         * its arguments, since the loop serves every client meanwhile (noop). */
        bool inline_run;
        const JobParam *params; /* terminated by an entry with name == NULL */
        /* Optional checks beyond the parameter table (ranges, enumerations). `args` has already
         * passed the table's checks. Returns 0, or -EINVAL with `e` filled (code bad_args). */
        int (*check)(const msgpack_object *args, ProtoError *e);
        /* Runs the job. On success packs exactly one result map into `pk` and returns 0; on
         * failure fills `failure` and returns a negative errno-style value, packing nothing. */
        int (*run)(const msgpack_object *args, const JobContext *ctx, msgpack_packer *pk,
                   JobFailure *failure);
        /* POOL_TRANSFER kinds, in place of run(). start() makes the job's transfer state, owned by
         * the caller until it hands it to finish(), and returns the libcurl easy handle inside it
         * (as void *) for the caller's multi handle; the caller may set the handle's
         * CURLOPT_PRIVATE. `args` is borrowed for the call; `ctx` must outlive the transfer. On
         * failure start() fills `failure` and returns NULL, keeping nothing. finish() runs once
         * libcurl is done with the handle (`result` is its CURLcode, or -1 when the job was
         * cancelled) and the handle is out of any multi handle; it packs the result or fills
         * `failure` exactly like run(), and frees the state with its handle. */
        void *(*start)(const msgpack_object *args, const JobContext *ctx, void **ret_state,
                       JobFailure *failure);
        int (*finish)(void *state, int result, msgpack_packer *pk, JobFailure *failure);
} JobKind;

/* "thread", "process" or "transfer": the pool's name in the protocol. */
const char *pool_name(PoolType pool);

/* The kinds without a header of their own. */
extern const JobKind sleep_kind;
extern const JobKind noop_kind;

/* Returns the kind named by the `len` bytes at `name` in the NULL-terminated `table` (borrowed),
 * or NULL. The result is the table's entry. */
const JobKind *kind_lookup(const JobKind *const *table, const char *name, size_t len);

/* The daemon's registry (kind-table.c, in the pools library): returns the kind named by the `len`
 * bytes at `name`, or NULL. The result is static. */
const JobKind *kind_find(const char *name, size_t len);

/* The daemon's registry (kind-table.c, in the pools library): returns the NULL-terminated table
 * of every kind, static. */
const JobKind *const *kind_all(void);

/* Checks `args` against the kind: a map, every required parameter present, no unknown key, every
 * value of its parameter's type, then kind->check. Returns 0, or -EINVAL with `e` filled
 * (code bad_args, field set to the parameter's static name where one is at fault). */
int kind_validate(const JobKind *kind, const msgpack_object *args, ProtoError *e);

/* Fills `f` with `code` (static) and a formatted message. Returns -EIO for `return` chaining. */
int job_failure(JobFailure *f, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
