/* scheduler: see scheduler.h. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "macro.h"
#include "scheduler.h"

static int unpark(Scheduler *s, Group *g);

/* True if `a` should run before `b`. */
static bool before(const void *a, const void *b) {
        const Future *x = a, *y = b;

        if (x->priority != y->priority)
                return x->priority > y->priority;
        return x->id < y->id;
}

static void setpos(void *item, uint32_t pos) {
        ((Future *) item)->heap_pos = pos;
}

void scheduler_init(Scheduler *s) {
        *s = (Scheduler){};
        for (size_t i = 0; i < ELEMENTSOF(s->ready); i++)
                heap_init(&s->ready[i], before, setpos);
}

static int group_cmp(const void *a, const void *b) {
        return strcmp(((const Group *) a)->name, ((const Group *) b)->name);
}

static void group_free(void *p) {
        Group *g = p;

        heap_deinit(&g->parked);
        free(g->name);
        free(g);
}

void scheduler_deinit(Scheduler *s) {
        for (size_t i = 0; i < ELEMENTSOF(s->ready); i++)
                heap_deinit(&s->ready[i]);
        tdestroy(s->groups, group_free);
        *s = (Scheduler){};
}

int scheduler_group_ref(Scheduler *s, const char *name, Group **ret) {
        Group key = { .name = (char *) name };
        Group **found = tfind(&key, &s->groups, group_cmp);
        Group *g;

        if (found)
                g = *found;
        else {
                g = alloc_calloc(1, sizeof(*g));
                if (!g)
                        return -ENOMEM;
                heap_init(&g->parked, before, setpos);
                g->name = alloc_strdup(name);
                if (!g->name || !tsearch(g, &s->groups, group_cmp)) {
                        group_free(g);
                        return -ENOMEM;
                }
                s->n_groups++;
        }
        g->refs++;
        *ret = g;
        return 0;
}

void scheduler_group_limit(Scheduler *s, Group *g, uint32_t limit) {
        if (limit == 0 || limit == g->limit)
                return;
        g->limit = limit;
        /* Give every parked job another chance; scheduler_pop() parks again what still does not
         * fit. */
        while (g->parked.n > 0 && unpark(s, g) >= 0)
                ;
}

void scheduler_group_unref(Scheduler *s, Group *g) {
        if (!g || --g->refs > 0)
                return;
        tdelete(g, &s->groups, group_cmp);
        s->n_groups--;
        group_free(g);
}

int scheduler_reserve(Scheduler *s, SchedLane lane, uint32_t n) {
        Heap *h = &s->ready[lane];

        return n > UINT32_MAX - h->n ? -ENOMEM : heap_reserve(h, h->n + n);
}

int scheduler_push(Scheduler *s, Future *f) {
        assert(f->state == STATE_PENDING && !f->heap_pos);
        return heap_push(&s->ready[scheduler_lane(f->kind)], f);
}

void scheduler_remove(Scheduler *s, Future *f) {
        if (!f->heap_pos)
                return;
        if (f->in_group_heap) {
                heap_remove(&f->group->parked, f->heap_pos);
                f->in_group_heap = 0;
        } else
                heap_remove(&s->ready[scheduler_lane(f->kind)], f->heap_pos);
}

/* Moves the best parked future of `g` back to its ready heap. On -ENOMEM it stays parked (the
 * parked heap had room for it a moment ago, so putting it back cannot fail). */
static int unpark(Scheduler *s, Group *g) {
        Future *f = heap_pop(&g->parked);
        int r;

        f->in_group_heap = 0;
        r = heap_push(&s->ready[scheduler_lane(f->kind)], f);
        if (r < 0) {
                (void) heap_push(&g->parked, f);
                f->in_group_heap = 1;
        }
        return r;
}

Future *scheduler_pop(Scheduler *s, SchedLane lane) {
        Heap *ready = &s->ready[lane];

        for (Future *f; (f = heap_pop(ready));) {
                Group *g = f->group;
                if (g && g->limit && g->running >= g->limit) {
                        if (heap_push(&g->parked, f) < 0) {
                                /* Out of memory: run it rather than lose it. */
                                g->running++;
                                return f;
                        }
                        f->in_group_heap = 1;
                        continue;
                }
                if (g)
                        g->running++;
                return f;
        }
        return NULL;
}

void scheduler_stopped(Scheduler *s, Future *f) {
        Group *g = f->group;
        if (!g)
                return;
        assert(g->running > 0);
        g->running--;
        if (g->parked.n > 0)
                (void) unpark(s, g); /* on -ENOMEM it stays parked until the next slot frees */
}
