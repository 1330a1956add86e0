/* scheduler: decides which pending future runs next.
 *
 * Each pool (thread, process, transfer) has a ready heap ordered by priority (higher first), then
 * by ID (older first). A job may belong to a Group with a concurrency limit: when the best ready
 * future's group is at its limit, the future is parked in the group's own heap and comes back to
 * the ready heap when one of the group's jobs stops running. Every operation is O(log n). Groups
 * are kept in a tree by name and live while a future refers to them. The scheduler borrows the
 * Futures it holds. Loop thread only. */
#pragma once

#include <stdint.h>

#include "future.h"
#include "kind.h"

typedef struct FutureHeap {
        Future **items;
        uint32_t n, cap;
} FutureHeap;

struct Group {
        char *name;
        uint32_t limit;   /* 0: unlimited */
        uint32_t running; /* futures of this group that are running now */
        uint32_t refs;    /* futures that refer to this group */
        FutureHeap parked;
};

typedef struct Scheduler {
        FutureHeap ready[_POOL_MAX]; /* indexed by PoolType */
        void *groups;        /* tsearch() tree of Group*, by name */
        uint32_t n_groups;
} Scheduler;

void scheduler_init(Scheduler *s);
void scheduler_deinit(Scheduler *s);

/* Returns a counted reference to the group `name`, created if needed. A `limit` > 0 replaces
 * the group's limit (the latest submit wins). Returns 0 or -ENOMEM. */
int scheduler_group_ref(Scheduler *s, const char *name, uint32_t limit, Group **ret);

/* Drops a reference taken with scheduler_group_ref(); frees the group with the last one. */
void scheduler_group_unref(Scheduler *s, Group *g);

/* Queues the pending future `f`. Returns 0 or -ENOMEM. */
int scheduler_push(Scheduler *s, Future *f);

/* Takes the queued future `f` out (it was cancelled while pending). */
void scheduler_remove(Scheduler *s, Future *f);

/* Returns the next future the pool may start, taken out of the queue and counted as running in
 * its group, or NULL when none may start. */
Future *scheduler_pop(Scheduler *s, PoolType pool);

/* `f` stopped running (finished, cancelled, or requeued): frees its group slot. */
void scheduler_stopped(Scheduler *s, Future *f);
