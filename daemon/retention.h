/* retention: the expiry queue of finished futures. Futures finish in time order and all keep
 * their results for the same time, so the queue is a FIFO ring of (id, deadline) and one loop
 * Timer armed for its head. When a deadline passes, the queue calls `expire(userdata, id)`; the
 * owner decides whether that future still exists (a released one is simply gone). Loop thread
 * only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ring.h"
#include "timer.h"

typedef void (*RetentionExpireFn)(void *userdata, uint64_t id);

typedef struct Retained {
        uint64_t id;
        uint64_t deadline;
} Retained;

typedef struct Retention {
        Timer timer;       /* armed for the head's deadline while the ring is not empty */
        TimerHeap *timers; /* borrowed */
        uint64_t retain_ns;
        RetentionExpireFn expire;
        void *userdata;
        Ring ring;         /* (id, deadline) */
} Retention;

/* Keeps each future `retain_ns` after it finished. `timers`, `expire` and `userdata` are
 * borrowed for the life of `r`. Returns 0 or -ENOMEM. */
int retention_init(Retention *r, TimerHeap *timers, uint64_t retain_ns, RetentionExpireFn expire,
                   void *userdata);
void retention_deinit(Retention *r);

/* Queues `id`, finished now. Returns 0 or -ENOMEM (the future is then kept until released). */
int retention_add(Retention *r, uint64_t id, uint64_t now);

/* Queues `id` with its own `deadline` (recovery: futures that finished before a restart keep what
 * is left of their time). Deadlines must come in non-decreasing order. Returns 0 or -ENOMEM. */
int retention_add_at(Retention *r, uint64_t id, uint64_t deadline);

/* Keeps every future `retain_ns` after it finished from now on, also those already queued
 * (reload): their deadlines move by the difference, due ones expire at the next timer. */
void retention_set_retain(Retention *r, uint64_t retain_ns);

/* Calls expire() for every entry due at `now`, in order (the timer does this by itself). */
void retention_expire_due(Retention *r, uint64_t now);

/* The deadline of the entry that expires next, or 0 when none is queued. */
static inline uint64_t retention_next_deadline(const Retention *r) {
        return r->ring.len ? ring_peek(&r->ring)->key : 0;
}

static inline size_t retention_size(const Retention *r) {
        return r->ring.len;
}
