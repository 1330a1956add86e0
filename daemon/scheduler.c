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
/* twalk() takes no user data: the scheduler being walked (loop thread only). */
static Scheduler *requota_scheduler;

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

/* The order of a lane's principals: the best ready future's priority, then whose turn came
 * longest ago, then the older best future. One comparison and one setpos per lane, since a
 * principal sits in every lane's heap at its own slot. */
static bool principal_before(const Principal *a, const Principal *b, SchedLane lane) {
        const Future *x = heap_peek(&a->ready[lane]), *y = heap_peek(&b->ready[lane]);

        if (x->priority != y->priority)
                return x->priority > y->priority;
        if (a->turn[lane] != b->turn[lane])
                return a->turn[lane] < b->turn[lane];
        return x->id < y->id;
}

#define LANE_FUNCTIONS(lane)                                                                       \
        static bool principal_before_##lane(const void *a, const void *b) {                        \
                return principal_before(a, b, lane);                                               \
        }                                                                                          \
        static void principal_setpos_##lane(void *item, uint32_t pos) {                            \
                ((Principal *) item)->lane_pos[lane] = pos;                                        \
        }
LANE_FUNCTIONS(LANE_THREAD)
LANE_FUNCTIONS(LANE_PROCESS)
LANE_FUNCTIONS(LANE_TRANSFER)
LANE_FUNCTIONS(LANE_INLINE)

static const struct {
        HeapLess less;
        HeapSetPos setpos;
} lane_order[_LANE_MAX] = {
        [LANE_THREAD] = { principal_before_LANE_THREAD, principal_setpos_LANE_THREAD },
        [LANE_PROCESS] = { principal_before_LANE_PROCESS, principal_setpos_LANE_PROCESS },
        [LANE_TRANSFER] = { principal_before_LANE_TRANSFER, principal_setpos_LANE_TRANSFER },
        [LANE_INLINE] = { principal_before_LANE_INLINE, principal_setpos_LANE_INLINE },
};

static void principal_init(Principal *p) {
        for (size_t i = 0; i < ELEMENTSOF(p->ready); i++)
                heap_init(&p->ready[i], before, setpos);
}

static void principal_free(void *item) {
        Principal *p = item;

        for (size_t i = 0; i < ELEMENTSOF(p->ready); i++)
                heap_deinit(&p->ready[i]);
        free(p->name);
        free(p);
}

static Principal *principal_of(Scheduler *s, const Future *f) {
        return f->principal ? f->principal : &s->anonymous;
}

/* Puts `p` where it belongs in `lane`'s heap after its ready futures there changed: out, and
 * back in if it has any and is not blocked. Returns 0, or -ENOMEM when it could not go back in
 * (only possible without a reserve: it then waits for its next push). */
static int lane_fix(Scheduler *s, Principal *p, SchedLane lane) {
        Heap *h = &s->lanes[lane];

        if (p->lane_pos[lane])
                heap_remove(h, p->lane_pos[lane]);
        if (p->blocked || heap_size(&p->ready[lane]) == 0)
                return 0;
        return heap_push(h, p);
}

static bool at_quota(const Scheduler *s, const Principal *p) {
        return s->max_running && p->running >= s->max_running;
}

