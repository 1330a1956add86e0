/* idset: see idset.h. */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "idset.h"

static size_t slot_of(const IdSet *s, uint64_t id) {
        return (size_t) (id * 0x9E3779B97F4A7C15u >> 17) & (s->cap - 1);
}

/* The slot of `id`, or of the free slot where its probe ends. */
static size_t find(const IdSet *s, uint64_t id) {
        size_t i = slot_of(s, id);

        while (s->keys[i] && s->keys[i] != id)
                i = (i + 1) & (s->cap - 1);
        return i;
}

bool idset_has(const IdSet *s, uint64_t id) {
        return s->count > 0 && s->keys[find(s, id)] == id;
}

int idset_add(IdSet *s, uint64_t id) {
        if (2 * (s->count + 1) > s->cap) {
                IdSet grown = { .cap = s->cap ? s->cap * 2 : 256 };
                if (!(grown.keys = alloc_calloc(grown.cap, sizeof(*grown.keys))))
                        return -ENOMEM;
                for (size_t i = 0; i < s->cap; i++)
                        if (s->keys[i])
                                grown.keys[find(&grown, s->keys[i])] = s->keys[i];
                grown.count = s->count;
                free(s->keys);
                *s = grown;
        }
        size_t i = find(s, id);
        s->count += s->keys[i] == 0;
        s->keys[i] = id;
        return 0;
}

bool idset_remove(IdSet *s, uint64_t id) {
        size_t mask = s->cap - 1, hole;

        if (s->count == 0 || s->keys[hole = find(s, id)] != id)
                return false;
        s->keys[hole] = 0;
        s->count--;
        /* Each later key of the run moves into the hole when its probe passes over it. */
        for (size_t j = (hole + 1) & mask; s->keys[j]; j = (j + 1) & mask) {
                size_t home = slot_of(s, s->keys[j]);
                if (((j - home) & mask) >= ((j - hole) & mask)) {
                        s->keys[hole] = s->keys[j];
                        s->keys[j] = 0;
                        hole = j;
                }
        }
        return true;
}

void idset_deinit(IdSet *s) {
        free(s->keys);
        *s = (IdSet){};
}
