/* work: the unit every pool hands around. A Work is embedded in its owner's item (a thread job, a
 * transfer); a pool links it through `next` while the item is inside it and never looks at the
 * rest. A WorkList is a FIFO of such items: the pools' staging lists and queues.
 *
 * No state of its own: whoever holds an item or a list is the one thread that may touch it. */
#pragma once

#include <stddef.h>

typedef struct Work Work;
struct Work {
        void (*run)(Work *w); /* called on a pool thread */
        Work *next;           /* owned by the pool while the item is inside it */
};

/* A FIFO of items linked through `next`: the staging lists and queues of the pools. */
typedef struct WorkList {
        Work *head, *tail;
} WorkList;

static inline void worklist_append(WorkList *l, Work *w) {
        w->next = NULL;
        if (l->tail)
                l->tail->next = w;
        else
                l->head = w;
        l->tail = w;
}

/* Moves every item of `from` to the end of `to`, leaving `from` empty. */
static inline void worklist_splice(WorkList *to, WorkList *from) {
        if (!from->head)
                return;
        if (to->tail)
                to->tail->next = from->head;
        else
                to->head = from->head;
        to->tail = from->tail;
        *from = (WorkList){};
}
