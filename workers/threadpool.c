/* threadpool: a mutex-guarded FIFO of work filled in batches, and threads that take from it
 * (looking for --spin-us before they sleep) and push what they finished to the completion
 * queue. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "now.h"
#include "threadpool.h"
#include "thread.h"

struct ThreadPool {
        /* Loop thread only. */
        WorkList staged;
        unsigned n_staged;

        pthread_mutex_t lock; /* guards the queue, n_idle and stopping */
        pthread_cond_t has_work;
        WorkList queue;
        unsigned n_idle; /* threads waiting on has_work */
        unsigned n_spinning; /* threads watching has_items before they wait */
        atomic_bool has_items; /* queue.head != NULL, for the spinning threads */
        bool stopping;

        Completion *done; /* borrowed: where finished items go */
        uint64_t spin_ns; /* guarded by lock: a reload may change it */
        unsigned n_threads;
        pthread_t threads[];
};

static void *thread_main(void *userdata) {
        ThreadPool *p = userdata;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                bool spun = false;
                Work *w;

                while (!p->queue.head && !p->stopping) {
                        if (!spun && p->spin_ns > 0) {
                                uint64_t end, spin_ns = p->spin_ns;
                                p->n_spinning++;
                                pthread_mutex_unlock(&p->lock);
                                end = now_ns() + spin_ns;
                                while (!atomic_load_explicit(&p->has_items, memory_order_relaxed) &&
                                       now_ns() < end)
                                        sched_yield();
                                pthread_mutex_lock(&p->lock);
                                p->n_spinning--;
                                spun = true;
                                continue;
                        }
                        p->n_idle++;
                        pthread_cond_wait(&p->has_work, &p->lock);
                        p->n_idle--;
                }
                if (!p->queue.head)
                        break;
                w = p->queue.head;
                p->queue.head = w->next;
                if (!p->queue.head) {
                        p->queue.tail = NULL;
                        atomic_store_explicit(&p->has_items, false, memory_order_relaxed);
                }
                pthread_mutex_unlock(&p->lock);

                w->next = NULL;
                w->run(w);
                completion_push(p->done, w, w);

                pthread_mutex_lock(&p->lock);
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int threadpool_new(ThreadPool **ret, unsigned n_threads, unsigned spin_us, Completion *done) {
        ThreadPool *p;
        int r = 0;

        if (n_threads == 0)
                return -EINVAL;
        p = calloc(1, sizeof *p + n_threads * sizeof p->threads[0]);
        if (!p)
                return -ENOMEM;
        p->spin_ns = (uint64_t) spin_us * 1000u;
        p->done = done;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->has_work, NULL);
        for (; p->n_threads < n_threads; p->n_threads++) {
                r = thread_start(&p->threads[p->n_threads], thread_main, p);
                if (r < 0)
                        break;
        }
        if (r < 0) {
                threadpool_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

ThreadPool *threadpool_free(ThreadPool *p) {
        if (!p)
                return NULL;
        threadpool_flush(p);
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->has_work);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);
        pthread_cond_destroy(&p->has_work);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

void threadpool_submit(ThreadPool *p, Work *w) {
        worklist_append(&p->staged, w);
        p->n_staged++;
}

void threadpool_flush(ThreadPool *p) {
        unsigned wake;

        if (!p->staged.head)
                return;
        pthread_mutex_lock(&p->lock);
        worklist_splice(&p->queue, &p->staged);
        atomic_store_explicit(&p->has_items, true, memory_order_relaxed);
        /* Wake no more threads than there are new items beyond what the spinning threads take:
         * the rest stay asleep. */
        wake = p->n_staged > p->n_spinning ? p->n_staged - p->n_spinning : 0;
        wake = wake < p->n_idle ? wake : p->n_idle;
        if (wake == p->n_idle && wake > 1)
                pthread_cond_broadcast(&p->has_work);
        else
                while (wake-- > 0)
                        pthread_cond_signal(&p->has_work);
        pthread_mutex_unlock(&p->lock);
        p->n_staged = 0;
}

unsigned threadpool_size(ThreadPool *p) {
        return p->n_threads;
}

void threadpool_set_spin(ThreadPool *p, unsigned spin_us) {
        pthread_mutex_lock(&p->lock);
        p->spin_ns = (uint64_t) spin_us * 1000u;
        pthread_mutex_unlock(&p->lock);
}
