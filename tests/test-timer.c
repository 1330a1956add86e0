/* Unit test of the timer heap: timers come out in deadline order, stopped ones never do, and
 * every initialised timer has its slot reserved, so arming never allocates. */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "test.h"
#include "timer.h"

static int fired;

static void on_fire(Timer *t, uint64_t now) {
        fired++;
}

int main(void) {
        static Timer t[1000];
        TimerHeap h;
        uint64_t last = 0;
        int n = 0;

        timer_heap_init(&h);
        for (int i = 0; i < 1000; i++)
                REQUIRE(timer_init(&h, &t[i], on_fire) == 0);
        CHECK(h.heap.cap >= 1000);

        /* With every slot reserved, arming all of them needs no allocation at all. */
        alloc_fail_after(0);
        srand(7);
        for (int i = 0; i < 1000; i++)
                timer_start(&h, &t[i], 1 + (uint64_t) (rand() % 100000));
        alloc_fail_after(-1);
        for (int i = 0; i < 1000; i += 3)
                timer_stop(&h, &t[i]);
        CHECK(!timer_armed(&t[0]) && timer_armed(&t[1]));
        timer_start(&h, &t[1], 5); /* re-arming moves it */
        CHECK(timer_peek(&h) == &t[1]);
        for (Timer *x; (x = timer_pop_due(&h, 50000));) {
                CHECK(x->deadline >= last);
                CHECK((x - t) % 3 != 0);
                x->fn(x, 50000);
                last = x->deadline;
                n++;
        }
        CHECK(n > 0 && fired == n);
        CHECK(timer_peek(&h) == NULL || timer_peek(&h)->deadline > 50000);
        while (timer_pop_due(&h, UINT64_MAX))
                n++;
        CHECK(n == 666);

        /* A reservation that cannot be made fails cleanly and changes nothing. */
        {
                static Timer more[2000];
                uint32_t reserved = h.n_reserved;
                int r = 0, i;
                alloc_fail_after(0);
                for (i = 0; i < 2000 && r == 0; i++)
                        r = timer_init(&h, &more[i], on_fire);
                alloc_fail_after(-1);
                CHECK(r == -ENOMEM);
                CHECK(h.n_reserved == reserved + (uint32_t) (i - 1));
                CHECK(!more[i - 1].reserved);
                for (int j = 0; j < i; j++)
                        timer_deinit(&h, &more[j]);
                CHECK(h.n_reserved == reserved);
        }
        for (int i = 0; i < 1000; i++)
                timer_deinit(&h, &t[i]);
        CHECK(h.n_reserved == 0);
        CHECK(timer_now() > 0);
        timer_heap_deinit(&h);
        return test_end();
}
