/* threadpool: a mutex-guarded FIFO of work, threads that take from it, and a completion list the
 * loop drains after one eventfd wake-up. The eventfd is written only when the completion list goes
 * from empty to non-empty, so a burst of finished jobs costs the loop one wake-up. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "threadpool.h"

struct ThreadPool {
        pthread_mutex_t lock;
        pthread_cond_t has_work;
        Work *queue_head, *queue_tail; /* submitted, not yet taken */
        Work *done_head, *done_tail;   /* finished, not yet taken back */
        bool stopping;
        int event_fd;
        unsigned n_threads;
        pthread_t threads[];
};

static void *thread_main(void *userdata) {
        ThreadPool *p = userdata;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                Work *w;
                bool wake;

                while (!p->queue_head && !p->stopping)
                        pthread_cond_wait(&p->has_work, &p->lock);
                if (!p->queue_head)
                        break;
                w = p->queue_head;
                p->queue_head = w->next;
                if (!p->queue_head)
                        p->queue_tail = NULL;
                pthread_mutex_unlock(&p->lock);

                w->next = NULL;
                w->run(w);

                pthread_mutex_lock(&p->lock);
                wake = !p->done_head;
                if (p->done_tail)
                        p->done_tail->next = w;
                else
                        p->done_head = w;
                p->done_tail = w;
                if (wake) {
                        uint64_t one = 1;
                        (void) !write(p->event_fd, &one, sizeof one);
                }
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int threadpool_new(ThreadPool **ret, unsigned n_threads) {
        ThreadPool *p;
        sigset_t all, old;
        int r = 0;

        if (n_threads == 0)
                return -EINVAL;
        p = calloc(1, sizeof *p + n_threads * sizeof p->threads[0]);
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->has_work, NULL);
        p->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->event_fd < 0) {
                r = -errno;
                free(p);
                return r;
        }
        /* Signals belong to the loop's signalfd: the threads start with all of them blocked. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        for (; p->n_threads < n_threads; p->n_threads++) {
                r = -pthread_create(&p->threads[p->n_threads], NULL, thread_main, p);
                if (r < 0)
                        break;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
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
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->has_work);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);
        close(p->event_fd);
        pthread_cond_destroy(&p->has_work);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

void threadpool_submit(ThreadPool *p, Work *w) {
        w->next = NULL;
        pthread_mutex_lock(&p->lock);
        if (p->queue_tail)
                p->queue_tail->next = w;
        else
                p->queue_head = w;
        p->queue_tail = w;
        pthread_cond_signal(&p->has_work);
        pthread_mutex_unlock(&p->lock);
}

int threadpool_fd(ThreadPool *p) {
        return p->event_fd;
}

Work *threadpool_take_done(ThreadPool *p) {
        uint64_t v;
        Work *w;

        (void) !read(p->event_fd, &v, sizeof v);
        pthread_mutex_lock(&p->lock);
        w = p->done_head;
        p->done_head = p->done_tail = NULL;
        pthread_mutex_unlock(&p->lock);
        return w;
}

unsigned threadpool_size(ThreadPool *p) {
        return p->n_threads;
}
