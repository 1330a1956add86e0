/* daemon: see daemon.h. This file holds the event loop and the life of a future from dispatch to
 * expiry; request.c decodes what clients ask and waiter.c holds deferred replies.
 *
 * The loop waits in epoll on: the ROUTER socket's ZMQ_FD (edge-triggered, so ZMQ_EVENTS is
 * re-checked after every turn), a signalfd (SIGTERM, SIGINT, SIGCHLD), one timerfd armed for the
 * earliest deadline (job timeouts, deferred-reply timeouts, the shutdown grace period, the next
 * expiry), the thread pool's completion eventfd, and the process pool's epoll fd. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <zmq.h>

#include "daemon.h"
#include "download.h"
#include "frame.h"
#include "macro.h"
#include "waiter.h"

enum {
        TAG_ROUTER = 1,
        TAG_SIGNAL,
        TAG_TIMER,
        TAG_THREADS,
        TAG_PROCESSES,
};

/* How many requests one loop turn reads before it looks at the other fds again. */
#define ROUTER_BATCH 256

/* Progress events of running thread jobs go out at most this often per job. */
#define PROGRESS_INTERVAL_NS 250000000u

/* A thread-pool or transfer-pool job: the item handed to a pool thread, with everything that
 * thread needs so that it never touches the Future (which may be cancelled and released
 * meanwhile). */
struct ThreadJob {
        Transfer xfer;          /* xfer.work is what either pool hands back */
        ThreadJob *prev, *next; /* in d->thread_jobs */
        _Atomic uint64_t progress_done, progress_total;
        uint64_t progress_sent; /* progress_done when the last event went out */
        uint64_t id;
        const JobKind *kind;
        atomic_int cancel;
        _Atomic uint64_t started_ns; /* timer_now() when a thread took it; 0 while queued */
        bool announced;              /* its `running` event went out */
        uint8_t *args; /* taken from the future */
        uint32_t args_len;
        JobContext ctx;
        void *state;   /* a transfer kind's, between start() and finish() */
        int rc;
        msgpack_sbuffer out; /* the result map (rc >= 0) or the failure map */
};

/* The start shared by both pools, on their thread: marks the job taken and decodes its arguments
 * into `args` (the caller destroys it). Returns false with `failure` filled when the job must not
 * run. */
static bool job_begin(ThreadJob *tj, msgpack_unpacked *args, JobFailure *failure) {
        tj->ctx = (JobContext){
                .cancel = &tj->cancel,
                .progress_done = &tj->progress_done,
                .progress_total = &tj->progress_total,
        };
        msgpack_unpacked_init(args);
        msgpack_sbuffer_init(&tj->out);
        atomic_store(&tj->started_ns, timer_now());
        if (atomic_load(&tj->cancel)) /* cancelled while it waited in the pool's queue */
                tj->rc = job_failure(failure, PROTO_F_CANCELLED, "cancelled before it started");
        else if (msgpack_unpack_next(args, (const char *) tj->args, tj->args_len, NULL) !=
                 MSGPACK_UNPACK_SUCCESS)
                tj->rc = job_failure(failure, PROTO_F_INTERNAL, "cannot decode the arguments");
        else
                return true;
        return false;
}

/* Packs the failure in place of anything packed so far, when tj->rc says the job failed. */
static void job_end(ThreadJob *tj, const JobFailure *failure) {
        msgpack_packer pk;

        if (tj->rc >= 0)
                return;
        tj->out.size = 0;
        msgpack_packer_init(&pk, &tj->out, msgpack_sbuffer_write);
        frame_pack_failure(&pk, failure);
}

static void thread_job_run(Work *w) {
        ThreadJob *tj = container_of(w, ThreadJob, xfer.work);
        JobFailure failure = {};
        msgpack_unpacked args;
        msgpack_packer pk;

        if (job_begin(tj, &args, &failure)) {
                msgpack_packer_init(&pk, &tj->out, msgpack_sbuffer_write);
                tj->rc = tj->kind->run(&args.data, &tj->ctx, &pk, &failure);
        }
        job_end(tj, &failure);
        msgpack_unpacked_destroy(&args);
}

