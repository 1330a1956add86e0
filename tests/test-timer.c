/* Unit test of the timer heap: timers come out in deadline order, stopped ones never do. */
#include <stdlib.h>

#include "test.h"
#include "timer.h"

int main(void) {
        TimerHeap h = {};
        Timer t[1000] = {};
        uint64_t last = 0;
        int n = 0;

        srand(7);
        for (int i = 0; i < 1000; i++)
                REQUIRE(timer_start(&h, &t[i], 1 + (uint64_t) (rand() % 100000)) == 0);
        for (int i = 0; i < 1000; i += 3)
                timer_stop(&h, &t[i]);
        CHECK(!timer_armed(&t[0]) && timer_armed(&t[1]));
        REQUIRE(timer_start(&h, &t[1], 5) == 0); /* re-arming moves it */
        for (Timer *x; (x = timer_pop_due(&h, 50000));) {
                CHECK(x->deadline >= last);
                CHECK((x - t) % 3 != 0);
                last = x->deadline;
                n++;
        }
        CHECK(n > 0);
        CHECK(timer_peek(&h) == NULL || timer_peek(&h)->deadline > 50000);
        while (timer_pop_due(&h, UINT64_MAX))
                n++;
        CHECK(n == 666);
        CHECK(timer_now() > 0);
        timer_heap_deinit(&h);
        return test_end();
}
