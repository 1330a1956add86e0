/* idlist: a growable array of 64-bit IDs, appended to and read whole. The list owns its array;
 * whoever owns the list uses it from one thread at a time. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct IdList {
        uint64_t *ids;
        size_t n, cap;
} IdList;

/* Appends `id`, growing the array (through the allocation seam) when it is full. Returns 0 or
 * -ENOMEM (the list is then as it was). */
int idlist_add(IdList *l, uint64_t id);
