/* procpool: see procpool.h.
 *
 * Workers live in a fixed array of slots. A slot goes EMPTY -> STARTING (spawned, no hello yet)
 * -> IDLE <-> BUSY, and to DYING when it is killed, retired or hangs up; a DYING slot becomes
 * EMPTY when its process is reaped, and is refilled at once or, after start-up failures, when the
 * back-off timer fires (WAITING). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "macro.h"
#include "now.h"
#include "procpool.h"

extern char **environ;

typedef enum SlotState {
        SLOT_EMPTY,
        SLOT_WAITING,
        SLOT_STARTING,
        SLOT_IDLE,
        SLOT_BUSY,
        SLOT_DYING,
} SlotState;

struct Worker {
        pid_t pid;
        int fd;
        SlotState state;
        uint64_t job;       /* BUSY (or DYING after a crash): the job it holds; 0 if detached */
        unsigned tasks;     /* jobs finished by this process */
        bool ended_by_us;   /* killed by procpool_kill or retired: not counted as a death */
        uint64_t respawn_at; /* WAITING: CLOCK_MONOTONIC ns */
};

struct ProcPool {
        char *worker_path;
        unsigned size, max_tasks;
        const ProcPoolCallbacks *cb;
        void *userdata;
        int epoll_fd, timer_fd;
        unsigned n_idle;
        unsigned start_failures; /* consecutive workers that died before hello */
        uint64_t started, died;
        uint8_t *buf;            /* FRAME_MAX + 1 bytes for receiving */
        Worker workers[];
};

static int spawn(ProcPool *p, Worker *w) {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, all;
        char parent[32];
        int sv[2], r;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
                return -errno;
        /* The child end is blocking: the worker waits for jobs. */
        if (fcntl(sv[1], F_SETFL, 0) < 0) {
                r = -errno;
                goto fail_sockets;
        }
        snprintf(parent, sizeof(parent), "%d", (int) getpid());
        char *argv[] = { p->worker_path, (char *) "--fd", (char *) "3", (char *) "--parent", parent,
                         NULL };

        sigemptyset(&none);
        sigfillset(&all);
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
        posix_spawn_file_actions_addclosefrom_np(&fa, 4);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        r = -posix_spawn(&pid, p->worker_path, &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (r < 0)
                goto fail_sockets;
        close(sv[1]);

        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = w };
        if (epoll_ctl(p->epoll_fd, EPOLL_CTL_ADD, sv[0], &ev) < 0) {
                r = -errno;
                close(sv[0]);
                kill(pid, SIGKILL);
                /* The slot still owns the pid so that it is reaped. */
                *w = (Worker){ .pid = pid, .fd = -1, .state = SLOT_DYING };
                return r;
        }
        *w = (Worker){ .pid = pid, .fd = sv[0], .state = SLOT_STARTING };
        p->started++;
        return 0;

fail_sockets:
        close(sv[0]);
        close(sv[1]);
        return r;
}

