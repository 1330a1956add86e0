/* Unit test of the thread pool: every item runs once on a pool thread and comes back, FIFO
 * hand-out, one eventfd wake-up covering a burst, and a clean join. */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

#include "macro.h"
#include "test.h"
#include "threadpool.h"

typedef struct Item {
        Work work;
        int runs;
        pthread_t ran_on;
} Item;

static atomic_int total_runs;

static void item_run(Work *w) {
        Item *it = container_of(w, Item, work);

        it->runs++;
        it->ran_on = pthread_self();
        atomic_fetch_add(&total_runs, 1);
}

int main(void) {
        enum { N = 10000 };
        static Item items[N];
        ThreadPool *p = NULL;
        size_t back = 0;

        REQUIRE(threadpool_new(&p, 4) == 0);
        CHECK(threadpool_size(p) == 4);
        CHECK(threadpool_take_done(p) == NULL);
        for (int i = 0; i < N; i++) {
                items[i].work.run = item_run;
                threadpool_submit(p, &items[i].work);
                if (i % 100 == 99)
                        threadpool_flush(p);
        }
        threadpool_flush(p);
        while (back < N) {
                struct pollfd pfd = { .fd = threadpool_fd(p), .events = POLLIN };
                REQUIRE(poll(&pfd, 1, 10000) == 1);
                for (Work *w = threadpool_take_done(p), *next; w; w = next) {
                        next = w->next;
                        back++;
                }
        }
        CHECK(back == N);
        CHECK(atomic_load(&total_runs) == N);
        for (int i = 0; i < N; i++) {
                CHECK(items[i].runs == 1);
                CHECK(!pthread_equal(items[i].ran_on, pthread_self()));
        }
        /* Nothing left: the fd is quiet. */
        {
                struct pollfd pfd = { .fd = threadpool_fd(p), .events = POLLIN };
                CHECK(poll(&pfd, 1, 50) == 0);
        }
        p = threadpool_free(p);
        CHECK(p == NULL);
        CHECK(threadpool_new(&p, 0) == -EINVAL);
        return test_end();
}
