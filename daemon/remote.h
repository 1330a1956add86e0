/* remote: the futures of other nodes' IDs that a node of a cluster holds (docs/CLUSTER.md): the
 * jobs it claimed from the database, and the mirrors of jobs other nodes hold that its clients
 * asked about. The future table's ring is indexed by this node's own IDs; these go to this
 * hash beside it, which the table consults for an ID outside its ring (table.h). The hash
 * borrows its futures (the table owns them). Loop thread only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "future.h"

typedef struct Remote {
        Future **slots;   /* open addressing, linear probing; `cap` a power of two */
        size_t cap;
        size_t count;
} Remote;

/* The future of `id`, or NULL. */
Future *remote_get(const Remote *r, uint64_t id);

/* Adds `f` under f->id (not present yet). Returns 0 or -ENOMEM. */
int remote_put(Remote *r, Future *f);

/* Removes `id`; returns its future, or NULL. */
Future *remote_steal(Remote *r, uint64_t id);

/* Iterates: the next future at or after slot *pos (advanced past it), or NULL at the end. The
 * hash must not change during an iteration. */
Future *remote_next(const Remote *r, size_t *pos);

/* Frees the slots (not the futures). */
void remote_deinit(Remote *r);
