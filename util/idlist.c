/* idlist: see idlist.h. */
#include <errno.h>

#include "alloc.h"
#include "idlist.h"

int idlist_add(IdList *l, uint64_t id) {
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 64;
                uint64_t *p = alloc_realloc(l->ids, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                l->ids = p;
                l->cap = cap;
        }
        l->ids[l->n++] = id;
        return 0;
}
