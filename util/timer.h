/* timer: deadlines on CLOCK_MONOTONIC, in nanoseconds, kept in one heap per loop. A Timer is
 * embedded in its owner (a deferred reply, the retention queue, the shutdown grace period, ...)
 * and names the function to call when it fires.
 *
 * Arming a timer never fails: timer_init() reserves the timer's slot in the heap when its owner
 * is made (the one step that may fail, with -ENOMEM, where the owner can still refuse the work),
 * and timer_deinit() gives the slot back. So a job's timeout can never be silently dropped.
 * Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "heap.h"

typedef struct Timer Timer;

/* Called by the loop when `t` fires, `now` being the time the loop looked at the heap. `t` is
 * disarmed by then and may be re-armed or deinitialised. */
typedef void (*TimerFn)(Timer *t, uint64_t now);

struct Timer {
        uint64_t deadline; /* CLOCK_MONOTONIC ns */
        uint32_t pos;      /* slot in the heap + 1; 0 when not armed */
        bool reserved;     /* timer_init() reserved its slot */
        TimerFn fn;
};

typedef struct TimerHeap {
        Heap heap;
        uint32_t n_reserved; /* initialised timers: the heap has room for all of them */
} TimerHeap;

/* Current CLOCK_MONOTONIC time in ns. */
uint64_t timer_now(void);

void timer_heap_init(TimerHeap *h);
/* Frees the heap; the timers left are disarmed (pos 0), not freed. */
void timer_heap_deinit(TimerHeap *h);

/* Makes `t` a timer of `h` that calls `fn`, reserving its slot. Returns 0 or -ENOMEM. */
int timer_init(TimerHeap *h, Timer *t, TimerFn fn);

/* Disarms `t` and gives its slot back. Accepts a timer that was never initialised (all zero). */
void timer_deinit(TimerHeap *h, Timer *t);

/* Arms (or re-arms) the initialised timer `t` for `deadline`. */
void timer_start(TimerHeap *h, Timer *t, uint64_t deadline);

/* Disarms `t` if it is armed. */
void timer_stop(TimerHeap *h, Timer *t);

static inline bool timer_armed(const Timer *t) {
        return t->pos != 0;
}

/* The earliest armed timer, without removing it, or NULL. */
static inline Timer *timer_peek(const TimerHeap *h) {
        return heap_peek(&h->heap);
}

/* Removes and returns the earliest timer if its deadline is <= now, else NULL. */
Timer *timer_pop_due(TimerHeap *h, uint64_t now);
