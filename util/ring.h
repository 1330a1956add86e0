/* ring: a FIFO of (id, key) pairs in one growing circular array, kept in the order of `key` by
 * its owner: the executor's futures that wait for a store batch (their submit's, or their
 * finish's; key: the batch's sequence number), the retention queue (key: the deadline).
 *
 * Room is made ahead (ring_reserve), so that pushing never fails where failing is no longer an
 * option. No lock: one thread owns a ring. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct RingItem {
        uint64_t id;
        uint64_t key;
} RingItem;

typedef struct Ring {
        RingItem *items; /* owned */
        size_t head, len, cap;
} Ring;

/* Makes room for `n` more items. Returns 0 or -ENOMEM (the ring is unchanged). */
int ring_reserve(Ring *r, size_t n);

/* Appends an item; room must have been reserved. */
static inline void ring_push(Ring *r, uint64_t id, uint64_t key) {
        r->items[(r->head + r->len++) % r->cap] = (RingItem){ .id = id, .key = key };
}

/* The `i`th oldest item, i < len (borrowed until the next push or pop). */
static inline RingItem *ring_at(const Ring *r, size_t i) {
        return &r->items[(r->head + i) % r->cap];
}

/* The oldest item (borrowed until the next push or pop), or NULL when empty. */
static inline RingItem *ring_peek(const Ring *r) {
        return r->len ? ring_at(r, 0) : NULL;
}

/* Drops the oldest item; the ring must not be empty. */
static inline void ring_pop(Ring *r) {
        r->head = (r->head + 1) % r->cap;
        r->len--;
}

/* Frees the items. The ring is empty and usable again. */
void ring_deinit(Ring *r);
