/* executor: see executor.h.
 *
 * A future's life: executor_submit() makes it pending (scheduler queue); the before-sleep hook
 * starts it (a PoolJob in the thread or transfer pool, a job frame to an idle worker process, or
 * an inline run on the loop); it comes back through the completion queue or a process-pool
 * callback and finishes; a cancel or its timeout may finish it first; the retention queue (or a
 * release) expires it. Each of those steps changes its state through set_state() alone. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "completion.h"
#include "download.h"
#include "executor.h"
#include "frame.h"
#include "macro.h"
#include "pooljob.h"
#include "procpool.h"
#include "retention.h"
#include "scheduler.h"
#include "threadpool.h"
#include "transferpool.h"

/* Progress events of running thread jobs go out at most this often per job. */
#define PROGRESS_INTERVAL_NS 250000000u

/* Inline jobs run per loop turn at most, so that requests keep being read between batches. */
#define INLINE_BATCH 1024

struct Executor {
        ExecutorConfig cfg;       /* its strings are not kept */
        Loop *loop;
        TimerHeap *timers;
        Events *events;

        Table table;
        Scheduler sched;
        WaiterSet waiters;
        Retention retention;

        Completion *done;         /* thread and transfer pools hand items back here */
        LoopFile done_file;
        ThreadPool *tpool;
        TransferPool *xpool;
        ProcPool *ppool;
        unsigned threads_busy;    /* items inside the thread pool */
        unsigned transfers_busy;  /* items inside the transfer pool */
        bool transfers_cancelled; /* this turn set a transfer's cancel flag: wake the thread */
        PoolJob *jobs;            /* items inside the thread or transfer pool, doubly linked */
        Timer progress;           /* armed while such items run: progress and late `running` */

        uint64_t n_state[_STATE_MAX];
        uint64_t submitted, finished;
        bool stopping;
        bool curl_ready;
};

/* THE door: every change of a future's state, and of the counters, is made here. A future that
 * is being made starts as `unknown` (not counted); an expired one leaves the counts. */
static void set_state(Executor *x, Future *f, FutureState to) {
        if (f->state != STATE_UNKNOWN)
                x->n_state[f->state]--;
        if (to == STATE_PENDING && f->state == STATE_UNKNOWN)
                x->submitted++;
        if (to != STATE_EXPIRED && proto_state_final(to))
                x->finished++;
        if (to != STATE_EXPIRED)
                x->n_state[to]++;
        f->state = to;
}

/* Thread jobs handed to the pool that no thread has taken yet: clients see them pending. Only
 * items whose future still counts as running: a cancelled future's item stays queued until a
 * thread takes and drops it, but is no longer running. */
static unsigned queued_in_pools(const Executor *x) {
        unsigned n = 0;

        for (PoolJob *j = x->jobs; j; j = j->next) {
                Future *f;
                if (pooljob_started(j))
                        continue;
                f = table_get(&x->table, j->id);
                n += f && f->state == STATE_RUNNING && f->runner.job == j;
        }
        return n;
}

/* `f` reached a final state: stores the outcome (taken; may be NULL), queues it for expiry,
 * publishes the event and makes due the waiters it satisfies. */
static void finish(Executor *x, Future *f, FutureState state, uint8_t *outcome,
                   uint32_t outcome_len) {
        uint64_t now = timer_now();

        if (f->timeout) {
                /* A finished future never runs again: give the timer's slot back now. */
                timer_deinit(x->timers, &f->timeout->timer);
                f->timeout = mfree(f->timeout);
        }
        if (f->heap_pos)
                scheduler_remove(&x->sched, f);
        if (f->state == STATE_RUNNING)
                scheduler_stopped(&x->sched, f);
        free(f->args);
        f->args = NULL;
        f->args_len = 0;
        free(f->outcome);
        f->outcome = outcome;
        f->outcome_len = outcome_len;
        f->runner.job = NULL;
        set_state(x, f, state);
        /* Without room in the retention queue the future stays until released: safer than
         * dropping a result nobody has read. */
        (void) retention_add(&x->retention, f->id, now);
        events_state(x->events, f);
        waiter_future_finished(&x->waiters, f);
}

/* Finishes `f` as failed with a failure map built from `code` (static) and `message`; `signal`
 * and `exit_status` are added when non-zero (worker_died). */
