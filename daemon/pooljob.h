/* pooljob: the items the executor hands to the thread pool and the transfer pool, and the only
 * daemon code that runs on pool threads.
 *
 * A PoolJob carries everything its pool thread needs (the kind, a copy of the arguments, the
 * cancel flag and progress counters), so that the thread never touches the Future, which may be
 * cancelled and released meanwhile. Each pool gets its own item type wrapped around the PoolJob:
 * a Work for the thread pool (run() on a pool thread), a Transfer for the transfer pool (start()
 * and finish() on the transfer thread). Both come back through the one completion queue as a
 * Work; pooljob_from_work() finds the PoolJob again.
 *
 * Threads: the fields are grouped by who writes them. The creator (the loop) sets the constant
 * ones; the pool thread writes the atomics and, while the item is inside the pool, the outcome;
 * the loop reads the atomics at any time and everything else once the item has come back. The
 * `loop only` fields are the executor's books. pooljob_run_inline() runs a kind on the calling
 * thread (the loop, for kinds with inline_run). */
#pragma once

#include <msgpack.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kind.h"
#include "principal.h"
#include "proto.h"
#include "work.h"

typedef struct PoolJob PoolJob;
typedef struct Transfer Transfer;

struct PoolJob {
        /* Atomics: the pool thread writes started_ns and the progress, the loop the cancel flag. */
        _Atomic uint64_t started_ns; /* when a thread took it; 0 while it waits in the pool */
        atomic_int cancel;
        _Atomic uint64_t progress_done, progress_total;

        /* Constant after pooljob_new(). */
        uint64_t id;
        const JobKind *kind;

        /* Set by the creator before the item enters a pool; the pool thread reads it. */
        Principal *principal; /* a reference (the executor's), or NULL: its downloads' bytes */

        /* Loop only. */
        PoolJob *prev, *next;   /* the executor's list of items inside the pools */
        uint64_t progress_sent; /* progress_done when the last progress event went out */
        bool announced;         /* its `running` event went out */

        /* The pool thread's while inside the pool, the loop's after it came back. */
        uint8_t *args;
        uint32_t args_len;
        int rc;                 /* >= 0: `out` holds the result map, < 0: the failure map */
        msgpack_sbuffer out;
};

/* Makes the item for the job `id` of `kind` (a thread or transfer kind). Takes `args` (malloc'ed,
 * `args_len` bytes) on success. Loop thread. Returns 0 or -ENOMEM. */
int pooljob_new(PoolJob **ret, uint64_t id, const JobKind *kind, uint8_t *args, uint32_t args_len);

/* Frees an item that is not inside a pool. Accepts NULL; returns NULL. Loop thread. */
PoolJob *pooljob_free(PoolJob *j);

/* The item to hand to the thread pool (thread kinds) or to the transfer pool (transfer kinds);
 * borrowed from `j`. Loop thread. */
Work *pooljob_work(PoolJob *j);
Transfer *pooljob_transfer(PoolJob *j);

/* The PoolJob of an item that came back through the completion queue. Loop thread. */
PoolJob *pooljob_from_work(Work *w);

/* True once a pool thread took the job (any thread). */
static inline bool pooljob_started(const PoolJob *j) {
        return atomic_load_explicit(&j->started_ns, memory_order_relaxed) != 0;
}

/* Takes the outcome of a finished item: the result map (*ret_ok true) or the failure map,
 * malloc'ed, `ret_len` bytes. Loop thread. Returns 0 or -ENOMEM (the item keeps it then). */
int pooljob_take_outcome(PoolJob *j, uint8_t **ret, uint32_t *ret_len, bool *ret_ok);

/* Runs the job of `kind` with the packed `args` (borrowed) on the calling thread, for kinds with
 * inline_run. Puts the outcome like pooljob_take_outcome(). Returns 0 or -ENOMEM. */
int pooljob_run_inline(const JobKind *kind, const uint8_t *args, uint32_t args_len, uint8_t **ret,
                       uint32_t *ret_len, bool *ret_ok);