static void arm_timer(ProcPool *p) {
        uint64_t next = 0;
        struct itimerspec its = {};

        for (unsigned i = 0; i < p->size; i++)
                if (p->workers[i].state == SLOT_WAITING &&
                    (!next || p->workers[i].respawn_at < next))
                        next = p->workers[i].respawn_at;
        if (next) {
                its.it_value.tv_sec = (time_t) (next / 1000000000u);
                its.it_value.tv_nsec = (long) (next % 1000000000u);
        }
        timerfd_settime(p->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Fills an EMPTY slot now, or marks it WAITING for the back-off time. */
static void refill(ProcPool *p, Worker *w) {
        uint64_t delay_ms = 0;

        if (p->start_failures > 0)
                delay_ms = MIN(10ull << MIN(p->start_failures, 10u), 5000ull);
        if (delay_ms == 0 && spawn(p, w) >= 0)
                return;
        if (delay_ms == 0) {
                fprintf(stderr, "futured: cannot start %s: %m\n", p->worker_path);
                p->start_failures++;
                delay_ms = 10;
        }
        *w = (Worker){ .fd = -1, .state = SLOT_WAITING, .respawn_at = now_ns() + delay_ms * 1000000u };
        arm_timer(p);
}

/* Closes the worker's socket; the process is reaped later. Its job, if any, stays for on_died. */
static void drop_socket(ProcPool *p, Worker *w) {
        if (w->fd >= 0) {
                epoll_ctl(p->epoll_fd, EPOLL_CTL_DEL, w->fd, NULL);
                close(w->fd);
                w->fd = -1;
        }
        if (w->state == SLOT_IDLE)
                p->n_idle--;
}

int procpool_new(ProcPool **ret, const char *worker_path, unsigned size, unsigned max_tasks,
                 const ProcPoolCallbacks *cb, void *userdata) {
        ProcPool *p;

        if (access(worker_path, X_OK) < 0)
                return -errno;
        p = calloc(1, sizeof(*p) + size * sizeof(Worker));
        if (!p)
                return -ENOMEM;
        p->size = size;
        p->max_tasks = max_tasks;
        p->cb = cb;
        p->userdata = userdata;
        p->worker_path = strdup(worker_path);
        p->buf = malloc(FRAME_MAX + 1);
        p->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        p->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (!p->worker_path || !p->buf || p->epoll_fd < 0 || p->timer_fd < 0) {
                int r = p->worker_path && p->buf ? -errno : -ENOMEM;
                procpool_free(p);
                return r;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
        epoll_ctl(p->epoll_fd, EPOLL_CTL_ADD, p->timer_fd, &ev);
        for (unsigned i = 0; i < size; i++) {
                p->workers[i] = (Worker){ .fd = -1 };
                refill(p, &p->workers[i]);
        }
        *ret = p;
        return 0;
}

ProcPool *procpool_free(ProcPool *p) {
        if (!p)
                return NULL;
        for (unsigned i = 0; i < p->size; i++) {
                Worker *w = &p->workers[i];
                if (w->fd >= 0)
                        close(w->fd);
                if (w->pid > 0) {
                        kill(w->pid, SIGKILL);
                        waitpid(w->pid, NULL, 0);
                }
        }
        if (p->epoll_fd >= 0)
                close(p->epoll_fd);
        if (p->timer_fd >= 0)
                close(p->timer_fd);
        free(p->buf);
        free(p->worker_path);
        free(p);
        return NULL;
}

int procpool_fd(ProcPool *p) {
        return p->epoll_fd;
}

void procpool_kill(ProcPool *p, Worker *w) {
        if (w->pid <= 0 || w->state == SLOT_DYING)
                return;
        kill(w->pid, SIGKILL);
        drop_socket(p, w);
        w->job = 0;
        w->state = SLOT_DYING;
        w->ended_by_us = true;
}

/* Retires a worker that reached max_tasks: closing its socket makes it exit cleanly. */
static void retire(ProcPool *p, Worker *w) {
        drop_socket(p, w);
        w->state = SLOT_DYING;
        w->ended_by_us = true;
}

static void handle_frame(ProcPool *p, Worker *w, size_t len) {
        FrameHeader h;

        if (frame_parse(p->buf, len, &h) < 0)
                goto bad;
        if (h.hello) {
                if (w->state != SLOT_STARTING || (pid_t) h.hello != w->pid)
                        goto bad;
                w->state = SLOT_IDLE;
                p->n_idle++;
                p->start_failures = 0;
                p->cb->on_idle(p->userdata);
                return;
        }
        if (w->state != SLOT_BUSY || h.job != w->job)
                goto bad;
        w->job = 0;
        w->tasks++;
        if (p->max_tasks && w->tasks >= p->max_tasks)
                retire(p, w);
        else {
                w->state = SLOT_IDLE;
                p->n_idle++;
        }
        p->cb->on_result(p->userdata, h.job, h.ok, h.payload, h.payload_len);
        p->cb->on_idle(p->userdata);
        return;
bad:
        /* A worker that breaks the protocol is killed; the job it held fails as worker_died. */
        fprintf(stderr, "futured: worker %d sent a malformed frame; killing it\n", (int) w->pid);
        kill(w->pid, SIGKILL);
        drop_socket(p, w);
        w->state = SLOT_DYING;
}

static void respawn_due(ProcPool *p) {
        uint64_t now = now_ns(), expirations;

        (void) !read(p->timer_fd, &expirations, sizeof(expirations));
        for (unsigned i = 0; i < p->size; i++)
                if (p->workers[i].state == SLOT_WAITING && p->workers[i].respawn_at <= now) {
                        p->workers[i].state = SLOT_EMPTY;
                        if (spawn(p, &p->workers[i]) < 0)
                                refill(p, &p->workers[i]);
                }
        arm_timer(p);
}

void procpool_dispatch(ProcPool *p) {
        struct epoll_event events[16];
        int n;

        while ((n = epoll_wait(p->epoll_fd, events, ELEMENTSOF(events), 0)) > 0) {
                for (int i = 0; i < n; i++) {
                        Worker *w = events[i].data.ptr;
                        if (!w) {
                                respawn_due(p);
                                continue;
                        }
                        if (w->fd < 0)
                                continue; /* dropped earlier in this batch */
                        ssize_t len = recv(w->fd, p->buf, FRAME_MAX + 1, MSG_DONTWAIT | MSG_TRUNC);
                        if (len < 0 && (errno == EAGAIN || errno == EINTR))
                                continue;
                        if (len <= 0) {
                                /* Hung up: it is dying or dead; SIGCHLD will tell how. */
                                drop_socket(p, w);
                                if (w->state != SLOT_DYING)
                                        kill(w->pid, SIGKILL);
                                w->state = SLOT_DYING;
                                continue;
                        }
                        if ((size_t) len > FRAME_MAX)
                                len = 0; /* truncated: malformed */
                        handle_frame(p, w, (size_t) len);
                }
        }
}

void procpool_reap(ProcPool *p) {
        for (unsigned i = 0; i < p->size; i++) {
                Worker *w = &p->workers[i];
                int status;
                pid_t r;

                if (w->pid <= 0)
                        continue;
                r = waitpid(w->pid, &status, WNOHANG);
                if (r != w->pid)
                        continue;

                bool before_hello = w->state == SLOT_STARTING;
                uint64_t job = w->job;
                int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
                int code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;

                drop_socket(p, w);
                if ((sig || code) && !w->ended_by_us)
                        p->died++;
                if (before_hello)
                        p->start_failures++;
                *w = (Worker){ .fd = -1, .state = SLOT_EMPTY };
                if (job)
                        p->cb->on_died(p->userdata, job, sig, code);
                refill(p, w);
        }
}

bool procpool_has_idle(const ProcPool *p) {
        return p->n_idle > 0;
}

Worker *procpool_run(ProcPool *p, uint64_t job, const char *kind, const void *args, size_t len) {
        msgpack_sbuffer sbuf;
        Worker *w = NULL;

        if (p->n_idle == 0) {
                errno = EAGAIN;
                return NULL;
        }
        for (unsigned i = 0; i < p->size && !w; i++)
                if (p->workers[i].state == SLOT_IDLE)
                        w = &p->workers[i];
        msgpack_sbuffer_init(&sbuf);
        frame_pack_job(&sbuf, job, kind, args, len);
        if (sbuf.size > FRAME_MAX) {
                msgpack_sbuffer_destroy(&sbuf);
                errno = EMSGSIZE;
                return NULL;
        }
        if (send(w->fd, sbuf.data, sbuf.size, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t) sbuf.size) {
                /* The worker is gone or wedged: treat it as dead; the job stays with the caller. */
                int saved = errno;
                msgpack_sbuffer_destroy(&sbuf);
                procpool_kill(p, w);
                errno = saved ? saved : EIO;
                return NULL;
        }
        msgpack_sbuffer_destroy(&sbuf);
        w->state = SLOT_BUSY;
        w->job = job;
        p->n_idle--;
        return w;
}

unsigned procpool_size(const ProcPool *p) {
        return p->size;
}

unsigned procpool_alive(const ProcPool *p) {
        unsigned n = 0;

        for (unsigned i = 0; i < p->size; i++)
                n += p->workers[i].state == SLOT_IDLE || p->workers[i].state == SLOT_BUSY;
        return n;
}

uint64_t procpool_started(const ProcPool *p) {
        return p->started;
}

uint64_t procpool_died(const ProcPool *p) {
        return p->died;
}
