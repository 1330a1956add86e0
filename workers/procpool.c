/* procpool: see procpool.h.
 *
 * Workers live in a fixed array of slots. A slot goes EMPTY -> STARTING (spawned, no hello yet)
 * -> IDLE <-> BUSY, and to DYING when it is killed, retired or hangs up; a DYING slot becomes
 * EMPTY when its process is reaped, and is refilled at once or, after start-up failures, when the
 * back-off timer fires (WAITING). A slot's socket is registered with the loop exactly while it is
 * open (file.fd >= 0): drop_socket() takes it out of the loop before it closes it, so the loop
 * never reports an event of a closed or reused fd. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
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
        ProcPool *pool;      /* the pool of this slot, for the loop's callback */
        LoopFile file;       /* the socket, registered with the loop; fd -1 when there is none */
        pid_t pid;
        SlotState state;
        uint64_t job;        /* BUSY (or DYING after a crash): the job it holds; 0 if detached */
        unsigned tasks;      /* jobs finished by this process */
        bool said_hello;     /* a death from then on is not a start-up failure */
        bool ended_by_us;    /* killed by procpool_kill or retired: not counted as a death */
        uint64_t respawn_at; /* WAITING: CLOCK_MONOTONIC ns */
};

struct ProcPool {
        Loop *loop;
        char *worker_path;
        unsigned size, max_tasks;
        const ProcPoolCallbacks *cb;
        void *userdata;
        Timer respawn_timer; /* armed for the earliest respawn_at of the WAITING slots */
        unsigned n_idle;
        unsigned start_failures; /* consecutive workers that died before hello */
        uint64_t started, died;
        uint8_t *buf;            /* FRAME_MAX + 1 bytes for receiving */
        Worker workers[];
};

/* Puts the slot in `state` for process `pid` (0: none), with no socket and no job. The slot must
 * have no socket registered any more. */
static void slot_reset(Worker *w, SlotState state, pid_t pid) {
        ProcPool *pool = w->pool;

        *w = (Worker){ .pool = pool, .pid = pid, .state = state };
        loop_file_init(&w->file);
}

static void on_worker_readable(LoopFile *lf, uint32_t events);

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

        slot_reset(w, SLOT_STARTING, pid);
        r = loop_add(p->loop, &w->file, sv[0], EPOLLIN, on_worker_readable);
        if (r < 0) {
                /* Without its socket the worker is of no use. The caller makes the slot WAITING
                 * or tries again, so reap the process here rather than leave a zombie no slot
                 * remembers: it dies at once of SIGKILL. */
                close(sv[0]);
                kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                slot_reset(w, SLOT_EMPTY, 0);
                return r;
        }
        p->started++;
        return 0;

fail_sockets:
        close(sv[0]);
        close(sv[1]);
        return r;
}

/* Arms the back-off timer for the earliest WAITING slot, or disarms it when there is none. */
static void arm_timer(ProcPool *p) {
        TimerHeap *timers = loop_timers(p->loop);
        uint64_t next = 0;

        for (unsigned i = 0; i < p->size; i++)
                if (p->workers[i].state == SLOT_WAITING &&
                    (!next || p->workers[i].respawn_at < next))
                        next = p->workers[i].respawn_at;
        if (next)
                timer_start(timers, &p->respawn_timer, next);
        else
                timer_stop(timers, &p->respawn_timer);
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
        slot_reset(w, SLOT_WAITING, 0);
        w->respawn_at = now_ns() + delay_ms * 1000000u;
        arm_timer(p);
}

/* Takes the worker's socket out of the loop and closes it; the process is reaped later. Its job,
 * if any, stays for on_died. */
static void drop_socket(ProcPool *p, Worker *w) {
        int fd = w->file.fd;

        if (fd >= 0) {
                loop_remove(p->loop, &w->file);
                close(fd);
        }
        if (w->state == SLOT_IDLE)
                p->n_idle--;
}

/* The back-off timer: starts the WAITING slots that are due. */
static void on_respawn_timer(Timer *t, uint64_t now) {
        ProcPool *p = container_of(t, ProcPool, respawn_timer);

        for (unsigned i = 0; i < p->size; i++) {
                Worker *w = &p->workers[i];
                if (w->state == SLOT_WAITING && w->respawn_at <= now) {
                        w->state = SLOT_EMPTY;
                        if (spawn(p, w) < 0)
                                refill(p, w);
                }
        }
        arm_timer(p);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(ProcPool *, procpool_free)

int procpool_new(ProcPool **ret, Loop *loop, const char *worker_path, unsigned size,
                 unsigned max_tasks, const ProcPoolCallbacks *cb, void *userdata) {
        _cleanup_(procpool_freep) ProcPool *p = NULL;
        int r;

        if (access(worker_path, X_OK) < 0)
                return -errno;
        p = calloc(1, sizeof(*p) + size * sizeof(Worker));
        if (!p)
                return -ENOMEM;
        /* What procpool_free() looks at is valid from here on, so it can undo any step. */
        p->loop = loop;
        p->size = size;
        p->max_tasks = max_tasks;
        p->cb = cb;
        p->userdata = userdata;
        for (unsigned i = 0; i < size; i++) {
                p->workers[i].pool = p;
                slot_reset(&p->workers[i], SLOT_EMPTY, 0);
        }
        p->worker_path = strdup(worker_path);
        p->buf = malloc(FRAME_MAX + 1);
        if (!p->worker_path || !p->buf)
                return -ENOMEM;
        r = timer_init(loop_timers(loop), &p->respawn_timer, on_respawn_timer);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < size; i++)
                refill(p, &p->workers[i]);
        *ret = TAKE_PTR(p);
        return 0;
}