static void *transfer_job_start(Transfer *t) {
        ThreadJob *tj = container_of(t, ThreadJob, xfer);
        JobFailure failure = {};
        msgpack_unpacked args;
        void *handle = NULL;

        if (job_begin(tj, &args, &failure)) {
                handle = tj->kind->start(&args.data, &tj->ctx, &tj->state, &failure);
                if (!handle)
                        tj->rc = -EIO;
        }
        job_end(tj, &failure);
        msgpack_unpacked_destroy(&args);
        return handle;
}

static void transfer_job_finish(Transfer *t, int result) {
        ThreadJob *tj = container_of(t, ThreadJob, xfer);
        JobFailure failure = {};
        msgpack_packer pk;

        msgpack_packer_init(&pk, &tj->out, msgpack_sbuffer_write);
        tj->rc = tj->kind->finish(TAKE_PTR(tj->state), result, &pk, &failure);
        job_end(tj, &failure);
}

static void thread_job_free(ThreadJob *tj) {
        free(tj->args);
        msgpack_sbuffer_destroy(&tj->out);
        free(tj);
}

FutureState daemon_visible_state(Daemon *d, Future *f) {
        /* A thread job the pool has queued (prefetch) but no thread has taken is still waiting:
         * clients see it pending until it really runs. */
        if (f->state == STATE_RUNNING && f->kind->pool != POOL_PROCESS && f->runner &&
            atomic_load(&((ThreadJob *) f->runner)->started_ns) == 0)
                return STATE_PENDING;
        return f->state;
}

unsigned daemon_thread_jobs_queued(Daemon *d) {
        unsigned n = 0;

        /* Only items whose future still counts as running: a cancelled or timed-out future's
         * item stays queued until a thread takes and drops it, but is no longer running. */
        for (ThreadJob *tj = d->thread_jobs; tj; tj = tj->next) {
                Future *f;
                if (atomic_load(&tj->started_ns) != 0)
                        continue;
                f = table_get(&d->table, tj->id);
                n += f && f->state == STATE_RUNNING && f->runner == tj;
        }
        return n;
}

FutureState daemon_state_of(Daemon *d, uint64_t id) {
        Future *f = table_get(&d->table, id);

        if (f)
                return daemon_visible_state(d, f);
        return table_issued(&d->table, id) ? STATE_EXPIRED : STATE_UNKNOWN;
}

void daemon_set_state(Daemon *d, Future *f, FutureState state) {
        d->n_state[f->state]--;
        d->n_state[state]++;
        f->state = state;
}