static void fail(Executor *x, Future *f, const char *code, const char *message, int signal,
                 int exit_status) {
        JobFailure failure = { .code = code, .signal = signal, .exit_status = exit_status };
        msgpack_packer pk;
        ProtoBuf buf;

        snprintf(failure.message, sizeof(failure.message), "%s", message);
        proto_buf_init(&buf);
        proto_buf_packer(&buf, &pk);
        frame_pack_failure(&pk, &failure);
        finish(x, f, STATE_FAILED, buf.failed ? NULL : proto_buf_dup(&buf), (uint32_t) buf.size);
        proto_buf_deinit(&buf);
}

/* Stops `f` before it finishes by itself. It ends in `state`: cancelled, or failed with the
 * failure `code` (static; timeout, shutdown). Returns false if `f` had finished already. */
static bool stop(Executor *x, Future *f, FutureState state, const char *code) {
        char message[128];

        if (proto_state_final(f->state))
                return false;
        if (f->state == STATE_RUNNING && f->runner.job) {
                if (f->kind->pool == POOL_PROCESS)
                        procpool_kill(x->ppool, f->runner.worker);
                else
                        atomic_store(&f->runner.job->cancel, 1);
                if (f->kind->pool == POOL_TRANSFER)
                        x->transfers_cancelled = true; /* the hook wakes the thread, once */
        }
        if (state == STATE_CANCELLED) {
                finish(x, f, STATE_CANCELLED, NULL, 0);
                return true;
        }
        if (strcmp(code, PROTO_F_TIMEOUT) == 0)
                snprintf(message, sizeof(message), "the job ran longer than its %.3f s timeout",
                         f->timeout_ms / 1000.0);
        else
                snprintf(message, sizeof(message), "futured stopped before the job finished");
        fail(x, f, code, message, 0, 0);
        return true;
}

/* Drops the finished future `f`: it reports `expired` from now on. */
static void expire(Executor *x, Future *f) {
        table_steal(&x->table, f->id);
        set_state(x, f, STATE_EXPIRED);
        scheduler_group_unref(&x->sched, f->group);
        f->group = NULL;
        future_free(f);
}

static void on_retention(void *userdata, uint64_t id) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, id);

        if (f && proto_state_final(f->state))
                expire(x, f);
}

/* A job's timeout counts its running time only: a thread job that waited in the pool's queue
 * (prefetch) gets its full time from the moment a thread took it. */
static void on_job_timeout(Timer *t, uint64_t now) {
        JobTimeout *jt = container_of(t, JobTimeout, timer);
        Executor *x = jt->executor;
        Future *f = jt->future;
        uint64_t limit = (uint64_t) f->timeout_ms * 1000000u;

        if (f->state == STATE_RUNNING && f->kind->pool != POOL_PROCESS && f->runner.job) {
                uint64_t started = atomic_load(&f->runner.job->started_ns);
                uint64_t due = started ? started + limit : now + limit;
                if (due > now) {
                        timer_start(x->timers, t, due);
                        return;
                }
        }
        stop(x, f, STATE_FAILED, PROTO_F_TIMEOUT);
}

/* Puts `f` to running. `announce`: publish the `running` event now; a prefetched thread job is
 * announced by the progress tick once a thread has taken it instead. */
static void start_running(Executor *x, Future *f, bool announce) {
        set_state(x, f, STATE_RUNNING);
        if (f->timeout)
                timer_start(x->timers, &f->timeout->timer,
                            timer_now() + (uint64_t) f->timeout_ms * 1000000u);
        if (announce)
                events_state(x->events, f);
}

