/* waiter: deferred replies. A `wait` or `result` request whose condition does not hold yet
 * becomes a Waiter: it hangs a WaitRef on every unfinished future it waits for, and optionally a
 * timer. When a future finishes, the daemon walks that future's WaitRefs and fires each waiter
 * whose condition now holds; when the timer fires first, the waiter answers with what it has.
 * Either way the waiter sends its one reply and is freed. Each client may have at most
 * PROTO_MAX_DEFERRED waiters; a client that went away simply loses the reply when it comes due.
 * Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon.h"
#include "timer.h"

typedef enum WaitMode {
        WAIT_ALL,
        WAIT_FIRST_COMPLETED,
        WAIT_FIRST_EXCEPTION,
        WAIT_RESULT,  /* the `result` operation: one ID */
        WAIT_RESULTS, /* `results`, and `submit` with reply "results": all, with their outcomes */
} WaitMode;

typedef struct Waiter Waiter;

struct WaitRef {
        Waiter *waiter;
        Future *future;
        WaitRef *prev, *next;
};

/* Answers a wait/result request: now, if its condition holds already or `timeout_ns` is 0, or
 * later. `ids` (borrowed) are unique. `timeout_ns` < 0 means no timeout. Returns 0, or -EBUSY when
 * the client has too many deferred replies (nothing was sent), or -ENOMEM. */
int waiter_start(Daemon *d, const uint8_t *identity, size_t identity_len, bool envelope,
                 uint64_t req_id, WaitMode mode, const uint64_t *ids, uint32_t n,
                 int64_t timeout_ns);

/* True if the client may have one more deferred reply. */
bool waiter_can_defer(Daemon *d, const uint8_t *identity, size_t identity_len);

/* `f` just finished: fires the waiters it satisfies. */
void waiter_future_finished(Daemon *d, Future *f);

/* The waiter's timer (embedded, kind TIMER_WAITER) fired: answers with the state at hand. */
void waiter_timeout(Daemon *d, Timer *t);

/* Frees every waiter without answering (shutdown). */
void waiter_free_all(Daemon *d);

/* True if the wait condition of `mode` holds for these futures (by their current states). */
bool waiter_condition(Daemon *d, WaitMode mode, const uint64_t *ids, uint32_t n);
