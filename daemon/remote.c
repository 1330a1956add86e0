/* remote: see remote.h. */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "remote.h"

static size_t home(const Remote *r, uint64_t id) {
        return (size_t) (id * 0x9E3779B97F4A7C15u >> 17) & (r->cap - 1);
}

Future *remote_get(const Remote *r, uint64_t id) {
        if (r->count == 0)
                return NULL;
        for (size_t i = home(r, id);; i = (i + 1) & (r->cap - 1)) {
                Future *f = r->slots[i];
                if (!f || f->id == id)
                        return f;
        }
}

static void place(Remote *r, Future *f) {
        size_t i = home(r, f->id);

        while (r->slots[i])
                i = (i + 1) & (r->cap - 1);
        r->slots[i] = f;
}

int remote_put(Remote *r, Future *f) {
        if (2 * (r->count + 1) > r->cap) {
                size_t old_cap = r->cap, cap = r->cap ? r->cap * 2 : 256;
                Future **old = r->slots;
                r->slots = alloc_calloc(cap, sizeof(*r->slots));
                if (!r->slots) {
                        r->slots = old;
                        return -ENOMEM;
                }
                r->cap = cap;
                for (size_t i = 0; i < old_cap; i++)
                        if (old[i])
                                place(r, old[i]);
                free(old);
        }
        place(r, f);
        r->count++;
        return 0;
}

Future *remote_steal(Remote *r, uint64_t id) {
        size_t i, mask = r->cap - 1;
        Future *f;

        if (r->count == 0)
                return NULL;
        for (i = home(r, id); (f = r->slots[i]) && f->id != id; i = (i + 1) & mask)
                ;
        if (!f)
                return NULL;
        r->slots[i] = NULL;
        r->count--;
        /* Backward-shift deletion: the entries after it that probed past it move up. */
        for (size_t j = (i + 1) & mask; r->slots[j]; j = (j + 1) & mask) {
                Future *g = r->slots[j];
                size_t h = home(r, g->id);
                if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
                        r->slots[i] = g;
                        r->slots[j] = NULL;
                        i = j;
                }
        }
        return f;
}

Future *remote_next(const Remote *r, size_t *pos) {
        while (*pos < r->cap) {
                Future *f = r->slots[(*pos)++];
                if (f)
                        return f;
        }
        return NULL;
}

void remote_deinit(Remote *r) {
        free(r->slots);
        *r = (Remote){};
}
