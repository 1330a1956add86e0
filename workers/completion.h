/* completion: the one queue through which finished work comes back to the loop, whichever pool
 * ran it (the thread pool's threads, the transfer thread).
 *
 * Producers push finished items onto a lock-free stack, newest first, with one atomic operation
 * per push, and a push that finds the stack empty writes the queue's eventfd: a burst of
 * completions costs the loop one wake-up, however many threads finish work at once. The loop
 * polls completion_fd() and takes everything at once with completion_take(), which turns the
 * stack round so that the items come out oldest first.
 *
 * completion_push() may be called from any thread; every other function is the loop thread's
 * (the one consumer). */
#pragma once

#include "work.h"

typedef struct Completion Completion;

/* Makes an empty queue with its eventfd. Returns 0 or -errno. Loop thread. */
int completion_new(Completion **ret);

/* Closes the eventfd and frees the queue. Items still in it are not the queue's: they are left
 * alone (take them first). Accepts NULL; returns NULL. Loop thread, once no producer may push
 * any more. */
Completion *completion_free(Completion *c);

/* Hands finished items to the loop: a list from `first` to `last` linked through `next`, newest
 * first (one item: first == last). The queue owns them until completion_take() returns them. One
 * atomic operation, and at most one eventfd write (only when the stack was empty). Any thread. */
void completion_push(Completion *c, Work *first, Work *last);

/* The eventfd that is readable while items wait. Owned by `c`: poll it, never close it. */
int completion_fd(Completion *c);

/* Resets the eventfd, then takes every item waiting and returns them oldest first, linked through
 * `next`, or NULL if there are none. Ownership of the items returns to the caller. Loop thread. */
Work *completion_take(Completion *c);
