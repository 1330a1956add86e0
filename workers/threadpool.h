/* threadpool: a fixed set of threads that run opaque work items for the event loop.
 *
 * The loop thread stages items with threadpool_submit() and hands every staged item over at once
 * with threadpool_flush(): one lock and at most one wake-up per idle thread for a whole batch.
 * Some pool thread calls item->run(item) with no lock held; the finished item is pushed onto a
 * lock-free completion stack and the pool's eventfd becomes readable when that stack goes from
 * empty to non-empty, so a burst of completions costs the loop one wake-up. The loop takes the
 * finished items back with threadpool_take_done(). Errors travel inside the item (the caller
 * embeds Work in its own struct). Items start in FIFO order. The loop thread is the only caller
 * of every function here. */
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

typedef struct ThreadPool ThreadPool;

/* Starts `n_threads` threads. A thread that runs out of work first looks for more for `spin_us`
 * microseconds (yielding the CPU to anything else that wants it) before it sleeps: a client that
 * sends its next job within that time finds a thread awake. Returns 0 or -errno. */
int threadpool_new(ThreadPool **ret, unsigned n_threads, unsigned spin_us);

/* Joins the threads. Call it once every submitted item has come back through
 * threadpool_take_done(); items still inside the pool are run to completion first and then leaked.
 * Accepts NULL; returns NULL. */
ThreadPool *threadpool_free(ThreadPool *p);

/* Stages `w`; the pool owns it from now until it comes back from threadpool_take_done(). It
 * starts only after the next threadpool_flush(). */
void threadpool_submit(ThreadPool *p, Work *w);

/* Hands every staged item to the threads. */
void threadpool_flush(ThreadPool *p);

/* The eventfd that is readable while finished items wait (the pool owns it). */
int threadpool_fd(ThreadPool *p);

/* Resets the eventfd and returns every finished item as a list linked through `next`, oldest
 * first, or NULL. Ownership of the items returns to the caller. */
Work *threadpool_take_done(ThreadPool *p);

/* Hands finished items back through the completion stack, from any thread: for work run
 * elsewhere (the transfer pool) that the loop takes back with threadpool_take_done(). The items
 * go as a list from `first` to `last` linked through `next`, newest first (one item: first ==
 * last), with one atomic operation and at most one wake-up. */
void threadpool_hand_back(ThreadPool *p, Work *first, Work *last);

/* Number of threads. */
unsigned threadpool_size(ThreadPool *p);
