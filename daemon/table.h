/* table: the future table, mapping future IDs to Futures.
 *
 * IDs are issued in increasing order, so the table is a ring of slots indexed by `id - base`:
 * O(1) lookup, insert and removal, 8 bytes per slot. Removed slots stay NULL until every older
 * slot is empty too; a long-lived old future therefore pins the slots issued after it (8 bytes
 * each), which the retention limit bounds. The table owns the Futures. Loop thread only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "future.h"
#include "remote.h"

typedef struct Table {
        Future **slots;   /* ring buffer of `cap` slots (a power of two) */
        size_t head;      /* slot of `base` */
        size_t cap;
        uint64_t base;    /* lowest ID that may still be present */
        uint64_t next_id; /* the ID the next insert gets; IDs below it were issued */
        size_t count;     /* non-NULL slots */
        Remote *remote;   /* cluster mode: the futures of other nodes' IDs; else NULL */
} Table;

/* Starts with `first_id` as the next ID (1 for a fresh daemon; a durable store passes its own). */
void table_init(Table *t, uint64_t first_id);

/* Frees every future left and the slots. */
void table_deinit(Table *t);

/* Makes room for `n` more futures, so that the next `n` table_add() calls cannot fail. Returns 0
 * or -ENOMEM. */
int table_reserve(Table *t, size_t n);

/* Issues the next ID for `f` (setting f->id) and stores it; the table owns `f` on success.
 * Returns 0 or -ENOMEM (never after a table_reserve() that covers it). */
int table_add(Table *t, Future *f);

/* Stores `f` under the given `id` (recovery: IDs kept by the store), which must be at least the
 * next ID; the IDs skipped are issued (they report `expired`). Returns 0 or -ENOMEM. */
int table_add_at(Table *t, Future *f, uint64_t id);

/* Moves the next ID up to `next_id` (the store's: IDs are never reused). Returns 0, -EINVAL
 * (it would go down) or -ENOMEM. */
int table_set_next_id(Table *t, uint64_t next_id);

/* Returns the future with `id`, borrowed, or NULL. In cluster mode a miss in the ring looks in
 * `remote` (one branch on a NULL pointer otherwise). */
Future *table_get(const Table *t, uint64_t id);

/* Removes `id` from the table and returns it; the caller owns it then. NULL if absent. */
Future *table_steal(Table *t, uint64_t id);

/* The state a client sees for `id`: the future's visible state, or `expired` / `unknown` when it
 * is gone. */
FutureState table_state_of(const Table *t, uint64_t id);

/* True if `id` was issued (so a missing entry is `expired`, not `unknown`). */
static inline int table_issued(const Table *t, uint64_t id) {
        return id > 0 && id < t->next_id;
}
