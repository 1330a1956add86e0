/* heap: one generic binary min-heap of borrowed items, for the scheduler's queues and the loop's
 * timers (beanstalkd's dat.h Heap has the same shape).
 *
 * The owner supplies `less` (true if `a` must come out before `b`) and `setpos`, which the heap
 * calls whenever an item moves, with its slot + 1, or 0 when the item leaves the heap. The item
 * keeps that number, so it can be removed from the middle in O(log n) when its owner goes away
 * first, and "in a heap" is simply pos != 0. The heap never owns its items. Single-threaded: the
 * owner's thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef bool (*HeapLess)(const void *a, const void *b);
typedef void (*HeapSetPos)(void *item, uint32_t pos);

typedef struct Heap {
        void **items;
        uint32_t n, cap;
        HeapLess less;
        HeapSetPos setpos;
} Heap;

void heap_init(Heap *h, HeapLess less, HeapSetPos setpos);

/* Frees the array; the items left are told pos 0. */
void heap_deinit(Heap *h);

/* Makes room for `n` items in all, so that the next pushes up to that size cannot fail.
 * Returns 0 or -ENOMEM. */
int heap_reserve(Heap *h, uint32_t n);

/* Adds `item` (borrowed). Returns 0 or -ENOMEM (only when the heap holds its reserve's worth). */
int heap_push(Heap *h, void *item);

/* Removes the item at `pos` (as setpos() gave it; must be non-zero) and returns it. */
void *heap_remove(Heap *h, uint32_t pos);

/* The first item, or NULL. */
static inline void *heap_peek(const Heap *h) {
        return h->n ? h->items[0] : NULL;
}

/* Removes and returns the first item, or NULL. */
void *heap_pop(Heap *h);

static inline uint32_t heap_size(const Heap *h) {
        return h->n;
}