void daemon_publish(Daemon *d, const Future *f) {
        const char *state = proto_state_name(f->state);
        const char *group = f->group ? f->group->name : "";
        char topic[32 + PROTO_MAX_GROUP];
        bool failure = f->state == STATE_FAILED && f->outcome;
        msgpack_packer pk;
        int n;

        n = snprintf(topic, sizeof(topic), "%s/%s", state, group);
        d->out.size = 0;
        msgpack_packer_init(&pk, &d->out, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4 + failure);
        proto_pack_str(&pk, "id");
        msgpack_pack_uint64(&pk, f->id);
        proto_pack_str(&pk, "state");
        proto_pack_str(&pk, state);
        proto_pack_str(&pk, "kind");
        proto_pack_str(&pk, f->kind->name);
        proto_pack_str(&pk, "group");
        proto_pack_str(&pk, group);
        if (failure) {
                proto_pack_str(&pk, "failure");
                msgpack_sbuffer_write(&d->out, (const char *) f->outcome, f->outcome_len);
        }
        if (zmq_send(d->pub, topic, (size_t) n, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
                zmq_send(d->pub, d->out.data, d->out.size, ZMQ_DONTWAIT);
}

static int retain(Daemon *d, uint64_t id) {
        if (d->retained_len == d->retained_cap) {
                size_t cap = d->retained_cap ? d->retained_cap * 2 : 1024;
                Retained *r = malloc(cap * sizeof(*r));
                if (!r)
                        return -ENOMEM;
                for (size_t i = 0; i < d->retained_len; i++)
                        r[i] = d->retained[(d->retained_head + i) % d->retained_cap];
                free(d->retained);
                d->retained = r;
                d->retained_cap = cap;
                d->retained_head = 0;
        }
        d->retained[(d->retained_head + d->retained_len++) % d->retained_cap] = (Retained){
                .id = id,
                .deadline = timer_now() + (uint64_t) (d->cfg.retain * 1e9),
        };
        return 0;
}

void daemon_finish(Daemon *d, Future *f, FutureState state, uint8_t *outcome, uint32_t outcome_len) {
        bool was_running = f->state == STATE_RUNNING;

        timer_stop(&d->timers, &f->timeout);
        if (f->heap_pos)
                scheduler_remove(&d->sched, f);
        if (was_running)
                scheduler_stopped(&d->sched, f);
        d->n_state[f->state]--;
        d->n_state[state]++;
        future_finish(f, state, outcome, outcome_len);
        d->finished++;
        /* Without room in the retention queue the future stays until released: safer than
         * dropping a result nobody has read. */
        (void) retain(d, f->id);
        daemon_publish(d, f);
        waiter_future_finished(d, f);
}

void daemon_fail(Daemon *d, Future *f, const char *code, const char *message, int signal,
                 int exit_status) {
        JobFailure failure = { .code = code, .signal = signal, .exit_status = exit_status };
        msgpack_sbuffer sbuf;
        msgpack_packer pk;

        snprintf(failure.message, sizeof(failure.message), "%s", message);
        msgpack_sbuffer_init(&sbuf);
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        frame_pack_failure(&pk, &failure);
        daemon_finish(d, f, STATE_FAILED, (uint8_t *) sbuf.data, (uint32_t) sbuf.size);
}

bool daemon_cancel(Daemon *d, Future *f, FutureState state, const char *code) {
        if (proto_state_final(f->state))
                return false;
        if (f->state == STATE_RUNNING && f->runner) {
                if (f->kind->pool == POOL_PROCESS)
                        procpool_kill(d->ppool, f->runner);
                else
                        atomic_store(&((ThreadJob *) f->runner)->cancel, 1);
                if (f->kind->pool == POOL_TRANSFER)
                        d->transfers_cancelled = true; /* daemon_dispatch() wakes the thread */
        }
        if (state == STATE_CANCELLED)
                daemon_finish(d, f, STATE_CANCELLED, NULL, 0);
        else {
                char message[128];
                if (strcmp(code, PROTO_F_TIMEOUT) == 0)
                        snprintf(message, sizeof(message), "the job ran longer than its %.3f s timeout",
                                 f->timeout_ms / 1000.0);
                else
                        snprintf(message, sizeof(message), "futured stopped before the job finished");
                daemon_fail(d, f, code, message, 0, 0);
        }
        return true;
}

void daemon_expire(Daemon *d, Future *f) {
        table_steal(&d->table, f->id);
        d->n_state[f->state]--;
        scheduler_group_unref(&d->sched, f->group);
        f->group = NULL;
        future_free(f);
}

/* `announce`: publish the `running` event now; a prefetched thread job is announced by the
 * progress tick once a thread has taken it instead. */
static void start_running(Daemon *d, Future *f, void *runner, bool announce) {
        f->runner = runner;
        daemon_set_state(d, f, STATE_RUNNING);
        if (f->timeout_ms)
                (void) timer_start(&d->timers, &f->timeout,
                                   timer_now() + (uint64_t) f->timeout_ms * 1000000u);
        if (announce)
                daemon_publish(d, f);
}

static void start_thread_job(Daemon *d, Future *f) {
        ThreadJob *tj = calloc(1, sizeof(*tj));

        if (!tj) {
                scheduler_stopped(&d->sched, f);
                daemon_fail(d, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
                return;
        }
        tj->xfer.work.run = thread_job_run;
        tj->xfer.start = transfer_job_start;
        tj->xfer.finish = transfer_job_finish;
        tj->xfer.cancel = &tj->cancel;
        tj->id = f->id;
        tj->kind = f->kind;
        tj->args = TAKE_PTR(f->args);
        tj->args_len = f->args_len;
        f->args_len = 0;
        if (f->kind->pool == POOL_TRANSFER) {
                tj->announced = true; /* it starts as soon as the transfer thread looks */
                d->transfers_busy++;
        } else {
                tj->announced = d->threads_busy < d->cfg.threads; /* a thread is free for it */
                d->threads_busy++;
        }
        LIST_PREPEND(d->thread_jobs, tj, prev, next);
        if (!timer_armed(&d->progress))
                (void) timer_start(&d->timers, &d->progress, timer_now() + PROGRESS_INTERVAL_NS);
        start_running(d, f, tj, tj->announced);
        if (f->kind->pool == POOL_TRANSFER)
                transferpool_submit(d->xpool, &tj->xfer);
        else
                threadpool_submit(d->tpool, &tj->xfer.work);
}

static void start_process_job(Daemon *d, Future *f) {
        Worker *w = procpool_run(d->ppool, f->id, f->kind->name, f->args, f->args_len);

        if (!w) {
                int r = errno;
                scheduler_stopped(&d->sched, f);
                if (r == EMSGSIZE)
                        daemon_fail(d, f, PROTO_F_INTERNAL, "the job is too large for a worker", 0, 0);
                else
                        (void) scheduler_push(&d->sched, f); /* the worker died under us: again */
                return;
        }
        start_running(d, f, w, true);
}

void daemon_dispatch(Daemon *d) {
        Future *f;

        /* One wake-up for however many transfers this turn cancelled or timed out. */
        if (d->transfers_cancelled) {
                d->transfers_cancelled = false;
                transferpool_wake(d->xpool);
        }
        if (d->stopping)
                return;
        while (d->threads_busy < d->cfg.threads + d->cfg.prefetch &&
               (f = scheduler_pop(&d->sched, POOL_THREAD)))
                start_thread_job(d, f);
        threadpool_flush(d->tpool);
        while (d->transfers_busy < d->cfg.transfers &&
               (f = scheduler_pop(&d->sched, POOL_TRANSFER)))
                start_thread_job(d, f);
        transferpool_flush(d->xpool);
        while (procpool_has_idle(d->ppool) && (f = scheduler_pop(&d->sched, POOL_PROCESS)))
                start_process_job(d, f);
}

/* Takes a job its pool handed back out of the daemon's books; the caller frees it. */
static ThreadJob *thread_job_returned(Daemon *d, Work *w) {
        ThreadJob *tj = container_of(w, ThreadJob, xfer.work);

        if (tj->kind->pool == POOL_TRANSFER)
                d->transfers_busy--;
        else
                d->threads_busy--;
        LIST_REMOVE(d->thread_jobs, tj, prev, next);
        return tj;
}

static void on_threads_done(Daemon *d) {
        Work *w = threadpool_take_done(d->tpool), *next;

        for (; w; w = next) {
                ThreadJob *tj;
                Future *f;
                next = w->next;
                tj = thread_job_returned(d, w);
                f = table_get(&d->table, tj->id);
                if (f && f->state == STATE_RUNNING && f->runner == tj) {
                        uint32_t len = (uint32_t) tj->out.size;
                        uint8_t *outcome = proto_sbuffer_take(&tj->out);
                        daemon_finish(d, f, tj->rc >= 0 ? STATE_DONE : STATE_FAILED, outcome, len);
                }
                thread_job_free(tj);
        }
}

static void on_worker_result(void *userdata, uint64_t job, bool ok, const uint8_t *payload,
                             size_t payload_len) {
        Daemon *d = userdata;
        Future *f = table_get(&d->table, job);
        uint8_t *outcome;

        if (!f || f->state != STATE_RUNNING)
                return;
        outcome = malloc(payload_len);
        if (!outcome) {
                daemon_fail(d, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
                return;
        }
        memcpy(outcome, payload, payload_len);
        daemon_finish(d, f, ok ? STATE_DONE : STATE_FAILED, outcome, (uint32_t) payload_len);
}

static void on_worker_died(void *userdata, uint64_t job, int signal, int exit_status) {
        Daemon *d = userdata;
        Future *f = table_get(&d->table, job);
        char message[160];

        if (!f || f->state != STATE_RUNNING)
                return;
        f->deaths++;
        if (f->retries > 0 && f->deaths < FUTURE_MAX_DEATHS && !d->stopping) {
                /* Run it again on another worker. */
                f->retries--;
                f->runner = NULL;
                timer_stop(&d->timers, &f->timeout);
                scheduler_stopped(&d->sched, f);
                daemon_set_state(d, f, STATE_PENDING);
                if (scheduler_push(&d->sched, f) >= 0) {
                        daemon_publish(d, f);
                        return;
                }
                /* No memory to queue it again: it fails below, from pending. */
        }
        if (signal)
                snprintf(message, sizeof(message), "the worker process died of signal %d (%s)",
                         signal, strsignal(signal));
        else
                snprintf(message, sizeof(message), "the worker process exited with status %d",
                         exit_status);
        daemon_fail(d, f, PROTO_F_WORKER_DIED, message, signal, exit_status);
}

static void on_worker_idle(void *userdata) {
        daemon_dispatch(userdata);
}

static const ProcPoolCallbacks procpool_callbacks = {
        .on_result = on_worker_result,
        .on_died = on_worker_died,
        .on_idle = on_worker_idle,
};

/* Publishes a progress event for each running thread job whose byte count moved, and re-arms
 * itself while thread jobs run. The counters are written by the pool threads; reading them here
 * is the whole hand-off, so progress costs no wake-ups. */
static void publish_progress(Daemon *d) {
        for (ThreadJob *tj = d->thread_jobs; tj; tj = tj->next) {
                uint64_t done = atomic_load(&tj->progress_done);
                Future *f = table_get(&d->table, tj->id);
                char topic[16 + PROTO_MAX_GROUP];
                msgpack_packer pk;
                int n;

                if (!f || f->state != STATE_RUNNING || f->runner != tj)
                        continue;
                if (!tj->announced && atomic_load(&tj->started_ns)) {
                        tj->announced = true;
                        daemon_publish(d, f);
                }
                if (done == tj->progress_sent)
                        continue;
                tj->progress_sent = done;
                n = snprintf(topic, sizeof(topic), "progress/%s", f->group ? f->group->name : "");
                d->out.size = 0;
                msgpack_packer_init(&pk, &d->out, msgpack_sbuffer_write);
                msgpack_pack_map(&pk, 6);
                proto_pack_str(&pk, "id");
                msgpack_pack_uint64(&pk, f->id);
                proto_pack_str(&pk, "state");
                proto_pack_str(&pk, "running");
                proto_pack_str(&pk, "kind");
                proto_pack_str(&pk, f->kind->name);
                proto_pack_str(&pk, "group");
                proto_pack_str(&pk, f->group ? f->group->name : "");
                proto_pack_str(&pk, "bytes");
                msgpack_pack_uint64(&pk, done);
                proto_pack_str(&pk, "total");
                msgpack_pack_uint64(&pk, atomic_load(&tj->progress_total));
                if (zmq_send(d->pub, topic, (size_t) n, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
                        zmq_send(d->pub, d->out.data, d->out.size, ZMQ_DONTWAIT);
        }
        if (d->thread_jobs)
                (void) timer_start(&d->timers, &d->progress, timer_now() + PROGRESS_INTERVAL_NS);
}

/* Drops finished futures whose retention time has run out. */
static void expire_due(Daemon *d, uint64_t now) {
        while (d->retained_len > 0) {
                Retained *r = &d->retained[d->retained_head];
                Future *f;
                if (r->deadline > now)
                        break;
                f = table_get(&d->table, r->id);
                if (f && proto_state_final(f->state))
                        daemon_expire(d, f);
                d->retained_head = (d->retained_head + 1) % d->retained_cap;
                d->retained_len--;
        }
}

static void arm_timerfd(Daemon *d) {
        struct itimerspec its = {};
        Timer *t = timer_peek(&d->timers);
        uint64_t next = t ? t->deadline : 0;

        if (d->retained_len > 0) {
                uint64_t r = d->retained[d->retained_head].deadline;
                if (!next || r < next)
                        next = r;
        }
        if (next) {
                next = MAX(next, 1u);
                its.it_value.tv_sec = (time_t) (next / 1000000000u);
                its.it_value.tv_nsec = (long) (next % 1000000000u);
        }
        timerfd_settime(d->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Ends the shutdown: whatever still runs is stopped; the loop then exits. */
static void finish_shutdown(Daemon *d) {
        for (uint64_t id = d->table.base; id < d->table.next_id; id++) {
                Future *f = table_get(&d->table, id);
                if (f && f->state == STATE_RUNNING)
                        daemon_cancel(d, f, STATE_FAILED, PROTO_F_SHUTDOWN);
        }
        d->quit = true;
}

static void begin_shutdown(Daemon *d) {
        if (d->stopping)
                return;
        unsigned queued = daemon_thread_jobs_queued(d);

        fprintf(stderr, "futured: shutting down; %" PRIu64 " jobs running, %" PRIu64
                        " pending are cancelled\n",
                d->n_state[STATE_RUNNING] - queued, d->n_state[STATE_PENDING] + queued);
        d->stopping = true;
        /* Pending work never starts now, including thread jobs prefetched into the pool that no
         * thread has taken yet (clients see them pending). Running work gets the grace period. */
        for (uint64_t id = d->table.base; id < d->table.next_id; id++) {
                Future *f = table_get(&d->table, id);
                if (f && daemon_visible_state(d, f) == STATE_PENDING)
                        daemon_cancel(d, f, STATE_CANCELLED, NULL);
        }
        d->grace.kind = TIMER_GRACE;
        (void) timer_start(&d->timers, &d->grace, timer_now() + (uint64_t) (d->cfg.grace * 1e9));
}

/* A job's timeout counts its running time only: a thread job that waited in the pool's queue
 * (prefetch) gets its full time from the moment a thread took it. */
static void on_job_timeout(Daemon *d, Future *f, uint64_t now) {
        uint64_t limit = (uint64_t) f->timeout_ms * 1000000u;

        if (f->state == STATE_RUNNING && f->kind->pool != POOL_PROCESS && f->runner) {
                uint64_t started = atomic_load(&((ThreadJob *) f->runner)->started_ns);
                uint64_t due = started ? started + limit : now + limit;
                if (due > now) {
                        (void) timer_start(&d->timers, &f->timeout, due);
                        return;
                }
        }
        daemon_cancel(d, f, STATE_FAILED, PROTO_F_TIMEOUT);
}

static void on_timers(Daemon *d) {
        uint64_t now = timer_now(), expirations;
        Timer *t;

        (void) !read(d->timer_fd, &expirations, sizeof(expirations));
        while ((t = timer_pop_due(&d->timers, now))) {
                switch (t->kind) {
                case TIMER_JOB_TIMEOUT:
                        on_job_timeout(d, container_of(t, Future, timeout), now);
                        break;
                case TIMER_WAITER:
                        waiter_timeout(d, t);
                        break;
                case TIMER_GRACE:
                        finish_shutdown(d);
                        break;
                case TIMER_PROGRESS:
                        publish_progress(d);
                        break;
                }
        }
        expire_due(d, now);
}

static void on_signals(Daemon *d) {
        struct signalfd_siginfo si;

        while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGCHLD:
                        procpool_reap(d->ppool);
                        break;
                case SIGTERM:
                case SIGINT:
                        begin_shutdown(d);
                        break;
                }
        }
}

/* Reads up to ROUTER_BATCH requests. Returns true if more may be waiting. */
static bool on_router(Daemon *d) {
        for (int i = 0; i < ROUTER_BATCH; i++) {
                zmq_msg_t parts[3];
                int n = 0, more = 1;
                uint32_t events = 0;
                size_t len = sizeof(events);

                if (zmq_getsockopt(d->router, ZMQ_EVENTS, &events, &len) < 0 ||
                    !(events & ZMQ_POLLIN))
                        return false;
                /* [identity, body] from DEALER, [identity, "", body] from REQ; anything with more
                 * frames is malformed and drained. */
                while (more) {
                        zmq_msg_t *m = &parts[n < 3 ? n : 2];
                        if (n >= 3)
                                zmq_msg_close(m);
                        zmq_msg_init(m);
                        if (zmq_msg_recv(m, d->router, ZMQ_DONTWAIT) < 0) {
                                zmq_msg_close(m);
                                break;
                        }
                        more = zmq_msg_more(m);
                        n++;
                }
                int kept = MIN(n, 3);
                if (n == 2 || (n == 3 && zmq_msg_size(&parts[1]) == 0))
                        request_handle(d, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), n == 3,
                                       zmq_msg_data(&parts[kept - 1]), zmq_msg_size(&parts[kept - 1]));
                else if (n >= 2) {
                        /* Reply so that the client learns what is wrong. */
                        static const uint8_t junk[] = { 0xc1 }; /* never valid msgpack */
                        request_handle(d, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), false,
                                       junk, sizeof(junk));
                }
                for (int j = 0; j < kept; j++)
                        zmq_msg_close(&parts[j]);
        }
        return true;
}

static int bind_endpoint(void *socket, const char *endpoint) {
        /* Make the directory of an ipc:// socket, as a service would find it under /run. */
        if (strncmp(endpoint, "ipc://", 6) == 0) {
                _cleanup_free_ char *dir = strdup(endpoint + 6);
                char *slash = dir ? strrchr(dir, '/') : NULL;
                if (slash && slash != dir) {
                        *slash = 0;
                        (void) mkdir(dir, 0755);
                }
        }
        if (zmq_bind(socket, endpoint) < 0) {
                int r = -zmq_errno();
                fprintf(stderr, "futured: cannot bind %s: %s\n", endpoint, zmq_strerror(-r));
                return r;
        }
        return 0;
}

static int epoll_add(int epoll_fd, int fd, uint32_t events, uint32_t tag) {
        struct epoll_event ev = { .events = events, .data.u32 = tag };

        return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

void daemon_config_free(DaemonConfig *cfg) {
        for (size_t i = 0; i < cfg->n_listen; i++)
                free(cfg->listen[i]);
        free(cfg->listen);
        free(cfg->events);
        free(cfg->worker_path);
        free(cfg->download_dir);
}

int daemon_new(Daemon **ret, DaemonConfig *cfg) {
        _cleanup_(daemon_freep) Daemon *d = calloc(1, sizeof(*d));
        int r, router_fd, one = 1, zero = 0, hwm = 100000;
        int64_t maxmsg = PROTO_HARD_MAX_MESSAGE;
        size_t len = sizeof(router_fd);
        sigset_t mask;

        if (!d) {
                daemon_config_free(cfg);
                return -ENOMEM;
        }
        d->cfg = *cfg;
        *cfg = (DaemonConfig){};
        d->epoll_fd = d->signal_fd = d->timer_fd = -1;
        d->started_ns = timer_now();
        table_init(&d->table, 1);
        scheduler_init(&d->sched);
        msgpack_sbuffer_init(&d->out);

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        d->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        d->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (d->epoll_fd < 0 || d->signal_fd < 0 || d->timer_fd < 0) {
                r = -errno;
                fprintf(stderr, "futured: cannot create the loop's fds: %s\n", strerror(-r));
                return r;
        }

        d->zmq = zmq_ctx_new();
        d->router = d->zmq ? zmq_socket(d->zmq, ZMQ_ROUTER) : NULL;
        d->pub = d->zmq ? zmq_socket(d->zmq, ZMQ_PUB) : NULL;
        if (!d->router || !d->pub) {
                fprintf(stderr, "futured: cannot create ZeroMQ sockets: %s\n", zmq_strerror(zmq_errno()));
                return -ENOMEM;
        }
        zmq_setsockopt(d->router, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
        zmq_setsockopt(d->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
        zmq_setsockopt(d->router, ZMQ_SNDHWM, &hwm, sizeof(hwm));
        zmq_setsockopt(d->router, ZMQ_RCVHWM, &hwm, sizeof(hwm));
        zmq_setsockopt(d->router, ZMQ_LINGER, &zero, sizeof(zero));
        zmq_setsockopt(d->pub, ZMQ_SNDHWM, &hwm, sizeof(hwm));
        zmq_setsockopt(d->pub, ZMQ_LINGER, &zero, sizeof(zero));
        for (size_t i = 0; i < d->cfg.n_listen; i++) {
                r = bind_endpoint(d->router, d->cfg.listen[i]);
                if (r < 0)
                        return r;
        }
        r = bind_endpoint(d->pub, d->cfg.events);
        if (r < 0)
                return r;

        /* libcurl's global state must exist before any thread that may use it. */
        r = download_global_init(d->cfg.download_dir);
        if (r < 0) {
                fprintf(stderr, "futured: cannot set up downloads (%s): %s\n",
                        d->cfg.download_dir ? d->cfg.download_dir : "no download directory",
                        strerror(-r));
                return r;
        }
        d->progress.kind = TIMER_PROGRESS;
        r = threadpool_new(&d->tpool, d->cfg.threads, d->cfg.spin_us);
        if (r < 0) {
                fprintf(stderr, "futured: cannot start the thread pool: %s\n", strerror(-r));
                return r;
        }
        r = transferpool_new(&d->xpool, d->tpool);
        if (r < 0) {
                fprintf(stderr, "futured: cannot start the transfer thread: %s\n", strerror(-r));
                return r;
        }
        r = procpool_new(&d->ppool, d->cfg.worker_path, d->cfg.processes, d->cfg.max_tasks,
                         &procpool_callbacks, d);
        if (r < 0) {
                fprintf(stderr, "futured: cannot start the process pool with %s: %s\n",
                        d->cfg.worker_path, strerror(-r));
                return r;
        }

        if (zmq_getsockopt(d->router, ZMQ_FD, &router_fd, &len) < 0)
                return -zmq_errno();
        if ((r = epoll_add(d->epoll_fd, router_fd, EPOLLIN | EPOLLET, TAG_ROUTER)) < 0 ||
            (r = epoll_add(d->epoll_fd, d->signal_fd, EPOLLIN, TAG_SIGNAL)) < 0 ||
            (r = epoll_add(d->epoll_fd, d->timer_fd, EPOLLIN, TAG_TIMER)) < 0 ||
            (r = epoll_add(d->epoll_fd, threadpool_fd(d->tpool), EPOLLIN, TAG_THREADS)) < 0 ||
            (r = epoll_add(d->epoll_fd, procpool_fd(d->ppool), EPOLLIN, TAG_PROCESSES)) < 0)
                return r;

        *ret = TAKE_PTR(d);
        return 0;
}

int daemon_run(Daemon *d) {
        bool router_more = true;

        while (!d->quit) {
                struct epoll_event events[8];
                int n;

                arm_timerfd(d);
                n = epoll_wait(d->epoll_fd, events, ELEMENTSOF(events), router_more ? 0 : -1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (int i = 0; i < n; i++)
                        switch (events[i].data.u32) {
                        case TAG_SIGNAL:
                                on_signals(d);
                                break;
                        case TAG_TIMER:
                                on_timers(d);
                                break;
                        case TAG_THREADS:
                                on_threads_done(d);
                                break;
                        case TAG_PROCESSES:
                                procpool_dispatch(d->ppool);
                                break;
                        case TAG_ROUTER:
                                break; /* read below, every turn */
                        }
                /* Sends during this turn may have consumed the edge of ZMQ_FD: always look. */
                router_more = on_router(d);
                daemon_dispatch(d);
                if (d->stopping && !d->quit && d->n_state[STATE_RUNNING] == 0)
                        d->quit = true;
        }
        return 0;
}

Daemon *daemon_free(Daemon *d) {
        if (!d)
                return NULL;
        waiter_free_all(d);
        /* Threads that still run were told to stop (their futures are finished: cancelled, timed
         * out or failed at shutdown). The transfer pool hands back everything it holds as it stops.
         * Wait for every item before joining the threads: an item handed back after the last take
         * would be lost with the pool. */
        d->xpool = transferpool_free(d->xpool);
        while (d->tpool && d->threads_busy + d->transfers_busy > 0) {
                Work *w = threadpool_take_done(d->tpool);
                if (!w) {
                        struct pollfd pfd = { .fd = threadpool_fd(d->tpool), .events = POLLIN };
                        (void) poll(&pfd, 1, -1);
                        continue;
                }
                for (Work *next; w; w = next) {
                        next = w->next;
                        thread_job_free(thread_job_returned(d, w));
                }
        }
        d->tpool = threadpool_free(d->tpool);
        download_global_cleanup();
        d->ppool = procpool_free(d->ppool);
        if (d->router) {
                /* Let the last replies (of the shutdown's cancellations) reach their clients. */
                int linger = 1000;
                zmq_setsockopt(d->router, ZMQ_LINGER, &linger, sizeof(linger));
                zmq_close(d->router);
        }
        if (d->pub)
                zmq_close(d->pub);
        if (d->zmq)
                zmq_ctx_term(d->zmq);
        for (const char *const *e = (const char *const *) d->cfg.listen;
             e && e < (const char *const *) d->cfg.listen + d->cfg.n_listen; e++)
                if (strncmp(*e, "ipc://", 6) == 0)
                        (void) unlink(*e + 6);
        if (d->cfg.events && strncmp(d->cfg.events, "ipc://", 6) == 0)
                (void) unlink(d->cfg.events + 6);
        timer_heap_deinit(&d->timers);
        table_deinit(&d->table);
        scheduler_deinit(&d->sched);
        free(d->retained);
        msgpack_sbuffer_destroy(&d->out);
        if (d->epoll_fd >= 0)
                close(d->epoll_fd);
        if (d->signal_fd >= 0)
                close(d->signal_fd);
        if (d->timer_fd >= 0)
                close(d->timer_fd);
        daemon_config_free(&d->cfg);
        free(d);
        return NULL;
}
