/* transferpool: a mutex-guarded inbox filled in batches by the loop, and one thread running a
 * curl multi handle in socket mode over its own epoll set. */
#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "macro.h"
#include "now.h"
#include "transferpool.h"
#include "thread.h"

struct TransferPool {
        /* Loop thread only. */
        WorkList staged; /* of Transfer.work */

        pthread_mutex_t lock; /* guards the inbox */
        WorkList inbox;
        atomic_bool check_cancels;
        atomic_bool stopping;
        atomic_uint_fast64_t pinged, acked; /* the watchdog's ping: see transferpool_ping() */

        /* Transfer thread only, once it runs. */
        Completion *done; /* borrowed: where finished items go */
        CURLM *multi;
        int epoll_fd;
        int wake_fd;          /* eventfd: the inbox, cancels or stopping */
        uint64_t deadline_ns; /* when libcurl wants CURL_SOCKET_TIMEOUT, 0: never */
        Transfer *running;    /* linked through next_running / prev_running */
        Work *finished, *finished_last; /* handed back at the end of the thread's turn */
        pthread_t thread;
        bool thread_started;
};

/* The process's transfer pool, for the watchdog's ping (the daemon runs one). Loop thread. */
static TransferPool *the_pool;

/* CURLMOPT_SOCKETFUNCTION: keeps the epoll set equal to what libcurl waits for. */
static int on_socket(CURL *h, curl_socket_t s, int what, void *userdata, void *socketp) {
        TransferPool *p = userdata;
        struct epoll_event ev = { .data.fd = s };

        if (what == CURL_POLL_REMOVE) {
                (void) epoll_ctl(p->epoll_fd, EPOLL_CTL_DEL, s, NULL); /* may be closed already */
                return 0;
        }
        ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) |
                    ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
        if (epoll_ctl(p->epoll_fd, EPOLL_CTL_MOD, s, &ev) < 0 &&
            (errno != ENOENT || epoll_ctl(p->epoll_fd, EPOLL_CTL_ADD, s, &ev) < 0))
                return -1;
        return 0;
}

/* CURLMOPT_TIMERFUNCTION: -1 removes the timer, 0 means at once. */
static int on_timer(CURLM *m, long timeout_ms, void *userdata) {
        TransferPool *p = userdata;

        p->deadline_ns = timeout_ms < 0 ? 0 : now_ns() + (uint64_t) timeout_ms * 1000000u;
        return 0;
}

/* Queues a finished item; hand_back() returns the whole turn's worth with one wake-up. */
static void finished(TransferPool *p, Transfer *t) {
        t->work.next = p->finished;
        p->finished = &t->work;
        if (!p->finished_last)
                p->finished_last = &t->work;
}

static void hand_back(TransferPool *p) {
        if (!p->finished)
                return;
        completion_push(p->done, p->finished, p->finished_last);
        p->finished = p->finished_last = NULL;
}

/* Takes a running transfer out of the multi handle, finishes it and hands it back. */
static void end_transfer(TransferPool *p, Transfer *t, int result) {
        curl_multi_remove_handle(p->multi, t->handle);
        t->handle = NULL;
        LIST_REMOVE(p->running, t, prev_running, next_running);
        t->finish(t, result);
        finished(p, t);
}

static void start_transfer(TransferPool *p, Transfer *t) {
        CURL *h = t->start(t);

        if (!h) {
                finished(p, t);
                return;
        }
        curl_easy_setopt(h, CURLOPT_PRIVATE, t);
        if (atomic_load(&p->stopping) || curl_multi_add_handle(p->multi, h) != CURLM_OK) {
                t->finish(t, -1);
                finished(p, t);
                return;
        }
        t->handle = h;
        LIST_PREPEND(p->running, t, prev_running, next_running);
}

static void take_inbox(TransferPool *p) {
        WorkList l = {};

        pthread_mutex_lock(&p->lock);
        worklist_splice(&l, &p->inbox);
        pthread_mutex_unlock(&p->lock);
        /* start_transfer() may hand an item back at once, which reuses its `next`. */
        for (Work *w = l.head, *next; w; w = next) {
                next = w->next;
                start_transfer(p, container_of(w, Transfer, work));
        }
}

/* Ends every running transfer whose cancel flag is set, or all of them when stopping. */
static void end_cancelled(TransferPool *p, bool all) {
        Transfer *t = p->running, *next;

        for (; t; t = next) {
                next = t->next_running;
                if (all || atomic_load(t->cancel))
                        end_transfer(p, t, -1);
        }
}

static void read_done(TransferPool *p) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(p->multi, &left))) {
                Transfer *t = NULL;
                if (msg->msg != CURLMSG_DONE)
                        continue;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
                end_transfer(p, t, (int) msg->data.result);
        }
}

