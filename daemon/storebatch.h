/* storebatch: what the loop hands the store thread: one turn's changes as compact records (no
 * pointer into a Future), and the shape of a job as the store keeps it. Header-only types,
 * shared by store.c (which fills batches on the loop thread) and the backends (which commit
 * them on the store thread). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "idlist.h"

/* One job as the store keeps it, for store_add() and recovery. Pointers are borrowed. */
typedef struct StoreJob {
        uint64_t id;
        const char *kind;
        const uint8_t *args;
        uint32_t args_len;
        const char *group;      /* NULL: none */
        uint32_t group_limit;
        int16_t priority;
        uint32_t timeout_ms;
        uint8_t retries;        /* the retry budget */
        uint8_t attempt;        /* runs started so far */
        uint8_t state;          /* FutureState */
        const uint8_t *outcome; /* NULL: none */
        uint32_t outcome_len;
        int64_t finished_at_ms; /* wall clock (CLOCK_REALTIME) when it finished, for retention */
        const char *key;        /* the idempotency key, or NULL */
        const char *principal;  /* who submitted it (principal.h), or NULL (schema 1) */
        uint8_t open;           /* cluster mode: pending for any node (no owner), rather than
                                 * reserved by the node that adds it */
        const char *owner;      /* lookups (cluster.c): the row's owner, or NULL */
} StoreJob;

/* Puts "HOST:PID" into `buf`, or "HOST:PID:BOOT" with `boot` (a start-up nonce, so that a
 * restarted node whose PID was reused is another owner): the owner a backend writes on the jobs
 * it starts (a shared store fences on it). */
static inline void store_owner_format(char *buf, size_t size, const char *boot) {
        char host[256] = "localhost";

        (void) gethostname(host, sizeof(host) - 1);
        snprintf(buf, size, "%s:%d%s%s", host, (int) getpid(), boot ? ":" : "", boot ? boot : "");
}

/* Recovery calls this for every job kept, in ID order; `job` is borrowed for the call. Returns
 * 0, or a negative value that stops the recovery. */
typedef int (*StoreRecoverFn)(void *userdata, const StoreJob *job);

typedef enum StoreOpType {
        STORE_OP_ADD,
        STORE_OP_START,
        STORE_OP_FINISH,
        STORE_OP_REQUEUE,
        STORE_OP_REMOVE,
} StoreOpType;

#define STORE_NONE UINT32_MAX /* an absent offset */

/* One change. Strings and blobs live in the batch's `bytes`, at the offsets given (names
 * NUL-terminated). */
typedef struct StoreOp {
        uint64_t id;
        int64_t finished_at_ms;   /* FINISH */
        uint32_t kind_off;        /* ADD */
        uint32_t args_off, args_len; /* ADD */
        uint32_t group_off;       /* ADD, STORE_NONE: no group */
        uint32_t key_off;         /* ADD, STORE_NONE: no idempotency key */
        uint32_t principal_off;   /* ADD, STORE_NONE: none */
        uint32_t group_limit;     /* ADD */
        uint32_t timeout_ms;      /* ADD */
        uint32_t outcome_off, outcome_len; /* FINISH */
        int16_t priority;         /* ADD */
        uint8_t type;             /* StoreOpType */
        uint8_t state;            /* ADD, FINISH */
        uint8_t retries;          /* ADD */
        uint8_t attempt;          /* ADD, START, REQUEUE, FINISH */
        uint8_t open;             /* ADD: StoreJob's */
        uint8_t has_outcome;      /* FINISH */
} StoreOp;

typedef struct StoreBatch {
        uint64_t seq;             /* batches are committed in this order */
        StoreOp *ops;
        size_t n_ops, cap_ops;
        uint8_t *bytes;
        size_t n_bytes, cap_bytes;
        uint64_t next_id;         /* one past the highest ID issued when it was handed over */
        int error;                /* the commit's: 0 or -errno */
        IdList fenced;            /* cluster: the jobs whose start or finish the database
                                   * refused (no longer this node's) */
        IdList twins;             /* postgresql: pairs of a new job's ID and the ID of the row
                                   * that has its idempotency key already (not inserted) */
        uint64_t commit_us;
        bool durable;             /* the commit must be on disk before it is reported: it
                                   * holds a finish, a requeue, a removal or a change that a
                                   * reply acknowledges (store_want_durable) */
} StoreBatch;
