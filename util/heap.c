/* heap: see heap.h. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "heap.h"

void heap_init(Heap *h, HeapLess less, HeapSetPos setpos) {
        *h = (Heap){ .less = less, .setpos = setpos };
}

void heap_deinit(Heap *h) {
        for (uint32_t i = 0; i < h->n; i++)
                h->setpos(h->items[i], 0);
        free(h->items);
        *h = (Heap){ .less = h->less, .setpos = h->setpos };
}

static void place(Heap *h, uint32_t i, void *item) {
        h->items[i] = item;
        h->setpos(item, i + 1);
}

static void sift_up(Heap *h, uint32_t i) {
        void *item = h->items[i];

        while (i > 0) {
                uint32_t parent = (i - 1) / 2;
                if (!h->less(item, h->items[parent]))
                        break;
                place(h, i, h->items[parent]);
                i = parent;
        }
        place(h, i, item);
}

static void sift_down(Heap *h, uint32_t i) {
        void *item = h->items[i];

        for (;;) {
                uint32_t child = 2 * i + 1;
                if (child >= h->n)
                        break;
                if (child + 1 < h->n && h->less(h->items[child + 1], h->items[child]))
                        child++;
                if (!h->less(h->items[child], item))
                        break;
                place(h, i, h->items[child]);
                i = child;
        }
        place(h, i, item);
}

int heap_reserve(Heap *h, uint32_t n) {
        uint32_t cap = h->cap ? h->cap : 64;
        void **items;

        if (n <= h->cap)
                return 0;
        while (cap < n) {
                if (cap > UINT32_MAX / 2)
                        return -ENOMEM;
                cap *= 2;
        }
        items = alloc_realloc(h->items, (size_t) cap * sizeof(*items));
        if (!items)
                return -ENOMEM;
        h->items = items;
        h->cap = cap;
        return 0;
}

int heap_push(Heap *h, void *item) {
        if (h->n == h->cap) {
                int r = heap_reserve(h, h->n + 1);
                if (r < 0)
                        return r;
        }
        place(h, h->n++, item);
        sift_up(h, h->n - 1);
        return 0;
}

void *heap_remove(Heap *h, uint32_t pos) {
        uint32_t i = pos - 1;
        void *item, *moved;

        assert(pos > 0 && i < h->n);
        item = h->items[i];
        h->setpos(item, 0);
        if (i == --h->n)
                return item;
        moved = h->items[h->n];
        place(h, i, moved);
        sift_up(h, i);
        /* sift_up() may have moved `moved` up; if it stayed, it may belong further down. */
        if (h->items[i] == moved)
                sift_down(h, i);
        return item;
}

void *heap_pop(Heap *h) {
        return h->n ? heap_remove(h, 1) : NULL;
}