static void *thread_main(void *userdata) {
        TransferPool *p = userdata;
        int running;

        for (;;) {
                struct epoll_event events[64];
                uint64_t now;
                int timeout = -1, n;

                if (p->deadline_ns) {
                        now = now_ns();
                        if (p->deadline_ns > now) /* in whole ms, rounded up */
                                timeout = (int) ((p->deadline_ns - now + 999999u) / 1000000u);
                        else
                                timeout = 0;
                }
                n = epoll_wait(p->epoll_fd, events, 64, timeout);
                if (n < 0) {
                        /* Only EINTR can happen here. Whatever it was, leaving would strand every
                         * transfer: look at the timers and the flags again in a moment. */
                        if (errno != EINTR)
                                (void) poll(NULL, 0, 1);
                        n = 0;
                }
                for (int i = 0; i < n; i++) {
                        int fd = events[i].data.fd, flags = 0;
                        if (fd == p->wake_fd) {
                                uint64_t v;
                                (void) !read(p->wake_fd, &v, sizeof v);
                                take_inbox(p);
                                if (atomic_exchange(&p->check_cancels, false))
                                        end_cancelled(p, false);
                                continue;
                        }
                        if (events[i].events & (EPOLLIN | EPOLLHUP))
                                flags |= CURL_CSELECT_IN;
                        if (events[i].events & EPOLLOUT)
                                flags |= CURL_CSELECT_OUT;
                        if (events[i].events & EPOLLERR)
                                flags |= CURL_CSELECT_ERR;
                        curl_multi_socket_action(p->multi, fd, flags, &running);
                }
                if (p->deadline_ns && p->deadline_ns <= now_ns()) {
                        p->deadline_ns = 0;
                        curl_multi_socket_action(p->multi, CURL_SOCKET_TIMEOUT, 0, &running);
                }
                read_done(p);
                /* A turn of this loop is what the watchdog wants to see. */
                atomic_store(&p->acked, atomic_load(&p->pinged));
                if (atomic_load(&p->stopping)) {
                        take_inbox(p);
                        end_cancelled(p, true);
                        hand_back(p);
                        break;
                }
                hand_back(p);
        }
        return NULL;
}

int transferpool_new(TransferPool **ret, Completion *done) {
        struct epoll_event ev = { .events = EPOLLIN };
        TransferPool *p;
        int r;

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        p->done = done;
        p->epoll_fd = p->wake_fd = -1;
        p->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (p->epoll_fd >= 0)
                p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ev.data.fd = p->wake_fd;
        if (p->wake_fd < 0 || epoll_ctl(p->epoll_fd, EPOLL_CTL_ADD, p->wake_fd, &ev) < 0) {
                r = -errno;
                goto fail;
        }
        p->multi = curl_multi_init();
        if (!p->multi) {
                r = -ENOMEM;
                goto fail;
        }
        curl_multi_setopt(p->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(p->multi, CURLMOPT_SOCKETDATA, p);
        curl_multi_setopt(p->multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(p->multi, CURLMOPT_TIMERDATA, p);
        r = thread_start(&p->thread, thread_main, p);
        if (r < 0)
                goto fail;
        p->thread_started = true;
        the_pool = p;
        *ret = p;
        return 0;
fail:
        transferpool_free(p);
        return r;
}

TransferPool *transferpool_free(TransferPool *p) {
        if (!p)
                return NULL;
        if (the_pool == p)
                the_pool = NULL;
        if (p->thread_started) {
                transferpool_flush(p);
                atomic_store(&p->stopping, true);
                transferpool_wake(p);
                pthread_join(p->thread, NULL);
        }
        if (p->multi)
                curl_multi_cleanup(p->multi);
        if (p->wake_fd >= 0)
                close(p->wake_fd);
        if (p->epoll_fd >= 0)
                close(p->epoll_fd);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

void transferpool_submit(TransferPool *p, Transfer *t) {
        worklist_append(&p->staged, &t->work);
}

void transferpool_flush(TransferPool *p) {
        uint64_t one = 1;

        if (!p->staged.head)
                return;
        pthread_mutex_lock(&p->lock);
        worklist_splice(&p->inbox, &p->staged);
        pthread_mutex_unlock(&p->lock);
        (void) !write(p->wake_fd, &one, sizeof one);
}

void transferpool_wake(TransferPool *p) {
        uint64_t one = 1;

        atomic_store(&p->check_cancels, true);
        (void) !write(p->wake_fd, &one, sizeof one);
}

bool transferpool_ping(void) {
        TransferPool *p = the_pool;
        uint64_t one = 1;
        bool answered;

        if (!p)
                return true;
        answered = atomic_load(&p->acked) == atomic_load(&p->pinged);
        atomic_fetch_add(&p->pinged, 1);
        (void) !write(p->wake_fd, &one, sizeof one);
        return answered;
}