ProcPool *procpool_free(ProcPool *p) {
        if (!p)
                return NULL;
        for (unsigned i = 0; i < p->size; i++) {
                Worker *w = &p->workers[i];
                drop_socket(p, w);
                if (w->pid > 0) {
                        kill(w->pid, SIGKILL);
                        waitpid(w->pid, NULL, 0);
                }
        }
        timer_deinit(loop_timers(p->loop), &p->respawn_timer);
        free(p->buf);
        free(p->worker_path);
        free(p);
        return NULL;
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
                w->said_hello = true;
                p->n_idle++;
                p->start_failures = 0;
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
        return;
bad:
        /* A worker that breaks the protocol is killed; the job it held fails as worker_died. */
        fprintf(stderr, "futured: worker %d sent a malformed frame; killing it\n", (int) w->pid);
        kill(w->pid, SIGKILL);
        drop_socket(p, w);
        w->state = SLOT_DYING;
}

/* The loop's callback for a worker's socket: one frame per call (a worker has at most a hello or
 * one reply waiting; the level-triggered loop calls again while more is there), or the hang-up. */
static void on_worker_readable(LoopFile *lf, uint32_t events) {
        Worker *w = container_of(lf, Worker, file);
        ProcPool *p = w->pool;
        ssize_t len;

        len = recv(lf->fd, p->buf, FRAME_MAX + 1, MSG_DONTWAIT | MSG_TRUNC);
        if (len < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (len <= 0) {
                /* Hung up: it is dying or dead; SIGCHLD will tell how. */
                drop_socket(p, w);
                if (w->state != SLOT_DYING)
                        kill(w->pid, SIGKILL);
                w->state = SLOT_DYING;
                return;
        }
        if ((size_t) len > FRAME_MAX)
                len = 0; /* truncated: malformed */
        handle_frame(p, w, (size_t) len);
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

                /* Not `state == SLOT_STARTING`: a worker that exits before its hello has usually
                 * hung up (DYING) by the time SIGCHLD is read, and must still back off. */
                bool before_hello = !w->said_hello;
                uint64_t job = w->job;
                int pid = (int) w->pid;
                int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
                int code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;

                drop_socket(p, w);
                if ((sig || code) && !w->ended_by_us)
                        p->died++;
                if (before_hello)
                        p->start_failures++;
                slot_reset(w, SLOT_EMPTY, 0);
                if (job)
                        p->cb->on_died(p->userdata, job, pid, sig, code);
                refill(p, w);
        }
}

bool procpool_has_idle(const ProcPool *p) {
        return p->n_idle > 0;
}

int procpool_run(ProcPool *p, uint64_t job, const char *kind, const void *args, size_t len,
                 Worker **ret) {
        msgpack_sbuffer sbuf;
        Worker *w = NULL;
        ssize_t n;
        int r;

        if (p->n_idle == 0)
                return -EAGAIN;
        for (unsigned i = 0; i < p->size && !w; i++)
                if (p->workers[i].state == SLOT_IDLE)
                        w = &p->workers[i];
        msgpack_sbuffer_init(&sbuf);
        frame_pack_job(&sbuf, job, kind, args, len);
        if (sbuf.size > FRAME_MAX) {
                msgpack_sbuffer_destroy(&sbuf);
                return -EMSGSIZE;
        }
        n = send(w->file.fd, sbuf.data, sbuf.size, MSG_DONTWAIT | MSG_NOSIGNAL);
        r = n < 0 ? -errno : (size_t) n != sbuf.size ? -EIO : 0;
        msgpack_sbuffer_destroy(&sbuf);
        if (r == -EMSGSIZE)
                return r; /* too big for the socket's buffer: the worker is fine */
        if (r < 0) {
                /* The worker is gone or wedged: treat it as dead; the job stays with the caller.
                 * -EAGAIN stays the answer for "no worker idle". */
                procpool_kill(p, w);
                return r == -EAGAIN ? -EIO : r;
        }
        w->state = SLOT_BUSY;
        w->job = job;
        p->n_idle--;
        *ret = w;
        return 0;
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

unsigned procpool_busy(const ProcPool *p) {
        unsigned n = 0;

        for (unsigned i = 0; i < p->size; i++)
                n += p->workers[i].state == SLOT_BUSY;
        return n;
}

uint64_t procpool_started(const ProcPool *p) {
        return p->started;
}

uint64_t procpool_died(const ProcPool *p) {
        return p->died;
}

void procpool_set_max_tasks(ProcPool *p, unsigned max_tasks) {
        p->max_tasks = max_tasks;
}