static void start_pool_job(Executor *x, Future *f) {
        PoolJob *j;

        if (pooljob_new(&j, f->id, f->kind, f->args, f->args_len) < 0) {
                scheduler_stopped(&x->sched, f); /* popped, but never running */
                fail(x, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
                return;
        }
        f->args = NULL; /* the item has them now */
        f->args_len = 0;
        if (f->kind->pool == POOL_TRANSFER) {
                j->announced = true; /* it starts as soon as the transfer thread looks */
                x->transfers_busy++;
        } else {
                j->announced = x->threads_busy < x->cfg.threads; /* a thread is free for it */
                x->threads_busy++;
        }
        LIST_PREPEND(x->jobs, j, prev, next);
        if (!timer_armed(&x->progress))
                timer_start(x->timers, &x->progress, timer_now() + PROGRESS_INTERVAL_NS);
        f->runner.job = j;
        start_running(x, f, j->announced);
        if (f->kind->pool == POOL_TRANSFER)
                transferpool_submit(x->xpool, pooljob_transfer(j));
        else
                threadpool_submit(x->tpool, pooljob_work(j));
}

static void start_process_job(Executor *x, Future *f) {
        Worker *w;
        int r = procpool_run(x->ppool, f->id, f->kind->name, f->args, f->args_len, &w);

        if (r < 0)
                scheduler_stopped(&x->sched, f); /* popped, but never running */
        if (r == -EMSGSIZE) {
                fail(x, f, PROTO_F_INTERNAL, "the job is too large for a worker", 0, 0);
                return;
        }
        if (r < 0) {
                /* The worker died under us: the job waits for the next one. */
                if (scheduler_push(&x->sched, f) < 0)
                        fail(x, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
                return;
        }
        f->runner.worker = w;
        start_running(x, f, true);
}

/* A kind with inline_run: runs here and now, on the loop. */
static void run_inline(Executor *x, Future *f) {
        uint8_t *outcome;
        uint32_t len;
        bool ok;

        start_running(x, f, true);
        if (pooljob_run_inline(f->kind, f->args, f->args_len, &outcome, &len, &ok) < 0) {
                fail(x, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
                return;
        }
        finish(x, f, ok ? STATE_DONE : STATE_FAILED, outcome, len);
}

bool executor_before_sleep(Executor *x) {
        Future *f;

        /* One wake-up for however many transfers this turn cancelled or timed out. */
        if (x->transfers_cancelled) {
                x->transfers_cancelled = false;
                transferpool_wake(x->xpool);
        }
        if (x->stopping)
                return false;
        while (x->threads_busy < x->cfg.threads + x->cfg.prefetch &&
               (f = scheduler_pop(&x->sched, LANE_THREAD)))
                start_pool_job(x, f);
        threadpool_flush(x->tpool);
        while (x->transfers_busy < x->cfg.transfers &&
               (f = scheduler_pop(&x->sched, LANE_TRANSFER)))
                start_pool_job(x, f);
        transferpool_flush(x->xpool);
        while (procpool_has_idle(x->ppool) && (f = scheduler_pop(&x->sched, LANE_PROCESS)))
                start_process_job(x, f);
        for (unsigned i = 0; i < INLINE_BATCH && (f = scheduler_pop(&x->sched, LANE_INLINE)); i++)
                run_inline(x, f);
        return scheduler_ready(&x->sched, LANE_INLINE) > 0;
}

/* Takes a job its pool handed back out of the books. */
static void returned(Executor *x, PoolJob *j) {
        if (j->kind->pool == POOL_TRANSFER)
                x->transfers_busy--;
        else
                x->threads_busy--;
        LIST_REMOVE(x->jobs, j, prev, next);
}

static void on_done(LoopFile *lf, uint32_t events) {
        Executor *x = container_of(lf, Executor, done_file);

        for (Work *w = completion_take(x->done), *next; w; w = next) {
                PoolJob *j = pooljob_from_work(w);
                Future *f = table_get(&x->table, j->id);
                next = w->next;
                returned(x, j);
                if (f && f->state == STATE_RUNNING && f->runner.job == j) {
                        uint8_t *outcome;
                        uint32_t len;
                        bool ok;
                        if (pooljob_take_outcome(j, &outcome, &len, &ok) < 0)
                                fail(x, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
                        else
                                finish(x, f, ok ? STATE_DONE : STATE_FAILED, outcome, len);
                }
                pooljob_free(j);
        }
}

static void on_worker_result(void *userdata, uint64_t job, bool ok, const uint8_t *payload,
                             size_t payload_len) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, job);
        uint8_t *outcome;

        if (!f || f->state != STATE_RUNNING)
                return;
        outcome = alloc_malloc(payload_len ? payload_len : 1);
        if (!outcome) {
                fail(x, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
                return;
        }
        memcpy(outcome, payload, payload_len);
        finish(x, f, ok ? STATE_DONE : STATE_FAILED, outcome, (uint32_t) payload_len);
}

static void on_worker_died(void *userdata, uint64_t job, int signal, int exit_status) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, job);
        char message[160];

        if (!f || f->state != STATE_RUNNING)
                return;
        f->deaths++;
        if (f->retries > 0 && f->deaths < FUTURE_MAX_DEATHS && !x->stopping) {
                /* Run it again on another worker. */
                f->retries--;
                f->runner.worker = NULL;
                if (f->timeout)
                        timer_stop(x->timers, &f->timeout->timer);
                scheduler_stopped(&x->sched, f);
                set_state(x, f, STATE_PENDING);
                if (scheduler_push(&x->sched, f) >= 0) {
                        events_state(x->events, f);
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
        fail(x, f, PROTO_F_WORKER_DIED, message, signal, exit_status);
}

static const ProcPoolCallbacks procpool_callbacks = {
        .on_result = on_worker_result,
        .on_died = on_worker_died,
};

/* Publishes a progress event for each running thread job whose byte count moved, and the
 * `running` event of a prefetched job a thread has taken since; re-arms itself while thread jobs
 * run. The counters are written by the pool threads; reading them here is the whole hand-off, so
 * progress costs no wake-ups. */
static void on_progress(Timer *t, uint64_t now) {
        Executor *x = container_of(t, Executor, progress);

        for (PoolJob *j = x->jobs; j; j = j->next) {
                uint64_t done = atomic_load(&j->progress_done);
                Future *f = table_get(&x->table, j->id);

                if (!f || f->state != STATE_RUNNING || f->runner.job != j)
                        continue;
                if (!j->announced && pooljob_started(j)) {
                        j->announced = true;
                        events_state(x->events, f);
                }
                if (done == j->progress_sent)
                        continue;
                j->progress_sent = done;
                events_progress(x->events, f, done, atomic_load(&j->progress_total));
        }
        if (x->jobs)
                timer_start(x->timers, &x->progress, now + PROGRESS_INTERVAL_NS);
}

/* Makes the future of one checked job, not yet in the table or a queue. Returns 0 or -ENOMEM. */
static int make_future(Executor *x, const JobSpec *spec, Future **ret) {
        _cleanup_free_ uint8_t *args = NULL;
        msgpack_packer pk;
        ProtoBuf buf;
        uint32_t len;
        Future *f;
        int r;

        proto_buf_init(&buf);
        proto_buf_packer(&buf, &pk);
        msgpack_pack_object(&pk, *spec->args);
        len = (uint32_t) buf.size;
        args = buf.failed ? NULL : alloc_malloc(len);
        if (args)
                memcpy(args, buf.data, len);
        proto_buf_deinit(&buf);
        if (!args)
                return -ENOMEM;
        r = future_new(&f, spec->kind, args, len);
        if (r < 0)
                return r;
        TAKE_PTR(args);
        f->priority = spec->priority;
        f->timeout_ms = spec->timeout_ms;
        f->retries = spec->retries;
        if ((spec->group &&
             (r = scheduler_group_ref(&x->sched, spec->group, &f->group)) < 0) ||
            (spec->timeout_ms && !(f->timeout = alloc_calloc(1, sizeof(*f->timeout))))) {
                *ret = f;
                return r < 0 ? r : -ENOMEM;
        }
        if (f->timeout) {
                f->timeout->future = f;
                f->timeout->executor = x;
                r = timer_init(x->timers, &f->timeout->timer, on_job_timeout);
                if (r < 0) {
                        *ret = f;
                        return r;
                }
        }
        *ret = f;
        return 0;
}

/* Frees a future that make_future() made (or half made) and that was never queued. */
static void discard(Executor *x, Future *f) {
        if (!f)
                return;
        scheduler_group_unref(&x->sched, f->group);
        f->group = NULL;
        if (f->timeout)
                timer_deinit(x->timers, &f->timeout->timer);
        future_free(f);
}

int executor_submit(Executor *x, const JobSpec *specs, uint32_t n, uint64_t *ret_first) {
        uint32_t per_lane[_LANE_MAX] = {};
        _cleanup_free_ Future **made = NULL;
        uint64_t first = x->table.next_id;
        int r = 0;

        if (x->stopping)
                return EXECUTOR_STOPPING;
        if (x->n_state[STATE_PENDING] + x->n_state[STATE_RUNNING] + n > PROTO_MAX_PENDING)
                return EXECUTOR_QUEUE_FULL;
        made = alloc_calloc(n, sizeof(*made));
        if (!made)
                return -ENOMEM;
        /* Make every future, then make room for them all; only then queue them, which cannot
         * fail: a batch is all or nothing, also when memory runs out half-way. */
        for (uint32_t i = 0; i < n && r >= 0; i++) {
                r = make_future(x, &specs[i], &made[i]);
                per_lane[scheduler_lane(specs[i].kind)]++;
        }
        for (unsigned lane = 0; lane < _LANE_MAX && r >= 0; lane++)
                r = scheduler_reserve(&x->sched, lane, per_lane[lane]);
        if (r >= 0)
                r = table_reserve(&x->table, n);
        if (r < 0) {
                for (uint32_t i = 0; i < n; i++)
                        discard(x, made[i]);
                return r;
        }
        for (uint32_t i = 0; i < n; i++) {
                Future *f = made[i];
                r = table_add(&x->table, f);
                set_state(x, f, STATE_PENDING);
                r = r < 0 ? r : scheduler_push(&x->sched, f);
                assert(r >= 0); /* reserved above */
                /* The latest submit's limit wins; set only now, so a refused batch changes no
                 * group. */
                if (f->group && specs[i].group_limit)
                        scheduler_group_limit(&x->sched, f->group, specs[i].group_limit);
        }
        *ret_first = first;
        return 0;
}

bool executor_cancel(Executor *x, uint64_t id) {
        Future *f = table_get(&x->table, id);

        if (!f)
                return false;
        /* Cancelled already: it is cancelled, as Python says. */
        return stop(x, f, STATE_CANCELLED, NULL) || f->state == STATE_CANCELLED;
}

bool executor_release(Executor *x, uint64_t id) {
        Future *f = table_get(&x->table, id);

        if (!f || !proto_state_final(f->state))
                return false;
        expire(x, f);
        return true;
}

const Table *executor_table(const Executor *x) {
        return &x->table;
}

WaiterSet *executor_waiters(Executor *x) {
        return &x->waiters;
}

void executor_stats(const Executor *x, ExecutorStats *ret) {
        unsigned queued = queued_in_pools(x);

        *ret = (ExecutorStats){
                .submitted = x->submitted,
                .finished = x->finished,
                .transfers_running = x->transfers_busy,
                .processes_alive = procpool_alive(x->ppool),
                .workers_started = procpool_started(x->ppool),
                .workers_died = procpool_died(x->ppool),
                .deferred = x->waiters.n_deferred,
        };
        memcpy(ret->n_state, x->n_state, sizeof(ret->n_state));
        ret->n_state[STATE_PENDING] += queued;
        ret->n_state[STATE_RUNNING] -= queued;
}

void executor_reap(Executor *x) {
        procpool_reap(x->ppool);
}

void executor_stop(Executor *x, uint64_t *ret_running, uint64_t *ret_pending) {
        unsigned queued = queued_in_pools(x);

        *ret_running = x->n_state[STATE_RUNNING] - queued;
        *ret_pending = x->n_state[STATE_PENDING] + queued;
        x->stopping = true;
        /* Pending work never starts now, including thread jobs prefetched into the pool that no
         * thread has taken yet (clients see them pending). Running work goes on. */
        for (uint64_t id = x->table.base; id < x->table.next_id; id++) {
                Future *f = table_get(&x->table, id);
                if (f && future_visible_state(f) == STATE_PENDING)
                        stop(x, f, STATE_CANCELLED, NULL);
        }
}

void executor_abort(Executor *x) {
        for (uint64_t id = x->table.base; id < x->table.next_id; id++) {
                Future *f = table_get(&x->table, id);
                if (f && f->state == STATE_RUNNING)
                        stop(x, f, STATE_FAILED, PROTO_F_SHUTDOWN);
        }
}

uint64_t executor_running(const Executor *x) {
        return x->n_state[STATE_RUNNING];
}

int executor_new(Executor **ret, Loop *loop, Events *events, const ExecutorConfig *cfg) {
        _cleanup_(executor_freep) Executor *x = calloc(1, sizeof(*x));
        int r;

        if (!x)
                return -ENOMEM;
        x->cfg = *cfg;
        x->cfg.worker_path = x->cfg.download_dir = NULL; /* borrowed for this call only */
        x->loop = loop;
        x->timers = loop_timers(loop);
        x->events = events;
        loop_file_init(&x->done_file);
        table_init(&x->table, 1);
        scheduler_init(&x->sched);
        waiter_set_init(&x->waiters, &x->table, x->timers);
        r = retention_init(&x->retention, x->timers, (uint64_t) (cfg->retain * 1e9), on_retention, x);
        if (r >= 0)
                r = timer_init(x->timers, &x->progress, on_progress);
        if (r < 0)
                return r;

        /* libcurl's global state must exist before any thread that may use it. */
        r = download_global_init(cfg->download_dir);
        if (r < 0) {
                fprintf(stderr, "futured: cannot set up downloads (%s): %s\n",
                        cfg->download_dir ? cfg->download_dir : "no download directory",
                        strerror(-r));
                return r;
        }
        x->curl_ready = true;
        r = completion_new(&x->done);
        if (r >= 0)
                r = loop_add(loop, &x->done_file, completion_fd(x->done), EPOLLIN, on_done);
        if (r < 0) {
                fprintf(stderr, "futured: cannot make the completion queue: %s\n", strerror(-r));
                return r;
        }
        r = threadpool_new(&x->tpool, cfg->threads, cfg->spin_us, x->done);
        if (r < 0) {
                fprintf(stderr, "futured: cannot start the thread pool: %s\n", strerror(-r));
                return r;
        }
        r = transferpool_new(&x->xpool, x->done);
        if (r < 0) {
                fprintf(stderr, "futured: cannot start the transfer thread: %s\n", strerror(-r));
                return r;
        }
        r = procpool_new(&x->ppool, loop, cfg->worker_path, cfg->processes, cfg->max_tasks,
                         &procpool_callbacks, x);
        if (r < 0) {
                fprintf(stderr, "futured: cannot start the process pool with %s: %s\n",
                        cfg->worker_path, strerror(-r));
                return r;
        }
        *ret = TAKE_PTR(x);
        return 0;
}

int executor_reconfigure(Executor *x, const ExecutorConfig *cfg) {
        int r = download_set_dir(cfg->download_dir);

        if (r < 0)
                return r;
        x->cfg.retain = cfg->retain;
        retention_set_retain(&x->retention, (uint64_t) (cfg->retain * 1e9));
        x->cfg.transfers = cfg->transfers;
        x->cfg.prefetch = cfg->prefetch;
        x->cfg.spin_us = cfg->spin_us;
        threadpool_set_spin(x->tpool, cfg->spin_us);
        x->cfg.max_tasks = cfg->max_tasks;
        procpool_set_max_tasks(x->ppool, cfg->max_tasks);
        return 0;
}

Executor *executor_free(Executor *x) {
        if (!x)
                return NULL;
        waiter_set_deinit(&x->waiters);
        /* Threads that still run were told to stop (their futures are finished: cancelled, timed
         * out or failed at shutdown). The transfer pool hands back everything it holds as it stops.
         * Wait for every item before joining the threads: an item handed back after the last take
         * would be lost with the pool. */
        x->xpool = transferpool_free(x->xpool);
        while (x->done && x->threads_busy + x->transfers_busy > 0) {
                Work *w = completion_take(x->done);
                if (!w) {
                        struct pollfd pfd = { .fd = completion_fd(x->done), .events = POLLIN };
                        (void) poll(&pfd, 1, -1);
                        continue;
                }
                for (Work *next; w; w = next) {
                        PoolJob *j = pooljob_from_work(w);
                        next = w->next;
                        returned(x, j);
                        pooljob_free(j);
                }
        }
        x->tpool = threadpool_free(x->tpool);
        if (x->curl_ready)
                download_global_cleanup();
        x->ppool = procpool_free(x->ppool);
        loop_remove(x->loop, &x->done_file);
        x->done = completion_free(x->done);
        for (uint64_t id = x->table.base; id < x->table.next_id; id++) {
                Future *f = table_get(&x->table, id);
                if (f && f->timeout)
                        timer_deinit(x->timers, &f->timeout->timer);
        }
        timer_deinit(x->timers, &x->progress);
        retention_deinit(&x->retention);
        table_deinit(&x->table);
        scheduler_deinit(&x->sched);
        free(x);
        return NULL;
}
