/* table: see table.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "table.h"

void table_init(Table *t, uint64_t first_id) {
        *t = (Table){ .base = first_id, .next_id = first_id };
}

static size_t slot_of(const Table *t, uint64_t id) {
        return (t->head + (size_t) (id - t->base)) & (t->cap - 1);
}

void table_deinit(Table *t) {
        for (uint64_t id = t->base; id < t->next_id; id++) {
                Future *f = t->slots[slot_of(t, id)];
                if (f) {
                        /* Shutdown: the heaps and waiters that point here are gone; the owner
                         * gave the timers back. */
                        f->waiters = NULL;
                        f->heap_pos = 0;
                        future_free(f);
                }
        }
        free(t->slots);
        if (t->remote) {
                size_t pos = 0;
                Future *f;
                while ((f = remote_next(t->remote, &pos))) {
                        f->waiters = NULL;
                        f->heap_pos = 0;
                        future_free(f);
                }
                remote_deinit(t->remote);
        }
        *t = (Table){};
}

static int grow(Table *t, size_t need) {
        size_t len = (size_t) (t->next_id - t->base);
        size_t cap = t->cap ? t->cap * 2 : 1024;
        Future **slots;

        while (cap < need)
                cap *= 2;
        slots = alloc_calloc(cap, sizeof(*slots));
        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++)
                slots[i] = t->slots[(t->head + i) & (t->cap - 1)];
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
        t->head = 0;
        return 0;
}

int table_reserve(Table *t, size_t n) {
        size_t need = (size_t) (t->next_id - t->base) + n;

        return need > t->cap ? grow(t, need) : 0;
}

int table_add(Table *t, Future *f) {
        int r = table_reserve(t, 1);

        if (r < 0)
                return r;
        f->id = t->next_id++;
        t->slots[slot_of(t, f->id)] = f;
        t->count++;
        return 0;
}

int table_add_at(Table *t, Future *f, uint64_t id) {
        int r = table_set_next_id(t, id);

        return r < 0 ? r : table_add(t, f);
}

int table_set_next_id(Table *t, uint64_t next_id) {
        int r;

        if (next_id < t->next_id)
                return -EINVAL;
        if (t->count == 0) {
                /* Nothing to keep: the ring starts at `next_id`. */
                t->base = t->next_id = next_id;
                t->head = 0;
                return 0;
        }
        /* The IDs skipped stay issued and take a slot each until the futures before them go:
         * room first, so that the ring never wraps onto itself. */
        r = table_reserve(t, (size_t) (next_id - t->next_id) + 1);
        if (r < 0)
                return r;
        t->next_id = next_id;
        return 0;
}

Future *table_get(const Table *t, uint64_t id) {
        Future *f = id < t->base || id >= t->next_id ? NULL : t->slots[slot_of(t, id)];

        if (!f && t->remote)
                return remote_get(t->remote, id);
        return f;
}

FutureState table_state_of(const Table *t, uint64_t id) {
        Future *f = table_get(t, id);

        if (f)
                return future_visible_state(f);
        return table_issued(t, id) ? STATE_EXPIRED : STATE_UNKNOWN;
}

Future *table_steal(Table *t, uint64_t id) {
        Future *f = id < t->base || id >= t->next_id ? NULL : t->slots[slot_of(t, id)];

        if (!f)
                return t->remote ? remote_steal(t->remote, id) : NULL;
        t->slots[slot_of(t, id)] = NULL;
        t->count--;
        /* Advance past the empty prefix so that its slots can be reused. */
        while (t->base < t->next_id && !t->slots[t->head]) {
                t->head = (t->head + 1) & (t->cap - 1);
                t->base++;
        }
        return f;
}
