/* retention: see retention.h. */
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
        ring_deinit(&r->ring);
}

int retention_add(Retention *r, uint64_t id, uint64_t now) {
        return retention_add_at(r, id, now + r->retain_ns);
}

int retention_add_at(Retention *r, uint64_t id, uint64_t deadline) {
        int ret = ring_reserve(&r->ring, 1);

        if (ret < 0)
                return ret;
        ring_push(&r->ring, id, deadline);
        if (r->ring.len == 1)
                timer_start(r->timers, &r->timer, deadline);
        return 0;
}

void retention_expire_due(Retention *r, uint64_t now) {
        RingItem *e;

        while ((e = ring_peek(&r->ring)) && e->key <= now) {
                uint64_t id = e->id;
                /* Out of the ring first: expire() may add to it. */
                ring_pop(&r->ring);
                r->expire(r->userdata, id);
        }
        if ((e = ring_peek(&r->ring)))
                timer_start(r->timers, &r->timer, e->key);
        else
                timer_stop(r->timers, &r->timer);
}

void retention_set_retain(Retention *r, uint64_t retain_ns) {
        /* Every entry moves by the same amount, so the ring stays in deadline order. */
        for (size_t i = 0; i < r->ring.len; i++) {
                RingItem *e = ring_at(&r->ring, i);
                uint64_t finished = e->key - r->retain_ns;
                e->key = finished + retain_ns;
        }
        r->retain_ns = retain_ns;
        if (r->ring.len > 0)
                timer_start(r->timers, &r->timer, ring_peek(&r->ring)->key);
}
