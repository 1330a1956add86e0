/* timer: a binary min-heap of deadlines on CLOCK_MONOTONIC, in nanoseconds. A Timer is embedded in
 * its owner (a future's run timeout, a deferred reply's timeout, the shutdown grace period); the
 * heap keeps its position so that a timer can be stopped in O(log n) when its owner goes away
 * first. The event loop arms one timerfd for the earliest deadline. Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct Timer {
        uint64_t deadline; /* CLOCK_MONOTONIC ns */
        uint32_t pos;      /* index in the heap + 1; 0 when not armed */
        uint32_t kind;     /* what the owner is, for the loop's dispatch */
} Timer;

typedef struct TimerHeap {
        Timer **items;
        uint32_t n, cap;
} TimerHeap;

/* Current CLOCK_MONOTONIC time in ns. */
uint64_t timer_now(void);

/* Arms (or re-arms) `t` for `deadline`; the heap borrows `t` until it fires or is stopped.
 * Returns 0 or -ENOMEM. */
int timer_start(TimerHeap *h, Timer *t, uint64_t deadline);

/* Disarms `t` if it is armed. */
void timer_stop(TimerHeap *h, Timer *t);

static inline bool timer_armed(const Timer *t) {
        return t->pos != 0;
}

/* Returns the earliest armed timer without removing it, or NULL. */
Timer *timer_peek(const TimerHeap *h);

/* Removes and returns the earliest timer if its deadline is <= now, else NULL. */
Timer *timer_pop_due(TimerHeap *h, uint64_t now);

void timer_heap_deinit(TimerHeap *h);
