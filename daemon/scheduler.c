/* scheduler: see scheduler.h. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "scheduler.h"

static int unpark(Scheduler *s, Group *g);

/* True if `a` should run before `b`. */
static int before(const Future *a, const Future *b) {
        if (a->priority != b->priority)
                return a->priority > b->priority;
        return a->id < b->id;
}

static void heap_place(FutureHeap *h, uint32_t i, Future *f) {
        h->items[i] = f;
        f->heap_pos = i + 1;
}

static void heap_up(FutureHeap *h, uint32_t i) {
        Future *f = h->items[i];

        while (i > 0) {
                uint32_t parent = (i - 1) / 2;
                if (!before(f, h->items[parent]))
                        break;
                heap_place(h, i, h->items[parent]);
                i = parent;
        }
        heap_place(h, i, f);
}

static void heap_down(FutureHeap *h, uint32_t i) {
        Future *f = h->items[i];

        for (;;) {
                uint32_t child = 2 * i + 1;
                if (child >= h->n)
                        break;
                if (child + 1 < h->n && before(h->items[child + 1], h->items[child]))
                        child++;
                if (!before(h->items[child], f))
                        break;
                heap_place(h, i, h->items[child]);
                i = child;
        }
        heap_place(h, i, f);
}

static int heap_push(FutureHeap *h, Future *f) {
        if (h->n == h->cap) {
                uint32_t cap = h->cap ? h->cap * 2 : 256;
                Future **items = realloc(h->items, cap * sizeof(*items));
                if (!items)
                        return -ENOMEM;
                h->items = items;
                h->cap = cap;
        }
        heap_place(h, h->n++, f);
        heap_up(h, h->n - 1);
        return 0;
}

static void heap_remove(FutureHeap *h, Future *f) {
        uint32_t i = f->heap_pos - 1;
        Future *moved;

        assert(f->heap_pos && h->items[i] == f);
        f->heap_pos = 0;
        if (i == --h->n)
                return;
        moved = h->items[h->n];
        heap_place(h, i, moved);
        heap_up(h, i);
        heap_down(h, moved->heap_pos - 1);
}

static Future *heap_pop(FutureHeap *h) {
        Future *f = h->n ? h->items[0] : NULL;

        if (f)
                heap_remove(h, f);
        return f;
}

void scheduler_init(Scheduler *s) {
        *s = (Scheduler){};
}

static int group_cmp(const void *a, const void *b) {
        return strcmp(((const Group *) a)->name, ((const Group *) b)->name);
}

static void group_free(void *p) {
        Group *g = p;

        free(g->parked.items);
        free(g->name);
        free(g);
}

void scheduler_deinit(Scheduler *s) {
        for (size_t i = 0; i < ELEMENTSOF(s->ready); i++)
                free(s->ready[i].items);
        tdestroy(s->groups, group_free);
        *s = (Scheduler){};
}

int scheduler_group_ref(Scheduler *s, const char *name, uint32_t limit, Group **ret) {
        Group key = { .name = (char *) name };
        Group **found = tfind(&key, &s->groups, group_cmp);
        Group *g;

        if (found)
                g = *found;
        else {
                g = calloc(1, sizeof(*g));
                if (!g)
                        return -ENOMEM;
                g->name = strdup(name);
                if (!g->name || !tsearch(g, &s->groups, group_cmp)) {
                        group_free(g);
                        return -ENOMEM;
                }
                s->n_groups++;
        }
        if (limit > 0 && limit != g->limit) {
                g->limit = limit;
                /* Give every parked job another chance; scheduler_pop() parks again what still
                 * does not fit. */
                while (g->parked.n > 0 && unpark(s, g) >= 0)
                        ;
        }
        g->refs++;
        *ret = g;
        return 0;
}

void scheduler_group_unref(Scheduler *s, Group *g) {
        if (!g || --g->refs > 0)
                return;
        tdelete(g, &s->groups, group_cmp);
        s->n_groups--;
        group_free(g);
}

int scheduler_push(Scheduler *s, Future *f) {
        assert(f->state == STATE_PENDING && !f->heap_pos);
        return heap_push(&s->ready[f->kind->pool], f);
}

void scheduler_remove(Scheduler *s, Future *f) {
        if (!f->heap_pos)
                return;
        if (f->in_group_heap) {
                heap_remove(&f->group->parked, f);
                f->in_group_heap = 0;
        } else
                heap_remove(&s->ready[f->kind->pool], f);
}

/* Moves the best parked future of `g` back to its ready heap. On -ENOMEM it stays parked (the
 * parked heap had room for it a moment ago, so putting it back cannot fail). */
static int unpark(Scheduler *s, Group *g) {
        Future *f = heap_pop(&g->parked);
        int r;

        f->in_group_heap = 0;
        r = heap_push(&s->ready[f->kind->pool], f);
        if (r < 0) {
                (void) heap_push(&g->parked, f);
                f->in_group_heap = 1;
        }
        return r;
}

Future *scheduler_pop(Scheduler *s, PoolType pool) {
        FutureHeap *ready = &s->ready[pool];

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
