/* Unit test of the thread pool: every item runs once on a pool thread and comes back through the
 * completion queue, FIFO hand-out, one eventfd wake-up covering a burst, and a clean join; with
 * threads that sleep at once, and with threads that spin first (an item handed over while they
 * spin, or just after they stopped, is still taken). Freeing the pool runs what it still holds
 * and hands it back. */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "completion.h"
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

/* Waits for `n` items to come back. */
static void take_back(Completion *done, size_t n) {
        size_t back = 0;

        while (back < n) {
                struct pollfd pfd = { .fd = completion_fd(done), .events = POLLIN };
                REQUIRE(poll(&pfd, 1, 10000) == 1);
                for (Work *w = completion_take(done), *next; w; w = next) {
                        next = w->next;
                        back++;
                }
        }
        CHECK(back == n);
}

/* One item at a time, with pauses around the spin time: each is taken by a spinning thread, a
 * thread that has just gone to sleep, or a sleeping one. */
static void one_at_a_time(unsigned spin_us) {
        const unsigned pauses_us[] = { 0, 10, spin_us / 2, spin_us, spin_us + 100, 5000 };
        Item items[6 * 3] = {};
        Completion *done = NULL;
        ThreadPool *p = NULL;

        atomic_store(&total_runs, 0);
        REQUIRE(completion_new(&done) == 0);
        REQUIRE(threadpool_new(&p, 2, spin_us, done) == 0);
        for (size_t i = 0; i < ELEMENTSOF(items); i++) {
                items[i].work.run = item_run;
                threadpool_submit(p, &items[i].work);
                threadpool_flush(p);
                take_back(done, 1);
                usleep(pauses_us[i % ELEMENTSOF(pauses_us)]);
        }
        CHECK(atomic_load(&total_runs) == (int) ELEMENTSOF(items));
        threadpool_free(p);
        completion_free(done);
}

static void burst(unsigned spin_us) {
        enum { N = 10000 };
        static Item items[N];
        Completion *done = NULL;
        ThreadPool *p = NULL;

        memset(items, 0, sizeof items);
        atomic_store(&total_runs, 0);
        REQUIRE(completion_new(&done) == 0);
        REQUIRE(threadpool_new(&p, 4, spin_us, done) == 0);
        CHECK(threadpool_size(p) == 4);
        CHECK(completion_take(done) == NULL);
        for (int i = 0; i < N; i++) {
                items[i].work.run = item_run;
                threadpool_submit(p, &items[i].work);
                if (i % 100 == 99)
                        threadpool_flush(p);
        }
        threadpool_flush(p);
        take_back(done, N);
        CHECK(atomic_load(&total_runs) == N);
        for (int i = 0; i < N; i++) {
                CHECK(items[i].runs == 1);
                CHECK(!pthread_equal(items[i].ran_on, pthread_self()));
        }
        /* Nothing left: the fd is quiet. */
        {
                struct pollfd pfd = { .fd = completion_fd(done), .events = POLLIN };
                CHECK(poll(&pfd, 1, 50) == 0);
        }
        p = threadpool_free(p);
        CHECK(p == NULL);
        completion_free(done);
}

/* Freeing the pool runs what is still inside it, staged items too, and every item comes back
 * through the completion queue, which outlives the pool. */
static void free_with_items_inside(void) {
        Item items[100] = {};
        Completion *done = NULL;
        ThreadPool *p = NULL;
        size_t back = 0;

        atomic_store(&total_runs, 0);
        REQUIRE(completion_new(&done) == 0);
        REQUIRE(threadpool_new(&p, 2, 0, done) == 0);
        for (size_t i = 0; i < ELEMENTSOF(items); i++) {
                items[i].work.run = item_run;
                threadpool_submit(p, &items[i].work);
                if (i == ELEMENTSOF(items) / 2)
                        threadpool_flush(p);
        }
        threadpool_free(p);
        CHECK(atomic_load(&total_runs) == (int) ELEMENTSOF(items));
        for (Work *w = completion_take(done); w; w = w->next)
                back++;
        CHECK(back == ELEMENTSOF(items));
        completion_free(done);
}

int main(void) {
        Completion *done = NULL;
        ThreadPool *p = NULL;

        for (unsigned spin_us = 0; spin_us <= 200; spin_us += 200) {
                burst(spin_us);
                one_at_a_time(spin_us);
        }
        free_with_items_inside();
        REQUIRE(completion_new(&done) == 0);
        CHECK(threadpool_new(&p, 0, 0, done) == -EINVAL);
        CHECK(p == NULL);
        completion_free(done);
        return test_end();
}
