/* scheduler: decides which pending future runs next.
 *
 * Each lane (one per pool: thread, process, transfer; and the inline lane of kinds the executor
 * runs on the loop itself) is shared fairly between principals (principal.h). Each principal has
 * a ready heap per lane, ordered by priority (higher first), then by ID (older first); the lane
 * has a heap of the principals with ready futures, ordered by the priority of their best future,
 * then by the turn at which they last had a job started (longest ago first). So within one
 * priority the principals take turns (round-robin), and a principal's million queued jobs delay
 * another's single job by one job per other principal, not by a million; a higher priority
 * still goes first, whoever submitted it. A principal at its running quota (`max_running`)
 * leaves the lane heaps until one of its jobs stops. A job may belong to a Group with a
 * concurrency limit: when the best ready future's group is at its limit, the future is parked in
 * the group's own heap and comes back to the ready heap when one of the group's jobs stops
 * running. Every operation is O(log n). Groups are kept in a tree by name and live while a future
 * refers to them; principals likewise. A future without a principal (unit tests) counts as the
 * scheduler's own `anonymous` one. The scheduler borrows the Futures it holds. Loop thread
 * only. */
#pragma once

#include <stdint.h>

#include "future.h"
#include "heap.h"
#include "kind.h"
#include "principal.h"

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
        Heap lanes[_LANE_MAX]; /* of Principals with ready futures, indexed by SchedLane */
        uint64_t turns[_LANE_MAX]; /* jobs started so far in each lane */
        uint32_t n_ready[_LANE_MAX]; /* futures in the principals' ready heaps */
        void *groups;        /* tsearch() tree of Group*, by name */
        uint32_t n_groups;
        void *principals;    /* tsearch() tree of Principal*, by name */
        uint32_t n_principals;
        uint32_t max_running; /* jobs one principal may have running at once; 0: no limit */
        Principal anonymous; /* for futures without a principal */
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

/* Returns a counted reference to the principal `name`, created if needed. Returns 0 or -ENOMEM. */
int scheduler_principal_ref(Scheduler *s, const char *name, Principal **ret);

/* Drops a reference taken with scheduler_principal_ref(); frees the principal with the last one
 * (it has no ready future then). Accepts NULL. */
void scheduler_principal_unref(Scheduler *s, Principal *p);

/* Sets the running quota of every principal (0: none); blocked principals under it come back. */
void scheduler_set_max_running(Scheduler *s, uint32_t max_running);

/* Makes room for `n` more futures of principal `p` (NULL: anonymous) in `lane`'s ready queue, so
 * that as many scheduler_push() calls cannot fail. Returns 0 or -ENOMEM. */
int scheduler_reserve(Scheduler *s, Principal *p, SchedLane lane, uint32_t n);

/* Queues the pending future `f`. Returns 0 or -ENOMEM (never within a reserve). */
int scheduler_push(Scheduler *s, Future *f);

/* Takes the queued future `f` out (it was cancelled while pending). */
void scheduler_remove(Scheduler *s, Future *f);

/* Returns the next future of `lane` that may start, taken out of the queue and counted as running
 * in its group, or NULL when none may start. */
Future *scheduler_pop(Scheduler *s, SchedLane lane);

/* Non-zero when `lane` has a future that may start now: the number of principals with ready
 * futures there that are not at their running quota. */
static inline uint32_t scheduler_ready(const Scheduler *s, SchedLane lane) {
        return heap_size(&s->lanes[lane]);
}

/* `f` stopped running (finished, cancelled, or requeued): frees its group slot. */
void scheduler_stopped(Scheduler *s, Future *f);
