/* idset: a set of 64-bit IDs (never 0), added to, asked and removed from one at a time: open
 * addressing with linear probing and backward-shift deletion. The set owns its array; whoever
 * owns the set uses it from one thread at a time. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct IdSet {
        uint64_t *keys;   /* 0: a free slot; `cap` a power of two, at most half full */
        size_t cap, count;
} IdSet;

/* Adds `id` (not 0); adding one already there changes nothing. Returns 0 or -ENOMEM (the set
 * is then as it was). */
int idset_add(IdSet *s, uint64_t id);

/* Removes `id`; returns whether it was there. */
bool idset_remove(IdSet *s, uint64_t id);

bool idset_has(const IdSet *s, uint64_t id);

/* Frees the array; the set is empty and usable again. */
void idset_deinit(IdSet *s);
