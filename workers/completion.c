/* completion: a Treiber stack of finished items (pushed by any thread, taken whole by the loop)
 * and the eventfd that wakes the loop when the stack stops being empty. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "completion.h"

struct Completion {
        /* Finished items, newest first: pushed by any thread, taken whole by the loop. */
        _Atomic(Work *) done;
        int event_fd;
};

int completion_new(Completion **ret) {
        Completion *c;
        int r;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        atomic_init(&c->done, NULL);
        c->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (c->event_fd < 0) {
                r = -errno;
                free(c);
                return r;
        }
        *ret = c;
        return 0;
}

Completion *completion_free(Completion *c) {
        if (!c)
                return NULL;
        close(c->event_fd);
        free(c);
        return NULL;
}

void completion_push(Completion *c, Work *first, Work *last) {
        Work *old = atomic_load_explicit(&c->done, memory_order_relaxed);

        /* The release publishes the items (and whatever their runs wrote) to the acquire in
         * completion_take(). */
        do
                last->next = old;
        while (!atomic_compare_exchange_weak_explicit(&c->done, &old, first, memory_order_release,
                                                      memory_order_relaxed));
        /* A stack that was not empty has woken the loop already: only the first push writes. */
        if (!old) {
                uint64_t one = 1;
                (void) !write(c->event_fd, &one, sizeof one);
        }
}

int completion_fd(Completion *c) {
        return c->event_fd;
}

Work *completion_take(Completion *c) {
        Work *w, *oldest_first = NULL;
        uint64_t v;

        /* Reset the eventfd before taking: a push that lands after the take finds the stack empty
         * and writes again, so no item is ever left without a wake-up. */
        (void) !read(c->event_fd, &v, sizeof v);
        w = atomic_exchange_explicit(&c->done, NULL, memory_order_acquire);
        while (w) {
                Work *next = w->next;
                w->next = oldest_first;
                oldest_first = w;
                w = next;
        }
        return oldest_first;
}
