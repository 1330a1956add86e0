/* ring: see ring.h. */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "ring.h"

int ring_reserve(Ring *r, size_t n) {
        size_t cap = r->cap ? r->cap : 1024;
        RingItem *items;

        if (r->len + n <= r->cap)
                return 0;
        while (cap < r->len + n)
                cap *= 2;
        items = alloc_malloc(cap * sizeof(*items));
        if (!items)
                return -ENOMEM;
        for (size_t i = 0; i < r->len; i++)
                items[i] = r->items[(r->head + i) % r->cap];
        free(r->items);
        r->items = items;
        r->cap = cap;
        r->head = 0;
        return 0;
}

void ring_deinit(Ring *r) {
        free(r->items);
        *r = (Ring){};
}
