/* threadpool: a fixed set of threads that run opaque work items for the event loop.
 *
 * The loop thread stages items with threadpool_submit() and hands every staged item over at once
 * with threadpool_flush(): one lock and at most one wake-up per idle thread for a whole batch.
 * Some pool thread calls item->run(item) with no lock held and pushes the finished item onto the
 * completion queue the pool was made with (completion.h), which the transfer pool shares: a burst
 * of completions costs the loop one wake-up, and the loop takes finished work from one place,
 * whichever pool ran it. Errors travel inside the item (the caller embeds Work in its own
 * struct). Items start in FIFO order. The loop thread is the only caller of every function
 * here. */
#pragma once

#include "completion.h"
#include "work.h"

typedef struct ThreadPool ThreadPool;

/* Starts `n_threads` threads. A thread that runs out of work first looks for more for `spin_us`
 * microseconds (yielding the CPU to anything else that wants it) before it sleeps: a client that
 * sends its next job within that time finds a thread awake. Finished items go to `done`
 * (borrowed; it must outlive the pool). Returns 0 or -errno. */
int threadpool_new(ThreadPool **ret, unsigned n_threads, unsigned spin_us, Completion *done);

/* Joins the threads. Items still inside the pool are run to completion first and pushed to
 * `done`, where the caller takes them back. Accepts NULL; returns NULL. */
ThreadPool *threadpool_free(ThreadPool *p);

/* Stages `w`; the pool owns it from now until it comes back from completion_take() of `done`. It
 * starts only after the next threadpool_flush(). */
void threadpool_submit(ThreadPool *p, Work *w);

/* Hands every staged item to the threads. */
void threadpool_flush(ThreadPool *p);

/* Number of threads. */
unsigned threadpool_size(ThreadPool *p);

/* Changes how long an idle thread looks for work before it sleeps (reload). Loop thread. */
void threadpool_set_spin(ThreadPool *p, unsigned spin_us);
