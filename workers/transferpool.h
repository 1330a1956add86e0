/* transferpool: one thread that drives every libcurl transfer of the daemon on one multi handle.
 *
 * A download spends nearly all its time waiting on a socket, so a thread per transfer costs a
 * stack, a private poll loop and context switches per transfer for nothing: 676 transfers at once
 * on 2 CPUs spent most of their time switching. Instead the loop thread stages items with
 * transferpool_submit() and hands a batch over with transferpool_flush() (one wake-up); the
 * transfer thread asks each item for its easy handle (item->start), adds it to the multi handle,
 * and waits on the sockets libcurl names (curl_multi_socket_action on an epoll set, O(1) per
 * event). When libcurl reports a transfer done, or the loop has set the item's cancel flag and
 * called transferpool_wake(), the thread calls item->finish and pushes the item onto the
 * completion queue the pool was made with (all that finished in one turn of its loop at once, one
 * push), which the thread pool shares: the loop takes finished work from one place, whichever pool
 * ran it.
 *
 * The loop thread is the only caller of every function here; start and finish run on the
 * transfer thread. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>

#include "completion.h"
#include "work.h"

typedef struct Transfer Transfer;
struct Transfer {
        /* Links the item while the pool stages or queues it, and is how it comes back:
         * completion_take() of the pool's completion queue. */
        Work work;
        /* On the transfer thread: returns the libcurl easy handle to run, or NULL when the item is
         * finished already (failed to start, or cancelled before it started). */
        void *(*start)(Transfer *t);
        /* On the transfer thread: libcurl is done with the handle start() returned (the pool has
         * taken it out of the multi handle; it is finish()'s to free); `result` is the CURLcode,
         * or -1 when the transfer was cancelled. The pool sets the handle's CURLOPT_PRIVATE to
         * t. */
        void (*finish)(Transfer *t, int result);
        const atomic_int *cancel; /* set (nonzero) by the loop, then transferpool_wake() */
        /* The pool's own, while the item is inside it. */
        Transfer *prev_running, *next_running;
        void *handle; /* what start() returned, while running */
};

typedef struct TransferPool TransferPool;

/* Starts the transfer thread. Finished items go to `done` (borrowed; it must outlive the transfer
 * pool). Call after curl_global_init(). Returns 0 or -errno. */
int transferpool_new(TransferPool **ret, Completion *done);

/* Stops the transfer thread: every transfer still running is cancelled, finished and pushed to
 * `done` first. Accepts NULL; returns NULL. */
TransferPool *transferpool_free(TransferPool *p);

/* Stages `t` (owned by the pool until it comes back through completion_take() of `done`). It
 * starts after the next transferpool_flush(). */
void transferpool_submit(TransferPool *p, Transfer *t);

/* Hands every staged item to the transfer thread. */
void transferpool_flush(TransferPool *p);

/* Tells the transfer thread to look at the cancel flags of its running transfers. */
void transferpool_wake(TransferPool *p);

/* The watchdog's ping of the process's transfer pool: returns true when the transfer thread has
 * finished a turn of its loop since the previous call (or no pool runs), and wakes it for the
 * next. A transfer thread stuck in a job's start() or finish() stops answering; one merely
 * waiting on its sockets answers at once. */
bool transferpool_ping(void);