void scheduler_init(Scheduler *s) {
        *s = (Scheduler){};
        for (size_t i = 0; i < ELEMENTSOF(s->lanes); i++)
                heap_init(&s->lanes[i], lane_order[i].less, lane_order[i].setpos);
        principal_init(&s->anonymous);
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

static int principal_cmp(const void *a, const void *b) {
        return strcmp(((const Principal *) a)->name, ((const Principal *) b)->name);
}

void scheduler_deinit(Scheduler *s) {
        for (size_t i = 0; i < ELEMENTSOF(s->lanes); i++)
                heap_deinit(&s->lanes[i]);
        tdestroy(s->groups, group_free);
        tdestroy(s->principals, principal_free);
        for (size_t i = 0; i < ELEMENTSOF(s->anonymous.ready); i++)
                heap_deinit(&s->anonymous.ready[i]);
        *s = (Scheduler){};
}

int scheduler_principal_ref(Scheduler *s, const char *name, Principal **ret) {
        Principal key = { .name = (char *) name };
        Principal **found = tfind(&key, &s->principals, principal_cmp);
        Principal *p;

        if (found)
                p = *found;
        else {
                p = alloc_calloc(1, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                principal_init(p);
                p->name = alloc_strdup(name);
                if (!p->name || !tsearch(p, &s->principals, principal_cmp)) {
                        principal_free(p);
                        return -ENOMEM;
                }
                s->n_principals++;
        }
        p->refs++;
        *ret = p;
        return 0;
}

void scheduler_principal_unref(Scheduler *s, Principal *p) {
        if (!p || --p->refs > 0)
                return;
        for (unsigned lane = 0; lane < _LANE_MAX; lane++) {
                assert(heap_size(&p->ready[lane]) == 0);
                if (p->lane_pos[lane])
                        heap_remove(&s->lanes[lane], p->lane_pos[lane]);
        }
        tdelete(p, &s->principals, principal_cmp);
        s->n_principals--;
        principal_free(p);
}

/* Blocks `p` (out of every lane) at its quota, or lets it back in under it. */
static void check_quota(Scheduler *s, Principal *p) {
        bool block = at_quota(s, p);

        if (block == p->blocked)
                return;
        p->blocked = block;
        for (unsigned lane = 0; lane < _LANE_MAX; lane++)
                (void) lane_fix(s, p, lane); /* -ENOMEM: back with its next push */
}

static void requota(const void *node, VISIT which, int depth) {
        (void) depth;
        if (which == postorder || which == leaf)
                check_quota(requota_scheduler, *(Principal *const *) node);
}

void scheduler_set_max_running(Scheduler *s, uint32_t max_running) {
        s->max_running = max_running;
        requota_scheduler = s;
        twalk(s->principals, requota);
        requota_scheduler = NULL;
        check_quota(s, &s->anonymous);
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

int scheduler_reserve(Scheduler *s, Principal *p, SchedLane lane, uint32_t n) {
        Heap *h = &(p ? p : &s->anonymous)->ready[lane], *l = &s->lanes[lane];

        if (n > UINT32_MAX - h->n || l->n == UINT32_MAX)
                return -ENOMEM;
        return heap_reserve(h, h->n + n) < 0 || heap_reserve(l, l->n + 1) < 0 ? -ENOMEM : 0;
}

/* Puts the pending `f` in its principal's ready heap of its lane. */
static int ready_push(Scheduler *s, Future *f) {
        Principal *p = principal_of(s, f);
        SchedLane lane = scheduler_lane(f->kind);
        int r = heap_push(&p->ready[lane], f);

        if (r < 0)
                return r;
        s->n_ready[lane]++;
        r = lane_fix(s, p, lane);
        if (r < 0) {
                heap_remove(&p->ready[lane], f->heap_pos);
                s->n_ready[lane]--;
                (void) lane_fix(s, p, lane);
        }
        return r;
}

int scheduler_push(Scheduler *s, Future *f) {
        assert(f->state == STATE_PENDING && !f->heap_pos);
        return ready_push(s, f);
}

void scheduler_remove(Scheduler *s, Future *f) {
        if (!f->heap_pos)
                return;
        if (f->in_group_heap) {
                heap_remove(&f->group->parked, f->heap_pos);
                f->in_group_heap = 0;
        } else {
                Principal *p = principal_of(s, f);
                SchedLane lane = scheduler_lane(f->kind);
                heap_remove(&p->ready[lane], f->heap_pos);
                s->n_ready[lane]--;
                (void) lane_fix(s, p, lane); /* it leaves, or moves up: never grows the heap */
        }
}

/* Moves the best parked future of `g` back to its ready heap. On -ENOMEM it stays parked (the
 * parked heap had room for it a moment ago, so putting it back cannot fail). */
static int unpark(Scheduler *s, Group *g) {
        Future *f = heap_pop(&g->parked);
        int r;

        f->in_group_heap = 0;
        r = ready_push(s, f);
        if (r < 0) {
                (void) heap_push(&g->parked, f);
                f->in_group_heap = 1;
        }
        return r;
}

/* Takes the best ready future of the lane's first principal, whose turn it then was. */
static Future *take(Scheduler *s, SchedLane lane) {
        Principal *p = heap_peek(&s->lanes[lane]);
        Future *f;

        if (!p)
                return NULL;
        f = heap_pop(&p->ready[lane]);
        s->n_ready[lane]--;
        p->turn[lane] = ++s->turns[lane];
        (void) lane_fix(s, p, lane); /* it was in the heap: its slot is still there */
        return f;
}

/* `f` starts: counted in its group and its principal. */
static Future *started(Scheduler *s, Future *f) {
        Principal *p = principal_of(s, f);

        if (f->group)
                f->group->running++;
        p->running++;
        check_quota(s, p);
        return f;
}

Future *scheduler_pop(Scheduler *s, SchedLane lane) {
        for (Future *f; (f = take(s, lane));) {
                Group *g = f->group;
                if (g && g->limit && g->running >= g->limit) {
                        if (heap_push(&g->parked, f) < 0)
                                return started(s, f); /* out of memory: run it, not lose it */
                        f->in_group_heap = 1;
                        continue;
                }
                return started(s, f);
        }
        return NULL;
}

void scheduler_stopped(Scheduler *s, Future *f) {
        Principal *p = principal_of(s, f);
        Group *g = f->group;

        assert(p->running > 0);
        p->running--;
        check_quota(s, p);
        if (!g)
                return;
        assert(g->running > 0);
        g->running--;
        if (g->parked.n > 0)
                (void) unpark(s, g); /* on -ENOMEM it stays parked until the next slot frees */
}
