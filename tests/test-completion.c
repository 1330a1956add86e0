/* Unit test of the completion queue: items come out oldest first, a list pushed at once stays in
 * order, only a push onto an empty stack writes the eventfd, a push after a take writes again, and
 * the fd is quiet once a take has emptied the queue. Then two producer threads push 200,000 items
 * each (single items and lists of up to seven) while the loop thread polls the fd and takes: every
 * item arrives exactly once and in its producer's order. */
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "completion.h"
#include "macro.h"
#include "test.h"

#define N_PRODUCERS 2
#define N_ITEMS 200000u
#define LIST_MAX 7u

typedef struct Item {
        Work work;
        unsigned producer;
        unsigned seq; /* the order its producer pushed it in */
        bool seen;
} Item;

typedef struct Producer {
        Completion *c;
        Item *items;
} Producer;

static bool readable(Completion *c, int timeout_ms) {
        struct pollfd pfd = { .fd = completion_fd(c), .events = POLLIN };

        return poll(&pfd, 1, timeout_ms) == 1;
}

/* Pushes its items in order: one alone, then a list of two, of three, ... up to LIST_MAX, and
 * round again. A list goes newest first, so items[i + k - 1] is `first` and items[i] `last`. */
static void *produce(void *userdata) {
        Producer *pr = userdata;
        unsigned k = 1;

        for (unsigned i = 0; i < N_ITEMS; i += k, k = k % LIST_MAX + 1) {
                unsigned n = MIN(k, N_ITEMS - i);
                for (unsigned j = i + 1; j < i + n; j++)
                        pr->items[j].work.next = &pr->items[j - 1].work;
                completion_push(pr->c, &pr->items[i + n - 1].work, &pr->items[i].work);
        }
        return NULL;
}

static void concurrent(void) {
        Producer producers[N_PRODUCERS];
        pthread_t threads[N_PRODUCERS];
        unsigned next_seq[N_PRODUCERS] = {};
        unsigned long received = 0, out_of_order = 0, twice = 0;
        Completion *c = NULL;

        REQUIRE(completion_new(&c) == 0);
        for (unsigned p = 0; p < N_PRODUCERS; p++) {
                producers[p] = (Producer){ .c = c, .items = calloc(N_ITEMS, sizeof(Item)) };
                REQUIRE(producers[p].items);
                for (unsigned i = 0; i < N_ITEMS; i++)
                        producers[p].items[i] = (Item){ .producer = p, .seq = i };
        }
        for (unsigned p = 0; p < N_PRODUCERS; p++)
                REQUIRE(pthread_create(&threads[p], NULL, produce, &producers[p]) == 0);

        while (received < N_PRODUCERS * N_ITEMS) {
                REQUIRE(readable(c, 10000));
                for (Work *w = completion_take(c), *next; w; w = next) {
                        Item *it = container_of(w, Item, work);
                        next = w->next;
                        twice += it->seen;
                        it->seen = true;
                        out_of_order += it->seq != next_seq[it->producer];
                        next_seq[it->producer] = it->seq + 1;
                        received++;
                }
        }
        for (unsigned p = 0; p < N_PRODUCERS; p++)
                pthread_join(threads[p], NULL);
        CHECK(received == N_PRODUCERS * N_ITEMS);
        CHECK(twice == 0);
        CHECK(out_of_order == 0);
        for (unsigned p = 0; p < N_PRODUCERS; p++) {
                unsigned long unseen = 0;
                for (unsigned i = 0; i < N_ITEMS; i++)
                        unseen += !producers[p].items[i].seen;
                CHECK(unseen == 0);
                CHECK(next_seq[p] == N_ITEMS);
                free(producers[p].items);
        }

        /* The last push may have written the fd after the take that got its item: that wake-up
         * finds nothing. Once a take has emptied the queue with no producer left, the fd is
         * quiet. */
        CHECK(completion_take(c) == NULL);
        CHECK(!readable(c, 50));
        completion_free(c);
}

static void single_thread(void) {
        Item items[5] = {};
        Completion *c = NULL;
        uint64_t v = 0;
        Work *w;

        REQUIRE(completion_new(&c) == 0);
        CHECK(completion_take(c) == NULL);
        CHECK(!readable(c, 0));
        for (unsigned i = 0; i < ELEMENTSOF(items); i++)
                items[i].seq = i;

        /* Three separate pushes: only the first, onto the empty stack, writes the eventfd. */
        completion_push(c, &items[0].work, &items[0].work);
        CHECK(readable(c, 0));
        completion_push(c, &items[1].work, &items[1].work);
        completion_push(c, &items[2].work, &items[2].work);
        CHECK(read(completion_fd(c), &v, sizeof v) == sizeof v);
        CHECK(v == 1);
        CHECK(!readable(c, 0));
        /* A list of two, newest first: items[4] then items[3]. */
        items[4].work.next = &items[3].work;
        completion_push(c, &items[4].work, &items[3].work);
        CHECK(!readable(c, 0)); /* the stack was not empty */

        /* Oldest first. */
        w = completion_take(c);
        for (unsigned i = 0; i < ELEMENTSOF(items); i++) {
                REQUIRE(w);
                CHECK(w == &items[i].work);
                w = w->next;
        }
        CHECK(w == NULL);
        CHECK(!readable(c, 0));
        CHECK(completion_take(c) == NULL);

        /* A push after the take finds the stack empty again and writes again. */
        completion_push(c, &items[0].work, &items[0].work);
        CHECK(readable(c, 0));
        w = completion_take(c);
        CHECK(w == &items[0].work && w->next == NULL);
        CHECK(!readable(c, 0));

        c = completion_free(c);
        CHECK(c == NULL);
        CHECK(completion_free(NULL) == NULL);
}

int main(void) {
        single_thread();
        concurrent();
        return test_end();
}
