/* scheduler: decides which pending future runs next.
 *
 * Each lane (one per pool: thread, process, transfer; and the inline lane of kinds the executor
 * runs on the loop itself) has a ready heap ordered by priority (higher first), then by ID (older
 * first). A job may belong to a Group with a concurrency limit: when the best ready
 * future's group is at its limit, the future is parked in the group's own heap and comes back to
 * the ready heap when one of the group's jobs stops running. Every operation is O(log n). Groups
 * are kept in a tree by name and live while a future refers to them. The scheduler borrows the
 * Futures it holds. Loop thread only. */
#pragma once

#include <stdint.h>

#include "future.h"
#include "heap.h"
#include "kind.h"

/* The ready queues: one per pool, and one for inline kinds (JobKind.inline_run). */
typedef enum SchedLane {
        LANE_THREAD = POOL_THREAD,
        LANE_PROCESS = POOL_PROCESS,
        LANE_TRANSFER = POOL_TRANSFER,
        LANE_INLINE = _POOL_MAX,
        _LANE_MAX,
} SchedLane;

static inline SchedLane scheduler_lane(const JobKind *kind) {
        return kind->inline_run ? LANE_INLINE : (SchedLane) kind->pool;
}

struct Group {
        char *name;
        uint32_t limit;   /* 0: unlimited */
        uint32_t running; /* futures of this group that are running now */
        uint32_t refs;    /* futures that refer to this group */
        Heap parked;
};

typedef struct Scheduler {
        Heap ready[_LANE_MAX]; /* indexed by SchedLane */
        void *groups;        /* tsearch() tree of Group*, by name */
        uint32_t n_groups;
} Scheduler;

void scheduler_init(Scheduler *s);
void scheduler_deinit(Scheduler *s);

/* Returns a counted reference to the group `name`, created (without a limit) if needed. Returns
 * 0 or -ENOMEM. */
int scheduler_group_ref(Scheduler *s, const char *name, Group **ret);

/* Sets the group's concurrency limit (> 0; the latest submit wins); parked jobs that now fit go
 * back to their ready queue. */
void scheduler_group_limit(Scheduler *s, Group *g, uint32_t limit);

/* Drops a reference taken with scheduler_group_ref(); frees the group with the last one. */
void scheduler_group_unref(Scheduler *s, Group *g);

/* Makes room for `n` more futures in `lane`'s ready queue, so that as many scheduler_push() calls
 * cannot fail. Returns 0 or -ENOMEM. */
int scheduler_reserve(Scheduler *s, SchedLane lane, uint32_t n);

/* Queues the pending future `f`. Returns 0 or -ENOMEM (never within a reserve). */
int scheduler_push(Scheduler *s, Future *f);

/* Takes the queued future `f` out (it was cancelled while pending). */
void scheduler_remove(Scheduler *s, Future *f);

/* Returns the next future of `lane` that may start, taken out of the queue and counted as running
 * in its group, or NULL when none may start. */
Future *scheduler_pop(Scheduler *s, SchedLane lane);

/* Futures waiting in `lane`'s ready queue (not those parked behind a group limit). */
static inline uint32_t scheduler_ready(const Scheduler *s, SchedLane lane) {
        return heap_size(&s->ready[lane]);
}

/* `f` stopped running (finished, cancelled, or requeued): frees its group slot. */
void scheduler_stopped(Scheduler *s, Future *f);
