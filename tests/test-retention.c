/* Unit test of the retention queue: futures expire in the order they finished, each after the
 * retention time, through the loop's timer; nothing expires early; the ring grows past its first
 * size without losing order; an entry expired by its owner's release simply comes by later as
 * an ID the owner no longer knows. */
#include "retention.h"
#include "test.h"

static uint64_t expired[5000];
static int n_expired;

static void on_expire(void *userdata, uint64_t id) {
        CHECK(userdata == &n_expired);
        expired[n_expired++] = id;
}

int main(void) {
        TimerHeap timers;
        Retention r;
        Timer *t;

        timer_heap_init(&timers);
        REQUIRE(retention_init(&r, &timers, 1000, on_expire, &n_expired) == 0);
        CHECK(timer_peek(&timers) == NULL); /* nothing queued: not armed */

        /* 3000 futures finishing at 1, 2, 3, ... ns: more than the ring's first size. */
        for (uint64_t i = 1; i <= 3000; i++)
                REQUIRE(retention_add(&r, 100 + i, i) == 0);
        CHECK(retention_size(&r) == 3000);
        REQUIRE((t = timer_peek(&timers)) == &r.timer);
        CHECK(t->deadline == 1001);

        /* Not yet due: the timer does not come out, nothing expires. */
        CHECK(timer_pop_due(&timers, 1000) == NULL);
        CHECK(n_expired == 0);

        /* The loop pops the timer and calls it: the first 500 are due at 1500. */
        REQUIRE((t = timer_pop_due(&timers, 1500)) == &r.timer);
        t->fn(t, 1500);
        CHECK(n_expired == 500);
        for (int i = 0; i < n_expired; i++)
                CHECK(expired[i] == 101 + (uint64_t) i);
        CHECK(timer_peek(&timers) == &r.timer && r.timer.deadline == 1501);

        /* More finish while older ones wait; order holds. */
        for (uint64_t i = 3001; i <= 3100; i++)
                REQUIRE(retention_add(&r, 100 + i, i) == 0);
        retention_expire_due(&r, 1u << 30);
        CHECK(n_expired == 3100);
        for (int i = 1; i < n_expired; i++)
                CHECK(expired[i] == expired[i - 1] + 1);
        CHECK(retention_size(&r) == 0);
        CHECK(timer_peek(&timers) == NULL); /* empty: disarmed */

        retention_deinit(&r);
        CHECK(timers.n_reserved == 0);
        timer_heap_deinit(&timers);
        return test_end();
}
