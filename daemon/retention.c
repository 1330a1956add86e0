/* retention: see retention.h. */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "macro.h"
#include "retention.h"

static void on_timer(Timer *t, uint64_t now) {
        retention_expire_due(container_of(t, Retention, timer), now);
}

int retention_init(Retention *r, TimerHeap *timers, uint64_t retain_ns, RetentionExpireFn expire,
                   void *userdata) {
        *r = (Retention){
                .timers = timers,
                .retain_ns = retain_ns,
                .expire = expire,
                .userdata = userdata,
        };
        return timer_init(timers, &r->timer, on_timer);
}

void retention_deinit(Retention *r) {
        timer_deinit(r->timers, &r->timer);
        free(r->ring);
        r->ring = NULL;
        r->head = r->len = r->cap = 0;
}

static int grow(Retention *r) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        Retained *ring = alloc_malloc(cap * sizeof(*ring));

        if (!ring)
                return -ENOMEM;
        for (size_t i = 0; i < r->len; i++)
                ring[i] = r->ring[(r->head + i) % r->cap];
        free(r->ring);
        r->ring = ring;
        r->cap = cap;
        r->head = 0;
        return 0;
}

int retention_add(Retention *r, uint64_t id, uint64_t now) {
        return retention_add_at(r, id, now + r->retain_ns);
}

int retention_add_at(Retention *r, uint64_t id, uint64_t deadline) {
        Retained *e;

        if (r->len == r->cap) {
                int ret = grow(r);
                if (ret < 0)
                        return ret;
        }
        e = &r->ring[(r->head + r->len++) % r->cap];
        *e = (Retained){ .id = id, .deadline = deadline };
        if (r->len == 1)
                timer_start(r->timers, &r->timer, e->deadline);
        return 0;
}

void retention_expire_due(Retention *r, uint64_t now) {
        while (r->len > 0 && r->ring[r->head].deadline <= now) {
                uint64_t id = r->ring[r->head].id;
                r->head = (r->head + 1) % r->cap;
                r->len--;
                /* Out of the ring first: expire() may add to it. */
                r->expire(r->userdata, id);
        }
        if (r->len > 0)
                timer_start(r->timers, &r->timer, r->ring[r->head].deadline);
        else
                timer_stop(r->timers, &r->timer);
}

void retention_set_retain(Retention *r, uint64_t retain_ns) {
        /* Every entry moves by the same amount, so the ring stays in deadline order. */
        for (size_t i = 0; i < r->len; i++) {
                Retained *e = &r->ring[(r->head + i) % r->cap];
                uint64_t finished = e->deadline - r->retain_ns;
                e->deadline = finished + retain_ns;
        }
        r->retain_ns = retain_ns;
        if (r->len > 0)
                timer_start(r->timers, &r->timer, r->ring[r->head].deadline);
}
