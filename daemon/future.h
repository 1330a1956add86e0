/* future: one submitted job and its outcome, as the daemon keeps it.
 *
 * A Future is created by a submit, owned by the future table, and freed when it is released or
 * its retention time runs out (only finished futures are ever freed, except at shutdown). While it
 * is pending it sits in exactly one scheduler heap (`heap_pos`); while it is running `runner`
 * points at the thread-pool item or the worker process that has it. Loop thread only. */
#pragma once

#include <stdint.h>

#include "kind.h"
#include "proto.h"
#include "timer.h"

typedef struct Group Group;
typedef struct WaitRef WaitRef;

/* Timer kinds of the loop (Timer.kind). */
enum {
        TIMER_JOB_TIMEOUT = 1,
        TIMER_WAITER,
        TIMER_GRACE,
        TIMER_PROGRESS,
};

typedef struct Future {
        uint64_t id;
        const JobKind *kind;
        Group *group;      /* NULL, or a counted reference to the job's group */
        uint8_t *args;     /* msgpack map of the job's arguments; freed once the job is finished */
        uint8_t *outcome;  /* finished: the result map (done) or the failure map (failed) */
        uint32_t args_len;
        uint32_t outcome_len;
        WaitRef *waiters;  /* deferred replies waiting on this future (doubly linked) */
        void *runner;      /* running: the ThreadJob or Worker that has it, else NULL */
        Timer timeout;     /* running: fires when the run exceeds timeout_ms */
        uint32_t timeout_ms; /* 0: no timeout */
        uint32_t heap_pos; /* pending: slot in a scheduler heap + 1, else 0 */
        int16_t priority;
        uint8_t state;     /* FutureState */
        uint8_t retries;   /* retries left after a worker death */
        uint8_t deaths;    /* workers that died running it */
        uint8_t in_group_heap; /* pending and parked behind its group's limit */
} Future;

/* A deadly job is not run again after it killed this many workers, whatever its retries say. */
#define FUTURE_MAX_DEATHS 3

/* Allocates a pending future that takes ownership of `args` (malloc'ed, `args_len` bytes). */
Future *future_new(uint64_t id, const JobKind *kind, uint8_t *args, uint32_t args_len);

/* Frees the future and what it owns; the group reference must have been dropped and the future
 * must be in no heap and have no waiters. Accepts NULL; returns NULL. */
Future *future_free(Future *f);

/* Stores the outcome (takes ownership of `outcome`), frees the arguments, sets the final state.
 * Does not notify anyone: the daemon does that. */
void future_finish(Future *f, FutureState state, uint8_t *outcome, uint32_t outcome_len);
