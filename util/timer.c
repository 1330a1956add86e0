/* timer: see timer.h. The heap orders timers by deadline; every initialised timer has a slot
 * reserved, so heap_push() on arming cannot fail. */
#include <assert.h>
#include <errno.h>

#include "now.h"
#include "timer.h"

uint64_t timer_now(void) {
        return now_ns();
}

static bool timer_less(const void *a, const void *b) {
        return ((const Timer *) a)->deadline < ((const Timer *) b)->deadline;
}

static void timer_setpos(void *item, uint32_t pos) {
        ((Timer *) item)->pos = pos;
}

void timer_heap_init(TimerHeap *h) {
        *h = (TimerHeap){};
        heap_init(&h->heap, timer_less, timer_setpos);
}

void timer_heap_deinit(TimerHeap *h) {
        heap_deinit(&h->heap);
        h->n_reserved = 0;
}

int timer_init(TimerHeap *h, Timer *t, TimerFn fn) {
        int r = heap_reserve(&h->heap, h->n_reserved + 1);

        if (r < 0)
                return r;
        *t = (Timer){ .fn = fn, .reserved = true };
        h->n_reserved++;
        return 0;
}

void timer_deinit(TimerHeap *h, Timer *t) {
        if (!t->reserved)
                return;
        timer_stop(h, t);
        t->reserved = false;
        h->n_reserved--;
}

void timer_start(TimerHeap *h, Timer *t, uint64_t deadline) {
        int r;

        assert(t->reserved);
        timer_stop(h, t);
        t->deadline = deadline;
        r = heap_push(&h->heap, t);
        assert(r == 0); /* its slot was reserved by timer_init() */
        (void) r;
}

void timer_stop(TimerHeap *h, Timer *t) {
        if (t->pos)
                heap_remove(&h->heap, t->pos);
}

Timer *timer_pop_due(TimerHeap *h, uint64_t now) {
        Timer *t = timer_peek(h);

        if (!t || t->deadline > now)
                return NULL;
        return heap_remove(&h->heap, t->pos);
}
