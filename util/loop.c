/* loop: see loop.h.
 *
 * A LoopFile removed during a turn may still have an event in this turn's epoll batch: the loop
 * remembers the files removed in the turn (a short list, cleared every turn) and skips their
 * events, so an owner may free its LoopFile right after loop_remove(). */
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "loop.h"
#include "macro.h"
#include "now.h"

#define MAX_EVENTS 64

struct Loop {
        int epoll_fd;
        LoopFile timer_file;   /* the timerfd, armed for the heap's earliest deadline */
        TimerHeap timers;
        uint64_t armed_for;    /* the deadline the timerfd is set to, 0: disarmed */
        LoopHookFn hook;
        void *hook_data;
        bool hook_more;
        bool quit;
        uint64_t spin_ns;      /* look for events this long before sleeping after a busy turn */
        bool busy;             /* the last turn had events */
        /* This turn's batch, so that loop_remove() can drop events of removed files. */
        struct epoll_event events[MAX_EVENTS];
        int n_events, next_event;
};

static void on_timerfd(LoopFile *lf, uint32_t events) {
        Loop *l = container_of(lf, Loop, timer_file);
        uint64_t expirations;

        (void) events;
        (void) !read(lf->fd, &expirations, sizeof(expirations));
        l->armed_for = 0; /* spent: arm() sets it again whatever the next deadline is */
}

int loop_new(Loop **ret) {
        Loop *l = calloc(1, sizeof(*l));
        int r, fd;

        if (!l)
                return -ENOMEM;
        timer_heap_init(&l->timers);
        loop_file_init(&l->timer_file);
        l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (l->epoll_fd < 0) {
                r = -errno;
                free(l);
                return r;
        }
        fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (fd < 0 || (r = loop_add(l, &l->timer_file, fd, EPOLLIN, on_timerfd)) < 0) {
                r = fd < 0 ? -errno : r;
                if (fd >= 0)
                        close(fd);
                l->timer_file.fd = -1;
                loop_free(l);
                return r;
        }
        *ret = l;
        return 0;
}

Loop *loop_free(Loop *l) {
        if (!l)
                return NULL;
        if (l->timer_file.fd >= 0)
                close(l->timer_file.fd);
        if (l->epoll_fd >= 0)
                close(l->epoll_fd);
        timer_heap_deinit(&l->timers);
        free(l);
        return NULL;
}

int loop_add(Loop *l, LoopFile *lf, int fd, uint32_t events, LoopFileFn fn) {
        struct epoll_event ev = { .events = events, .data.ptr = lf };

        lf->fd = fd;
        lf->fn = fn;
        if (epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                int r = -errno;
                lf->fd = -1;
                return r;
        }
        return 0;
}

void loop_remove(Loop *l, LoopFile *lf) {
        if (lf->fd < 0)
                return;
        (void) epoll_ctl(l->epoll_fd, EPOLL_CTL_DEL, lf->fd, NULL);
        lf->fd = -1;
        /* Drop the file's events still waiting in this turn's batch. */
        for (int i = l->next_event; i < l->n_events; i++)
                if (l->events[i].data.ptr == lf)
                        l->events[i].data.ptr = NULL;
}

TimerHeap *loop_timers(Loop *l) {
        return &l->timers;
}

void loop_set_hook(Loop *l, LoopHookFn fn, void *userdata) {
        l->hook = fn;
        l->hook_data = userdata;
}

void loop_quit(Loop *l) {
        l->quit = true;
}

/* Sets the timerfd to the earliest deadline, when it changed. */
static void arm(Loop *l) {
        Timer *t = timer_peek(&l->timers);
        uint64_t next = t ? MAX(t->deadline, 1u) : 0;
        struct itimerspec its = {};

        if (next == l->armed_for)
                return;
        l->armed_for = next;
        its.it_value.tv_sec = (time_t) (next / 1000000000u);
        its.it_value.tv_nsec = (long) (next % 1000000000u);
        timerfd_settime(l->timer_file.fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void run_timers(Loop *l) {
        uint64_t now = timer_now();
        Timer *t;

        while ((t = timer_pop_due(&l->timers, now)))
                t->fn(t, now);
}

void loop_set_spin(Loop *l, uint64_t spin_ns) {
        l->spin_ns = spin_ns;
}

/* Waits for events as epoll_wait() would; after a busy turn it first looks without sleeping for
 * up to spin_ns (yielding the CPU to anything else runnable), since a client that just got its
 * reply often sends the next request within microseconds, and a sleeping thread takes tens of
 * microseconds to wake up (more on a virtual machine, whose idle CPU the host may take back). */
static int wait_events(Loop *l, int timeout_ms) {
        uint64_t end;
        int n;

        if (l->hook_more || timeout_ms == 0 || !l->busy || l->spin_ns == 0)
                return epoll_wait(l->epoll_fd, l->events, MAX_EVENTS,
                                  l->hook_more ? 0 : timeout_ms);
        end = now_ns() + l->spin_ns;
        do {
                n = epoll_wait(l->epoll_fd, l->events, MAX_EVENTS, 0);
                if (n != 0)
                        return n;
                sched_yield();
        } while (now_ns() < end);
        return epoll_wait(l->epoll_fd, l->events, MAX_EVENTS, timeout_ms);
}

int loop_turn(Loop *l, int timeout_ms) {
        int n;

        arm(l);
        n = wait_events(l, timeout_ms);
        l->busy = n > 0;
        if (n < 0) {
                if (errno != EINTR)
                        return -errno;
                n = 0;
        }
        /* Timers first: work that finishes in this turn's file callbacks is then never expired
         * by a timer of the same turn before the hook has answered its waiters. */
        run_timers(l);
        l->n_events = n;
        for (l->next_event = 0; l->next_event < l->n_events;) {
                struct epoll_event *ev = &l->events[l->next_event++];
                LoopFile *lf = ev->data.ptr;
                if (lf)
                        lf->fn(lf, ev->events);
        }
        l->n_events = l->next_event = 0;
        l->hook_more = l->hook ? l->hook(l->hook_data) : false;
        return 0;
}

int loop_run(Loop *l) {
        l->quit = false;
        while (!l->quit) {
                int r = loop_turn(l, -1);
                if (r < 0)
                        return r;
        }
        return 0;
}
