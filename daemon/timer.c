/* timer: see timer.h. The heap stores pointers; each Timer knows its slot, so sift operations
 * update `pos` as they move entries. */
#include <errno.h>
#include <stdlib.h>

#include "now.h"
#include "timer.h"

uint64_t timer_now(void) {
        return now_ns();
}

static void place(TimerHeap *h, uint32_t i, Timer *t) {
        h->items[i] = t;
        t->pos = i + 1;
}

static void sift_up(TimerHeap *h, uint32_t i) {
        Timer *t = h->items[i];

        while (i > 0) {
                uint32_t parent = (i - 1) / 2;
                if (h->items[parent]->deadline <= t->deadline)
                        break;
                place(h, i, h->items[parent]);
                i = parent;
        }
        place(h, i, t);
}

static void sift_down(TimerHeap *h, uint32_t i) {
        Timer *t = h->items[i];

        for (;;) {
                uint32_t child = 2 * i + 1;
                if (child >= h->n)
                        break;
                if (child + 1 < h->n && h->items[child + 1]->deadline < h->items[child]->deadline)
                        child++;
                if (t->deadline <= h->items[child]->deadline)
                        break;
                place(h, i, h->items[child]);
                i = child;
        }
        place(h, i, t);
}

int timer_start(TimerHeap *h, Timer *t, uint64_t deadline) {
        timer_stop(h, t);
        if (h->n == h->cap) {
                uint32_t cap = h->cap ? h->cap * 2 : 64;
                Timer **items = realloc(h->items, cap * sizeof(*items));
                if (!items)
                        return -ENOMEM;
                h->items = items;
                h->cap = cap;
        }
        t->deadline = deadline;
        place(h, h->n++, t);
        sift_up(h, h->n - 1);
        return 0;
}

void timer_stop(TimerHeap *h, Timer *t) {
        uint32_t i;

        if (!t->pos)
                return;
        i = t->pos - 1;
        t->pos = 0;
        h->n--;
        if (i == h->n)
                return;
        Timer *moved = h->items[h->n];
        place(h, i, moved);
        sift_up(h, i);
        sift_down(h, moved->pos - 1);
}

Timer *timer_peek(const TimerHeap *h) {
        return h->n ? h->items[0] : NULL;
}

Timer *timer_pop_due(TimerHeap *h, uint64_t now) {
        Timer *t = timer_peek(h);

        if (!t || t->deadline > now)
                return NULL;
        timer_stop(h, t);
        return t;
}

void timer_heap_deinit(TimerHeap *h) {
        for (uint32_t i = 0; i < h->n; i++)
                h->items[i]->pos = 0;
        free(h->items);
        *h = (TimerHeap){};
}
