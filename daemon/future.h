/* future: one submitted job and its outcome, as the daemon keeps it.
 *
 * A Future is created by a submit, owned by the future table, and freed when it is released or
 * its retention time runs out (only finished futures are ever freed, except at shutdown). While it
 * is pending it sits in exactly one scheduler heap (`heap_pos`); while it is running `job` or
 * `worker` names the pool item or the worker process that has it. Its `state` is written by one
 * function only, the executor's (executor.c: set_state). Loop thread only. */
#pragma once

#include <stdint.h>

#include "kind.h"
#include "proto.h"
#include "timer.h"

typedef struct Group Group;
typedef struct Principal Principal;
typedef struct WaitRef WaitRef;
typedef struct PoolJob PoolJob;
typedef struct Worker Worker;

/* A running job's timeout, allocated only for the futures that have one (most have not), so
 * its slot in the loop's timer heap is reserved at submit and arming it never fails. */
typedef struct JobTimeout {
        Timer timer;
        struct Future *future; /* its owner: the timer lives and dies with it */
        void *executor;        /* for the timer's callback */
} JobTimeout;

typedef struct Future {
        uint64_t id;
        const JobKind *kind;
        Group *group;      /* NULL, or a counted reference to the job's group */
        Principal *principal; /* a counted reference to who submitted it (NULL in unit tests) */
        uint8_t *args;     /* msgpack map of the job's arguments; freed once the job is finished */
        uint8_t *outcome;  /* finished: the result map (done) or the failure map (failed) */
        uint32_t args_len;
        uint32_t outcome_len;
        WaitRef *waiters;  /* deferred replies waiting on this future (doubly linked) */
        union {            /* running: who has it (kind->pool tells which), else NULL */
                PoolJob *job;      /* thread and transfer pools */
                Worker *worker;    /* process pool */
        } runner;
        JobTimeout *timeout; /* when timeout_ms > 0: armed while running */
        uint64_t started_ns; /* when it last started running (CLOCK_MONOTONIC; counters.c) */
        uint64_t unseen_seq; /* finished, but the store batch `unseen_seq` that records it is not
                              * committed yet: clients see `shown` until it is (0: no such batch;
                              * docs/DURABILITY.md) */
        char *key;         /* the idempotency key (NUL-terminated), or NULL; the executor's index
                            * of keys points at it */
        uint32_t timeout_ms; /* 0: no timeout */
        uint32_t heap_pos; /* pending: slot in a scheduler heap + 1, else 0 */
        int16_t priority;
        uint8_t state;     /* FutureState */
        uint8_t retries;   /* retries left after a worker death */
        uint8_t deaths;    /* workers that died running it */
        uint8_t attempt;   /* runs started so far, across restarts (the store keeps it) */
        uint8_t in_group_heap; /* pending and parked behind its group's limit */
        uint8_t cluster;   /* cluster mode: FUTURE_AWAY, FUTURE_FOREIGN (0 otherwise) */
        uint8_t shown;     /* with unseen_seq: the state clients saw before it finished */
        bool unseen_running; /* with unseen_seq: it still holds its group's running slot */
} Future;

/* Future.cluster: the job is not this node's to run (open to any node in the database, or run
 * by another): this node mirrors what the database says of it. */
#define FUTURE_AWAY 1
/* ... its ID is another node's: it lives in the table's hash of foreign IDs (remote.h). */
#define FUTURE_FOREIGN 2
/* ... its claim wrote its start already (the next start is not written). */
#define FUTURE_CLAIMED 4
/* ... a pending mirror (FUTURE_AWAY) whose row another node runs: clients see it running. */
#define FUTURE_STARTED 8

/* A deadly job is not run again after it killed this many workers, whatever its retries say. */
#define FUTURE_MAX_DEATHS 3

/* Allocates a future, in state `unknown` until the executor queues it, that takes ownership of
 * `args` (malloc'ed, `args_len` bytes) on success. Returns 0 or -ENOMEM. */
int future_new(Future **ret, const JobKind *kind, uint8_t *args, uint32_t args_len);

/* Frees the future and what it owns; the group reference and the timeout's timer slot must
 * have been given back and the future must be in no heap and have no waiters. Accepts NULL;
 * returns NULL. */
Future *future_free(Future *f);

/* The state clients see: the future's own, except that a thread job handed to the pool but not
 * yet taken by a thread (prefetch) is still pending, that a finish is seen only once the
 * store has committed it (`unseen_seq`), and that a mirror of a job another node runs is running
 * (FUTURE_STARTED). */
FutureState future_visible_state(const Future *f);
