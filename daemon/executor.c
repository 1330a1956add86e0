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
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cluster.h"
#include "idlist.h"
#include "completion.h"
#include "download.h"
#include "executor.h"
#include "frame.h"
#include "log.h"
#include "macro.h"
#include "pooljob.h"
#include "procpool.h"
#include "retention.h"
#include "ring.h"
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

        Store *store;
        void *keys;               /* tsearch() tree of the retained futures with a key */
        bool recovering;          /* loading the store's futures: changes are not written back */
        /* Futures submitted but not yet committed by the store: they start once their batch is
         * (a FIFO: batches commit in order). */
        Ring held;
        /* Futures finished but not yet committed: clients see them finish once their batch is
         * (room for every unfinished future is reserved ahead). */
        Ring unseen;
        uint64_t committed_seq;   /* every batch up to this one is done (committed or failed) */
        uint64_t seen_seq;        /* every finish recorded up to this batch is seen */
        struct {
                uint64_t seq;
                int result;       /* EXECUTOR_STORE_FULL, _UNAVAILABLE or _FAILED */
        } failed[16];             /* the last batches that failed, for their held replies */
        unsigned n_failed;

        uint64_t n_state[_STATE_MAX];
        uint64_t submitted, finished;
        Counters counters;        /* by kind and pool, for metrics */
        uint64_t retained_bytes;  /* outcome bytes of the finished futures in the table */
        bool stopping;
        bool curl_ready;

        /* Cluster mode (docs/CLUSTER.md): NULL otherwise, and none of this is used. */
        Cluster *cluster;
        Remote remote;            /* the futures of other nodes' IDs (table.remote) */
        bool releasing;           /* a release, not an expiry: the row goes too */
        bool fencing;             /* dropping a job the database refused: no finish is seen */
        IdList wanted;            /* IDs to read from the database at the end of the turn */
        uint64_t looked_up;       /* every lookup up to this one is answered */
        uint64_t lookup_failed;   /* the last failed batch of lookups ended with this one */
        uint64_t lookup_ok_before_failed; /* ... and the answer before it with this one */
        uint64_t ran;             /* jobs that ran on this node */
        uint64_t fenced;          /* changes the database refused (fencing) */

        /* PostgreSQL: new jobs not inserted because a row had their idempotency key (pairs:
         * the new ID, the row's), until their submits' replies went out (executor_twin). */
        IdList twins;
};

/* Cluster mode, at the end of this file. */
static void cluster_turn(Executor *x);
static void cluster_place(Executor *x, const JobSpec *specs, Future **made, uint32_t n);
static int cluster_start(Executor *x, const char *uri);
static void on_twin(void *userdata, uint64_t id, uint64_t existing);

/* Milliseconds of the wall clock, which the store keeps for retention across restarts. */
static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Tells the store about the change of `f` from `from` to its current state. */
static void store_change(Executor *x, Future *f, FutureState from) {
        FutureState to = f->state;
        int r = 0;

        if (x->recovering)
                return;
        /* Cluster mode: a job another node runs, or open to any, is theirs to write; a row of
         * another node's ID goes only when a client releases it (its node expires it). */
        if (f->cluster && ((to == STATE_EXPIRED && (f->cluster & FUTURE_FOREIGN) &&
                            !x->releasing) ||
                           (to != STATE_EXPIRED && (f->cluster & FUTURE_AWAY) &&
                            from != STATE_UNKNOWN)))
                return;
        if (to == STATE_RUNNING && (f->cluster & FUTURE_CLAIMED)) {
                f->cluster &= (uint8_t) ~FUTURE_CLAIMED; /* its claim wrote the start */
                return;
        }
        if (from == STATE_UNKNOWN && to == STATE_PENDING) {
                StoreJob job = {
                        .id = f->id,
                        .kind = f->kind->name,
                        .args = f->args,
                        .args_len = f->args_len,
                        .group = f->group ? f->group->name : NULL,
                        .group_limit = f->group ? f->group->limit : 0,
                        .priority = f->priority,
                        .timeout_ms = f->timeout_ms,
                        .retries = f->retries,
                        .attempt = f->attempt,
                        .state = STATE_PENDING,
                        .key = f->key,
                        .principal = f->principal ? f->principal->name : NULL,
                        .open = (f->cluster & FUTURE_AWAY) != 0,
                };
                r = store_add(x->store, &job);
        } else if (to == STATE_RUNNING)
                r = store_start(x->store, f->id, f->attempt);
        else if (to == STATE_PENDING)
                r = store_requeue(x->store, f->id, f->attempt);
        else if (to == STATE_EXPIRED)
                r = store_remove(x->store, f->id);
        else if (proto_state_final(to))
                r = store_finish(x->store, f->id, to, f->outcome, f->outcome_len, wall_ms(),
                                 f->attempt);
        if (r < 0)
                log_fields(LOG_ERR, &(LogFields){ .future_id = f->id, .job_kind = f->kind->name },
                           "future %" PRIu64 ": its change to %s is not stored: %s", f->id,
                           proto_state_name(to), strerror(-r));
}

/* THE door: every change of a future's state, and of the counters, is made here, and the store
 * hears of each. A future that is being made starts as `unknown` (not counted); an expired one
 * leaves the counts. */
static void set_state(Executor *x, Future *f, FutureState to) {
        FutureState from = f->state;

        if (from != STATE_UNKNOWN)
                x->n_state[from]--;
        if (f->principal) {
                if (from != STATE_UNKNOWN)
                        f->principal->n_state[from]--;
                if (to != STATE_EXPIRED)
                        f->principal->n_state[to]++;
        }
        if (proto_state_final(to) && to != STATE_EXPIRED && !proto_state_final(from))
                x->retained_bytes += f->outcome_len;
        else if (to == STATE_EXPIRED && proto_state_final(from))
                x->retained_bytes -= f->outcome_len;
        if (to == STATE_PENDING && from == STATE_UNKNOWN)
                x->submitted++;
        if (to != STATE_EXPIRED && proto_state_final(to))
                x->finished++;
        if (to != STATE_EXPIRED)
                x->n_state[to]++;
        if (to == STATE_RUNNING)
                f->attempt++;
        f->state = to;
        if (from != STATE_UNKNOWN) /* its submission is not a change */
                log_fields(LOG_DEBUG, &(LogFields){ .future_id = f->id, .job_kind = f->kind->name },
                           "future %" PRIu64 " (%s): %s -> %s", f->id, f->kind->name,
                           proto_state_name(from), proto_state_name(to));
        counters_change(&x->counters, f, from, x->recovering);
        store_change(x, f, from);
}

/* Thread jobs handed to the pool that no thread has taken yet: clients see them pending. Only
 * items whose future still counts as running: a cancelled future's item stays queued until a
 * thread takes and drops it, but is no longer running. */
static unsigned queued_in_pools(const Executor *x, uint64_t per_lane[_LANE_MAX]) {
        unsigned n = 0;

        for (PoolJob *j = x->jobs; j; j = j->next) {
                Future *f;
                if (pooljob_started(j))
                        continue;
                f = table_get(&x->table, j->id);
                if (!f || f->state != STATE_RUNNING || f->runner.job != j)
                        continue;
                n++;
                if (per_lane)
                        per_lane[scheduler_lane(f->kind)]++;
        }
        return n;
}

/* Clients see that `f` finished: it is queued for expiry, its event goes out and the waiters it
 * satisfies become due. `was_running`: it gives back its slot in its group and its principal's
 * running quota now, so that a job of the group does not start before this one is seen done. */
static void publish(Executor *x, Future *f, bool was_running) {
        if (was_running)
                scheduler_stopped(&x->sched, f);
        f->unseen_seq = 0;
        f->unseen_running = false;
        /* Without room in the retention queue the future stays until released: safer than
         * dropping a result nobody has read. */
        (void) retention_add(&x->retention, f->id, timer_now());
        events_state(x->events, f);
        waiter_future_finished(&x->waiters, f);
}

/* `f` reached a final state: stores the outcome (taken; may be NULL) and publishes it, with a
 * durable store once the batch that records the finish is committed (on_commit), so that no
 * client sees a result that a crash could take back. `kept`: false for a job the store never
 * had (its submit's commit failed), whose failure has no commit to wait for. */
static void finish_as(Executor *x, Future *f, FutureState state, uint8_t *outcome,
                      uint32_t outcome_len, bool kept) {
        FutureState shown = future_visible_state(f);
        bool was_running = f->state == STATE_RUNNING;

        if (f->timeout) {
                /* A finished future never runs again: give the timer's slot back now. */
                timer_deinit(x->timers, &f->timeout->timer);
                f->timeout = mfree(f->timeout);
        }
        if (f->heap_pos)
                scheduler_remove(&x->sched, f);
        free(f->args);
        f->args = NULL;
        f->args_len = 0;
        free(f->outcome);
        f->outcome = outcome;
        f->outcome_len = outcome_len;
        f->runner.job = NULL;
        x->ran += x->cluster && !x->recovering;
        set_state(x, f, state);
        if (x->fencing) { /* not this node's: its slot goes back, nothing is seen (on_fenced) */
                if (was_running)
                        scheduler_stopped(&x->sched, f);
                return;
        }
        /* Recovering also covers a finish read from the database (a job another node ran, in
         * cluster mode): committed already, seen at once. */
        if (!kept || x->recovering || !store_durable(x->store)) {
                publish(x, f, was_running);
                return;
        }
        f->shown = shown;
        f->unseen_running = was_running;
        f->unseen_seq = store_open_seq(x->store);
        assert(x->unseen.len < x->unseen.cap); /* reserved by its submit or its recovery */
        ring_push(&x->unseen, f->id, f->unseen_seq);
}

static void finish(Executor *x, Future *f, FutureState state, uint8_t *outcome,
                   uint32_t outcome_len) {
        finish_as(x, f, state, outcome, outcome_len, true);
}

/* Finishes `f` as failed with a failure map built from `code` (static) and `message`; `signal`
 * and `exit_status` are added when non-zero (worker_died). `kept` as for finish_as(). */
static void fail_as(Executor *x, Future *f, bool kept, const char *code, const char *message,
                    int signal, int exit_status) {
        JobFailure failure = { .code = code, .signal = signal, .exit_status = exit_status };
        msgpack_packer pk;
        ProtoBuf buf;

        snprintf(failure.message, sizeof(failure.message), "%s", message);
        proto_buf_init(&buf);
        proto_buf_packer(&buf, &pk);
        frame_pack_failure(&pk, &failure);
        finish_as(x, f, STATE_FAILED, buf.failed ? NULL : proto_buf_dup(&buf),
                  (uint32_t) buf.size, kept);
        proto_buf_deinit(&buf);
}

static void fail(Executor *x, Future *f, const char *code, const char *message, int signal,
                 int exit_status) {
        fail_as(x, f, true, code, message, signal, exit_status);
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
        log_fields(LOG_NOTICE, &(LogFields){ .future_id = f->id, .job_kind = f->kind->name },
                   "future %" PRIu64 " (%s) failed: %s", f->id, f->kind->name, message);
        fail(x, f, code, message, 0, 0);
        return true;
}

/* For tdestroy() of trees that borrow their nodes' items. */
static void free_nothing(void *p) {
}

static int key_cmp(const void *a, const void *b) {
        return strcmp(((const Future *) a)->key, ((const Future *) b)->key);
}

/* The retained future with the idempotency key of `spec` in `tree`, or NULL. */
static Future *key_find(void *const *tree, const JobSpec *spec) {
        char buf[PROTO_MAX_KEY + 1];
        Future probe = { .key = buf };
        Future **found;

        if (!spec->key || spec->key_len > PROTO_MAX_KEY)
                return NULL;
        memcpy(buf, spec->key, spec->key_len);
        buf[spec->key_len] = 0;
        found = tfind(&probe, tree, key_cmp);
        return found ? *found : NULL;
}

/* Forgets the idempotency key of `f` (released, expired, or never queued). */
static void key_drop(Executor *x, Future *f) {
        if (f->key && table_get(&x->table, f->id) == f)
                tdelete(f, &x->keys, key_cmp);
}

/* Drops the finished future `f`: it reports `expired` from now on. */
static void expire(Executor *x, Future *f) {
        key_drop(x, f);
        table_steal(&x->table, f->id);
        set_state(x, f, STATE_EXPIRED);
        scheduler_group_unref(&x->sched, f->group);
        f->group = NULL;
        scheduler_principal_unref(&x->sched, f->principal);
        f->principal = NULL;
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

/* Gives `f` (timeout_ms > 0) its timeout, unarmed. Returns 0, -ENOMEM, or timer_init()'s error
 * (f->timeout is then set, its timer not initialised: the caller frees it). */
static int timeout_new(Executor *x, Future *f) {
        f->timeout = alloc_calloc(1, sizeof(*f->timeout));
        if (!f->timeout)
                return -ENOMEM;
        f->timeout->future = f;
        f->timeout->executor = x;
        return timer_init(x->timers, &f->timeout->timer, on_job_timeout);
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
                /* The transfer counts its bytes in its principal's download_bytes: the item's
                 * reference keeps the principal until the item comes back, even when the future
                 * is released meanwhile. */
                j->principal = f->principal;
                if (j->principal)
                        j->principal->refs++;
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
        if (x->stopping) {
                store_flush(x->store);
                return false;
        }
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
        if (x->cluster)
                cluster_turn(x);
        /* The turn's changes go to the store thread as one batch (when none is in flight). */
        store_flush(x->store);
        return scheduler_ready(&x->sched, LANE_INLINE) > 0;
}

/* Takes a job its pool handed back out of the books. */
static void returned(Executor *x, PoolJob *j) {
        scheduler_principal_unref(&x->sched, TAKE_PTR(j->principal));
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

static void on_worker_died(void *userdata, uint64_t job, int pid, int signal, int exit_status) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, job);
        char message[160];

        if (!f || f->state != STATE_RUNNING)
                return;
        if (signal)
                snprintf(message, sizeof(message), "the worker process died of signal %d (%s)",
                         signal, strsignal(signal));
        else
                snprintf(message, sizeof(message), "the worker process exited with status %d",
                         exit_status);
        log_fields(LOG_WARNING,
                   &(LogFields){ .future_id = f->id, .job_kind = f->kind->name, .worker_pid = pid,
                                 .signal = signal },
                   "future %" PRIu64 " (%s): worker %d: %s", f->id, f->kind->name, pid, message);
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

/* Makes the future of one checked job, not yet in the table or a queue. Returns 0 or -ENOMEM.
 * Puts the future in *ret as soon as it exists, also when a later step fails: the caller then
 * discards the half-made future (discard()). */
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
        *ret = f;
        f->priority = spec->priority;
        f->timeout_ms = spec->timeout_ms;
        f->retries = spec->retries;
        if (spec->key) {
                f->key = alloc_malloc(spec->key_len + 1);
                if (!f->key)
                        return -ENOMEM;
                memcpy(f->key, spec->key, spec->key_len);
                f->key[spec->key_len] = 0;
        }
        if ((r = scheduler_principal_ref(&x->sched, spec->principal ?: PRINCIPAL_UNKNOWN,
                                         &f->principal)) < 0 ||
            (spec->group &&
             (r = scheduler_group_ref(&x->sched, spec->group, &f->group)) < 0))
                return r;
        return spec->timeout_ms ? timeout_new(x, f) : 0;
}

/* Frees a future that make_future() made (or half made) and that was never queued. */
static void discard(Executor *x, Future *f) {
        if (!f)
                return;
        scheduler_group_unref(&x->sched, f->group);
        f->group = NULL;
        scheduler_principal_unref(&x->sched, f->principal);
        f->principal = NULL;
        if (f->timeout)
                timer_deinit(x->timers, &f->timeout->timer);
        future_free(f);
}

/* With a durable store: room for `n` new futures to wait for their submit's commit, and for
 * every unfinished future (those and the ones before) to wait for its finish's. Returns 0 or
 * -ENOMEM. */
static int rings_reserve(Executor *x, size_t n) {
        int r = ring_reserve(&x->held, n);

        if (r < 0)
                return r;
        return ring_reserve(&x->unseen,
                            x->n_state[STATE_PENDING] + x->n_state[STATE_RUNNING] + n);
}

/* The quotas of principal `p` (NULL: none) with `n_new` more futures. Returns 0,
 * EXECUTOR_QUOTA_PENDING or EXECUTOR_QUOTA_RETAINED. */
static int check_quotas(const Executor *x, const Principal *p, uint32_t n_new) {
        uint64_t unfinished;

        if (!p)
                return 0;
        unfinished = (uint64_t) principal_unfinished(p) + n_new;
        if (x->cfg.quota_pending && unfinished > x->cfg.quota_pending)
                return EXECUTOR_QUOTA_PENDING;
        if (x->cfg.quota_retained && principal_retained(p) + unfinished > x->cfg.quota_retained)
                return EXECUTOR_QUOTA_RETAINED;
        return 0;
}

/* Takes `n` IDs from the store and makes the table issue them: a shared store's (postgresql)
 * may skip IDs that other nodes or an earlier run took. Returns 0, -ENOTCONN (the store cannot
 * issue IDs now) or -ENOMEM. */
static int issue_ids(Executor *x, uint32_t n) {
        uint64_t first = n ? store_issue_ids(x->store, n) : x->table.next_id;

        if (first == 0)
                return -ENOTCONN;
        return first > x->table.next_id ? table_set_next_id(&x->table, first) : 0;
}

/* Finished futures in the table. */
static uint64_t retained(const Executor *x) {
        return x->n_state[STATE_DONE] + x->n_state[STATE_FAILED] + x->n_state[STATE_CANCELLED];
}

uint64_t executor_retry_after_ms(const Executor *x) {
        uint64_t now = timer_now(), due = retention_next_deadline(&x->retention);

        if (due == 0) /* every result kept is waiting for its release */
                return (uint64_t) (x->cfg.retain * 1000) + 1;
        return due > now ? (due - now + 999999u) / 1000000u : 1;
}

int executor_submit(Executor *x, const JobSpec *specs, uint32_t n, uint64_t *ids,
                    uint64_t *ret_seq) {
        bool durable = store_durable(x->store);
        uint32_t per_lane[_LANE_MAX] = {}, n_new = 0;
        _cleanup_free_ Future **made = NULL;
        _cleanup_free_ uint32_t *same = NULL; /* same[i]: the job of this batch i repeats, + 1 */
        void *batch_keys = NULL;
        Principal *principal = NULL; /* of the batch, once a future is made */
        int r = 0;

        if (x->stopping)
                return EXECUTOR_STOPPING;
        if (x->n_state[STATE_PENDING] + x->n_state[STATE_RUNNING] + n > PROTO_MAX_PENDING)
                return EXECUTOR_QUEUE_FULL;
        if ((x->cfg.max_retained && retained(x) >= x->cfg.max_retained) ||
            (x->cfg.max_retained_bytes && x->retained_bytes >= x->cfg.max_retained_bytes))
                return EXECUTOR_RETAINED_FULL;
        made = alloc_calloc(n, sizeof(*made));
        same = alloc_calloc(n, sizeof(*same));
        if (!made || !same)
                return -ENOMEM;
        /* Make every future, then make room for them all; only then queue them, which cannot
         * fail: a batch is all or nothing, also when memory runs out half-way. A job whose key
         * is known already makes nothing. */
        for (uint32_t i = 0; i < n && r >= 0; i++) {
                Future *known = key_find(&x->keys, &specs[i]), *twin;
                if (known) {
                        ids[i] = known->id;
                        continue;
                }
                if ((twin = key_find(&batch_keys, &specs[i]))) {
                        for (uint32_t j = 0; j < i; j++)
                                if (made[j] == twin)
                                        same[i] = j + 1;
                        continue;
                }
                r = make_future(x, &specs[i], &made[i]);
                if (made[i])
                        principal = made[i]->principal;
                per_lane[scheduler_lane(specs[i].kind)]++;
                n_new++;
                if (r >= 0 && made[i]->key && !tsearch(made[i], &batch_keys, key_cmp))
                        r = -ENOMEM;
        }
        tdestroy(batch_keys, free_nothing);
        if (r >= 0)
                r = check_quotas(x, principal, n_new);
        for (unsigned lane = 0; lane < _LANE_MAX && r == 0; lane++)
                r = scheduler_reserve(&x->sched, principal, lane, per_lane[lane]);
        if (r == 0)
                r = issue_ids(x, n_new);
        if (r == 0)
                r = table_reserve(&x->table, n_new);
        if (r == 0 && durable)
                r = rings_reserve(x, n_new);
        if (r != 0) {
                for (uint32_t i = 0; i < n; i++)
                        discard(x, made[i]);
                return r == -ENOTCONN ? EXECUTOR_STORE_UNAVAILABLE : r;
        }
        if (x->cluster)
                cluster_place(x, specs, made, n);
        for (uint32_t i = 0; i < n; i++) {
                Future *f = made[i];
                if (!f) {
                        if (same[i])
                                ids[i] = ids[same[i] - 1];
                        continue;
                }
                r = table_add(&x->table, f);
                ids[i] = f->id;
                /* Open to any node: its final row is read when another node finishes it. */
                if (f->cluster & FUTURE_AWAY)
                        cluster_watch(x->cluster, f->id);
                /* The latest submit's limit wins; set only now, so a refused batch changes no
                 * group, and before the store hears of the job, which keeps the limit. */
                if (f->group && specs[i].group_limit)
                        scheduler_group_limit(&x->sched, f->group, specs[i].group_limit);
                set_state(x, f, STATE_PENDING);
                /* With a durable store the job starts once its batch is committed. */
                if (durable)
                        ring_push(&x->held, f->id, store_open_seq(x->store));
                else
                        r = r < 0 ? r : scheduler_push(&x->sched, f);
                assert(r >= 0); /* reserved above */
                /* tsearch() allocates: without memory the key is forgotten, the job kept. */
                if (f->key && !tsearch(f, &x->keys, key_cmp))
                        f->key = mfree(f->key);
        }
        *ret_seq = durable ? store_open_seq(x->store) : 0;
        return 0;
}

uint64_t executor_change_seq(Executor *x) {
        if (!store_durable(x->store))
                return 0;
        store_want_durable(x->store);
        return store_open_seq(x->store);
}

bool executor_seen(const Executor *x, uint64_t seq) {
        return seq <= x->seen_seq;
}

int executor_commit_result(const Executor *x, uint64_t seq) {
        if (seq > x->committed_seq)
                return EXECUTOR_UNCOMMITTED;
        for (unsigned i = 0; i < MIN(x->n_failed, ELEMENTSOF(x->failed)); i++)
                if (x->failed[i].seq == seq)
                        return x->failed[i].result;
        return 0;
}

/* The store is done with batch `seq`: its held futures start now, or, when it could not be
 * committed, fail (they were never acknowledged: a client waiting on them learns why). The
 * finishes it recorded are seen now; those of a batch that failed wait for the batch that
 * carries them over (store.c), unless the daemon is stopping. */
static void on_commit(void *userdata, uint64_t seq, int error) {
        Executor *x = userdata;
        int result = error == -ENOSPC      ? EXECUTOR_STORE_FULL
                     : error == -ENOTCONN ? EXECUTOR_STORE_UNAVAILABLE
                                          : EXECUTOR_STORE_FAILED;
        const RingItem *it;

        x->committed_seq = seq;
        if (error < 0) {
                x->failed[x->n_failed++ % ELEMENTSOF(x->failed)].seq = seq;
                x->failed[(x->n_failed - 1) % ELEMENTSOF(x->failed)].result = result;
        }
        if (error == 0 || x->stopping)
                x->seen_seq = seq;
        while (error == 0 || x->stopping) {
                Future *f;
                if (!(it = ring_peek(&x->unseen)) || it->key > seq)
                        break;
                f = table_get(&x->table, it->id);
                if (f && f->unseen_seq == it->key)
                        publish(x, f, f->unseen_running);
                ring_pop(&x->unseen);
        }
        while ((it = ring_peek(&x->held)) && it->key <= seq) {
                Future *f = table_get(&x->table, it->id);
                ring_pop(&x->held);
                if (!f || f->state != STATE_PENDING || f->heap_pos)
                        continue; /* cancelled meanwhile */
                if (error == -ENOTCONN)
                        fail_as(x, f, false, PROTO_F_STORE_UNAVAILABLE,
                                "the store's database could not be reached: the job was not kept",
                                0, 0);
                else if (error < 0)
                        fail_as(x, f, false,
                                error == -ENOSPC ? PROTO_F_STORE_FULL : PROTO_F_INTERNAL,
                                error == -ENOSPC ? "the store's disk is full: the job was not kept"
                                                 : "the store could not keep the job",
                                0, 0);
                else if (f->cluster & FUTURE_AWAY)
                        continue; /* open to any node: a claim brings it back */
                else if (scheduler_push(&x->sched, f) < 0)
                        fail(x, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
        }
}

bool executor_cancel(Executor *x, uint64_t id) {
        Future *f = table_get(&x->table, id);

        if (!f)
                return false;
        if ((f->cluster & FUTURE_AWAY) && !proto_state_final(f->state))
                return cluster_cancel(x->cluster, id) >= 0; /* the node that runs it stops it */
        /* Cancelled already: it is cancelled, as Python says. */
        return stop(x, f, STATE_CANCELLED, NULL) || f->state == STATE_CANCELLED;
}

bool executor_release(Executor *x, uint64_t id) {
        Future *f = table_get(&x->table, id);

        /* Not before its finish is seen (committed): it is not retained yet. */
        if (!f || !proto_state_final(future_visible_state(f)))
                return false;
        x->releasing = true;
        expire(x, f);
        x->releasing = false;
        /* Cluster mode: the other nodes drop their copies too. */
        if (x->cluster && cluster_released(x->cluster, id) < 0)
                log_error("future %" PRIu64 ": the other nodes keep their copies until they "
                          "expire: out of memory", id);
        return true;
}

const Table *executor_table(const Executor *x) {
        return &x->table;
}

WaiterSet *executor_waiters(Executor *x) {
        return &x->waiters;
}

void executor_stats(const Executor *x, ExecutorStats *ret) {
        unsigned queued = queued_in_pools(x, NULL), threads = 0;

        for (PoolJob *j = x->jobs; j; j = j->next)
                threads += j->kind->pool != POOL_TRANSFER && pooljob_started(j);
        *ret = (ExecutorStats){
                .submitted = x->submitted,
                .finished = x->finished,
                .threads_running = threads,
                .transfers_running = x->transfers_busy,
                .processes_running = procpool_busy(x->ppool),
                .processes_alive = procpool_alive(x->ppool),
                .workers_started = procpool_started(x->ppool),
                .workers_died = procpool_died(x->ppool),
                .deferred = x->waiters.n_deferred,
                .retained = retained(x),
                .retained_bytes = x->retained_bytes,
                .store = store_kind_name(x->store),
        };
        store_stats(x->store, &ret->store_stats);
        memcpy(ret->n_state, x->n_state, sizeof(ret->n_state));
        ret->n_state[STATE_PENDING] += queued;
        ret->n_state[STATE_RUNNING] -= queued;
}

void executor_counters(const Executor *x, Counters *ret) {
        uint64_t queued[_LANE_MAX] = {};

        *ret = x->counters;
        queued_in_pools(x, queued);
        for (unsigned l = 0; l < _LANE_MAX; l++) {
                ret->pending[l] += queued[l];
                ret->running[l] -= queued[l];
        }
}

void executor_time_runs(Executor *x) {
        x->counters.time_runs = true;
}

uint64_t executor_generation(const Executor *x) {
        /* The sum of what only grows moves the high bits; the deferred replies, which also
         * shrink (to a timeout, without any other change), the low ones. */
        return ((x->counters.changes + store_commits(x->store) + procpool_died(x->ppool)) << 32) +
               x->waiters.n_deferred;
}

void executor_reap(Executor *x) {
        procpool_reap(x->ppool);
}

void executor_stop(Executor *x, uint64_t *ret_running, uint64_t *ret_pending) {
        unsigned queued = queued_in_pools(x, NULL);

        *ret_running = x->n_state[STATE_RUNNING] - queued;
        *ret_pending = x->n_state[STATE_PENDING] + queued;
        x->stopping = true;
        /* Pending work never starts now, including thread jobs prefetched into the pool that no
         * thread has taken yet (clients see them pending). Running work goes on. */
        for (uint64_t id = x->table.base; id < x->table.next_id; id++) {
                Future *f = table_get(&x->table, id);
                /* A node of a cluster leaves them to the others (its lease goes as it stops). */
                if (f && future_visible_state(f) == STATE_PENDING && !x->cluster)
                        stop(x, f, STATE_CANCELLED, NULL);
        }
}

void executor_abort(Executor *x) {
        const RingItem *it;

        for (uint64_t id = x->table.base; id < x->table.next_id; id++) {
                Future *f = table_get(&x->table, id);
                if (f && f->state == STATE_RUNNING)
                        stop(x, f, STATE_FAILED, PROTO_F_SHUTDOWN);
        }
        /* The loop ends now; executor_free() commits these finishes before the process exits. */
        while ((it = ring_peek(&x->unseen))) {
                Future *f = table_get(&x->table, it->id);
                if (f && f->unseen_seq == it->key)
                        publish(x, f, f->unseen_running);
                ring_pop(&x->unseen);
        }
}

bool executor_settled(const Executor *x) {
        return x->n_state[STATE_RUNNING] == 0 && x->unseen.len == 0;
}

/* What recovery found, for its log line. */
typedef struct Recovery {
        Executor *x;
        uint64_t n_state[_STATE_MAX];
        uint64_t interrupted, retried;
        /* Finished futures with their retention deadlines, sorted before they are queued. */
        Retained *retained;
        size_t n_retained, cap_retained;
        int64_t now_wall_ms;
        uint64_t now_ns;
} Recovery;

/* Makes the Future of one stored job, as it was, in no table yet (NULL: of an unknown kind,
 * logged). Returns 0 or -ENOMEM. */
static int stored_future(Executor *x, const StoreJob *job, Future **ret) {
        JobSpec spec = {
                .kind = kind_find(job->kind, strlen(job->kind)),
                .group = job->group,
                .priority = job->priority,
                .timeout_ms = job->timeout_ms,
                .retries = job->retries,
        };
        uint8_t *args = NULL, *outcome = NULL;
        Future *f = NULL;
        int r;

        if (!spec.kind) {
                log_fields(LOG_WARNING, &(LogFields){ .future_id = job->id, .job_kind = job->kind },
                           "the store's job %" PRIu64 " is of an unknown kind '%s': it is dropped",
                           job->id, job->kind);
                *ret = NULL;
                return 0;
        }
        if (job->args_len && !(args = alloc_malloc(job->args_len)))
                return -ENOMEM;
        if (job->args_len)
                memcpy(args, job->args, job->args_len);
        if (job->outcome && !(outcome = alloc_malloc(job->outcome_len ? job->outcome_len : 1))) {
                free(args);
                return -ENOMEM;
        }
        if (job->outcome_len)
                memcpy(outcome, job->outcome, job->outcome_len);
        if ((r = future_new(&f, spec.kind, args, job->args_len)) < 0) {
                free(args);
                free(outcome);
                return r;
        }
        f->outcome = outcome;
        f->outcome_len = outcome ? job->outcome_len : 0;
        f->priority = job->priority;
        f->timeout_ms = job->timeout_ms;
        f->retries = job->retries;
        f->attempt = job->attempt;
        r = scheduler_principal_ref(&x->sched, job->principal ?: PRINCIPAL_UNKNOWN, &f->principal);
        if (r >= 0 && job->group)
                r = scheduler_group_ref(&x->sched, job->group, &f->group);
        if (r >= 0 && f->group && job->group_limit)
                scheduler_group_limit(&x->sched, f->group, job->group_limit);
        if (r >= 0 && job->timeout_ms && !proto_state_final(job->state))
                r = timeout_new(x, f);
        if (r < 0) {
                discard(x, f);
                return r;
        }
        *ret = f;
        return 0;
}

/* Makes the Future of one stored job, as it was. */
static int recover_job(void *userdata, const StoreJob *job) {
        Recovery *rec = userdata;
        Executor *x = rec->x;
        Future *f;
        int r = stored_future(x, job, &f);

        if (r < 0 || !f)
                return r;
        if (r >= 0 && job->key && !(f->key = alloc_strdup(job->key)))
                r = -ENOMEM;
        if (r >= 0)
                r = table_add_at(&x->table, f, job->id);
        if (r < 0) {
                discard(x, f);
                return r;
        }
        if (f->key && !tsearch(f, &x->keys, key_cmp))
                return -ENOMEM;
        rec->n_state[job->state < _STATE_MAX ? job->state : STATE_FAILED]++;
        if (proto_state_final(job->state)) {
                /* It keeps what is left of its retention time. */
                int64_t left_ms = job->finished_at_ms + (int64_t) (x->cfg.retain * 1000) -
                                  rec->now_wall_ms;
                uint64_t deadline = rec->now_ns + (uint64_t) MAX(left_ms, 0) * 1000000u;
                set_state(x, f, STATE_PENDING); /* counted as submitted once... */
                x->submitted--;                 /* ...which it was, before the restart */
                x->finished--;
                set_state(x, f, (FutureState) job->state);
                if (rec->n_retained == rec->cap_retained) {
                        size_t cap = rec->cap_retained ? rec->cap_retained * 2 : 4096;
                        Retained *p = realloc(rec->retained, cap * sizeof(*p));
                        if (!p)
                                return -ENOMEM;
                        rec->retained = p;
                        rec->cap_retained = cap;
                }
                rec->retained[rec->n_retained++] = (Retained){ .id = f->id, .deadline = deadline };
                return 0;
        }
        set_state(x, f, STATE_PENDING);
        x->submitted--;
        /* Pending, or running when futured stopped: runs again if its retries allow. */
        if (job->state == STATE_RUNNING) {
                unsigned runs_allowed = 1u + job->retries;
                if (job->attempt >= runs_allowed) {
                        rec->interrupted++;
                        f->heap_pos = 0;
                        return 0; /* failed below, once recovery writes to the store again */
                }
                rec->retried++;
        }
        f->retries = (uint8_t) (job->retries > job->attempt ? job->retries - job->attempt : 0);
        return scheduler_push(&x->sched, f);
}

static int retained_cmp(const void *a, const void *b) {
        const Retained *x = a, *y = b;

        return x->deadline < y->deadline ? -1 : x->deadline > y->deadline;
}

/* Loads every future the store keeps. Logs what it found and how long it took. */
static int recover(Executor *x) {
        Recovery rec = { .x = x, .now_wall_ms = wall_ms(), .now_ns = timer_now() };
        uint64_t t0 = timer_now();
        int r;

        x->recovering = true;
        r = store_recover(x->store, recover_job, &rec);
        x->recovering = false;
        /* Each unfinished future's finish will wait for its commit (rings_reserve). */
        if (r >= 0 && store_durable(x->store))
                r = ring_reserve(&x->unseen,
                                 x->n_state[STATE_PENDING] + x->n_state[STATE_RUNNING]);
        if (r >= 0) {
                if (rec.n_retained > 0)
                        qsort(rec.retained, rec.n_retained, sizeof(*rec.retained), retained_cmp);
                for (size_t i = 0; i < rec.n_retained && r >= 0; i++)
                        r = retention_add_at(&x->retention, rec.retained[i].id,
                                             rec.retained[i].deadline);
        }
        free(rec.retained);
        if (r < 0) {
                log_error("cannot recover the store's futures: %s", strerror(-r));
                return r;
        }
        /* Jobs that were running when futured stopped and have no retries left. */
        for (uint64_t id = x->table.base; rec.interrupted > 0 && id < x->table.next_id; id++) {
                Future *f = table_get(&x->table, id);
                if (f && f->state == STATE_PENDING && !f->heap_pos &&
                    f->attempt >= 1u + f->retries) {
                        fail(x, f, PROTO_F_INTERRUPTED,
                             "futured stopped while the job ran, and its retries were used up", 0,
                             0);
                }
        }
        r = table_set_next_id(&x->table, store_next_id(x->store));
        if (r < 0) {
                log_error("the store's next ID %" PRIu64 " is below its jobs'",
                          store_next_id(x->store));
                return -EBADMSG;
        }
        if (store_durable(x->store))
                log_info("recovered %" PRIu64 " pending, %" PRIu64 " running (%" PRIu64
                         " to run again, %" PRIu64 " interrupted), %" PRIu64 " done, %" PRIu64
                         " failed, %" PRIu64 " cancelled futures in %.3f s; next ID %" PRIu64,
                         rec.n_state[STATE_PENDING], rec.n_state[STATE_RUNNING], rec.retried,
                         rec.interrupted, rec.n_state[STATE_DONE], rec.n_state[STATE_FAILED],
                         rec.n_state[STATE_CANCELLED], (double) (timer_now() - t0) / 1e9,
                         store_next_id(x->store));
        return 0;
}

int executor_new(Executor **ret, Loop *loop, Events *events, const ExecutorConfig *cfg) {
        _cleanup_(executor_freep) Executor *x = calloc(1, sizeof(*x));
        int r;

        if (!x)
                return -ENOMEM;
        x->cfg = *cfg;
        x->cfg.worker_path = x->cfg.download_dir = x->cfg.store.path = NULL; /* borrowed */
        x->loop = loop;
        x->timers = loop_timers(loop);
        x->events = events;
        loop_file_init(&x->done_file);
        table_init(&x->table, 1);
        scheduler_init(&x->sched);
        scheduler_set_max_running(&x->sched, cfg->quota_running);
        counters_init(&x->counters);
        waiter_set_init(&x->waiters, &x->table, x->timers);
        r = retention_init(&x->retention, x->timers, (uint64_t) (cfg->retain * 1e9), on_retention,
                           x);
        if (r >= 0)
                r = timer_init(x->timers, &x->progress, on_progress);
        if (r < 0)
                return r;
        r = store_open(&x->store, &cfg->store, loop, on_commit, x);
        if (r < 0)
                return r;
        store_set_twin(x->store, on_twin);
        x->committed_seq = store_durable(x->store) ? store_open_seq(x->store) - 1 : 0;
        x->seen_seq = x->committed_seq;
        r = recover(x);
        if (r < 0)
                return r;
        if (cfg->store.cluster && (r = cluster_start(x, cfg->store.path)) < 0)
                return r;

        /* libcurl's global state must exist before any thread that may use it. */
        r = download_global_init(cfg->download_dir);
        if (r < 0) {
                log_error("cannot set up downloads (%s): %s",
                          cfg->download_dir ? cfg->download_dir : "no download directory",
                          strerror(-r));
                return r;
        }
        x->curl_ready = true;
        if (cfg->download_net && download_set_policy(cfg->download_net) < 0)
                return -ENOMEM;
        download_set_quota(cfg->quota_download_bytes);
        r = completion_new(&x->done);
        if (r >= 0)
                r = loop_add(loop, &x->done_file, completion_fd(x->done), EPOLLIN, on_done);
        if (r < 0) {
                log_error("cannot make the completion queue: %s", strerror(-r));
                return r;
        }
        r = threadpool_new(&x->tpool, cfg->threads, cfg->spin_us, x->done);
        if (r < 0) {
                log_error("cannot start the thread pool: %s", strerror(-r));
                return r;
        }
        r = transferpool_new(&x->xpool, x->done);
        if (r < 0) {
                log_error("cannot start the transfer thread: %s", strerror(-r));
                return r;
        }
        r = procpool_new(&x->ppool, loop, cfg->worker_path, cfg->processes, cfg->max_tasks,
                         &procpool_callbacks, x);
        if (r < 0) {
                log_error("cannot start the process pool with %s: %s",
                          cfg->worker_path, strerror(-r));
                return r;
        }
        *ret = TAKE_PTR(x);
        return 0;
}

int executor_reconfigure(Executor *x, const ExecutorConfig *cfg) {
        int r = download_set_dir(cfg->download_dir);

        if (r >= 0 && cfg->download_net)
                r = download_set_policy(cfg->download_net);
        if (r < 0)
                return r;
        x->cfg.retain = cfg->retain;
        x->cfg.max_retained = cfg->max_retained;
        x->cfg.max_retained_bytes = cfg->max_retained_bytes;
        retention_set_retain(&x->retention, (uint64_t) (cfg->retain * 1e9));
        x->cfg.transfers = cfg->transfers;
        x->cfg.prefetch = cfg->prefetch;
        x->cfg.spin_us = cfg->spin_us;
        threadpool_set_spin(x->tpool, cfg->spin_us);
        x->cfg.max_tasks = cfg->max_tasks;
        x->cfg.quota_pending = cfg->quota_pending;
        x->cfg.quota_retained = cfg->quota_retained;
        x->cfg.quota_running = cfg->quota_running;
        scheduler_set_max_running(&x->sched, cfg->quota_running);
        x->cfg.quota_download_bytes = cfg->quota_download_bytes;
        download_set_quota(cfg->quota_download_bytes);
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
        /* Every change is made: the store commits what is left and closes; then the node
         * leaves the cluster (its lease goes: the others take back what it leaves). */
        x->store = store_close(x->store);
        x->cluster = cluster_free(x->cluster);
        free(x->wanted.ids);
        free(x->twins.ids);
        if (x->table.remote) {
                size_t pos = 0;
                for (Future *f; (f = remote_next(&x->remote, &pos));)
                        if (f->timeout)
                                timer_deinit(x->timers, &f->timeout->timer);
        }
        loop_remove(x->loop, &x->done_file);
        x->done = completion_free(x->done);
        for (uint64_t id = x->table.base; id < x->table.next_id; id++) {
                Future *f = table_get(&x->table, id);
                if (f && f->timeout)
                        timer_deinit(x->timers, &f->timeout->timer);
        }
        timer_deinit(x->timers, &x->progress);
        retention_deinit(&x->retention);
        ring_deinit(&x->held);
        ring_deinit(&x->unseen);
        tdestroy(x->keys, free_nothing);
        /* The heaps tell their futures they left (setpos): before the table frees them. */
        scheduler_deinit(&x->sched);
        table_deinit(&x->table);
        free(x);
        return NULL;
}

/* Cluster mode (docs/CLUSTER.md). The cluster module (cluster.h) talks to the database on its
 * thread; what it learns comes in through the hooks below, on the loop thread, and changes the
 * futures through set_state() as everything else does. */

/* The room of each lane: jobs this node would start now beyond what it has (submits waiting
 * for their commit count against every lane). */
static void lane_room(const Executor *x, uint32_t room[CLUSTER_LANES]) {
        const uint32_t cap[CLUSTER_LANES] = {
                [LANE_THREAD] = x->cfg.threads + x->cfg.prefetch,
                [LANE_PROCESS] = x->cfg.processes,
                [LANE_TRANSFER] = x->cfg.transfers,
                [LANE_INLINE] = INLINE_BATCH,
        };
        const uint32_t busy[CLUSTER_LANES] = {
                [LANE_THREAD] = x->threads_busy,
                [LANE_PROCESS] = procpool_busy(x->ppool),
                [LANE_TRANSFER] = x->transfers_busy,
        };

        for (unsigned lane = 0; lane < CLUSTER_LANES; lane++) {
                uint64_t load = (uint64_t) busy[lane] + scheduler_ready(&x->sched, lane) +
                                x->held.len;
                room[lane] = x->stopping || load >= cap[lane] ? 0 : (uint32_t) (cap[lane] - load);
        }
}

/* A submit's new jobs: those the lanes have room for are reserved for this node (they run here
 * once committed); the others are open to any node. A job of an inline kind is always
 * reserved: it costs nothing to run and waits for no slot, so that another node's claim would
 * only add a statement. A job of a group with a limit is always open: the claims hold the
 * limit across the cluster (cluster.c). */
static void cluster_place(Executor *x, const JobSpec *specs, Future **made, uint32_t n) {
        uint32_t room[CLUSTER_LANES];

        lane_room(x, room);
        for (uint32_t i = 0; i < n; i++) {
                Future *f = made[i];
                unsigned lane;
                if (!f)
                        continue;
                lane = scheduler_lane(f->kind);
                if (f->group && (specs[i].group_limit || f->group->limit))
                        f->cluster = FUTURE_AWAY;
                else if (lane == LANE_INLINE)
                        continue;
                else if (room[lane] > 0)
                        room[lane]--;
                else
                        f->cluster = FUTURE_AWAY;
        }
}

static void want(Executor *x, uint64_t id) {
        (void) idlist_add(&x->wanted, id); /* without memory the next reconciliation reads it */
}

/* Once per turn: the room goes to the claims, the IDs wanted to a lookup. */
static void cluster_turn(Executor *x) {
        uint32_t room[CLUSTER_LANES];

        lane_room(x, room);
        cluster_set_room(x->cluster, room);
        cluster_set_listeners(x->cluster, store_commit_pid(x->store),
                              events_subscribed(x->events));
        if (x->wanted.n > 0 && cluster_lookup(x->cluster, x->wanted.ids, x->wanted.n))
                x->wanted.n = 0;
}

uint64_t executor_lookup(Executor *x, const uint64_t *ids, size_t n) {
        return x->cluster ? cluster_lookup(x->cluster, ids, n) : 0;
}

uint64_t executor_looked_up(const Executor *x) {
        return x->looked_up;
}

bool executor_lookup_failed(const Executor *x, uint64_t seq) {
        /* Lookups are answered in batches: a failed batch covers those asked since the last
         * answer before it. */
        return seq <= x->lookup_failed && seq > x->lookup_ok_before_failed;
}

bool executor_clustered(const Executor *x) {
        return x->cluster != NULL;
}

Cluster *executor_cluster(const Executor *x) {
        return x->cluster;
}

/* Makes the future of a row of another node's ID (claimed: `flags` FUTURE_FOREIGN; a mirror:
 * also FUTURE_AWAY), pending, or finished as the row is. A mirror of a job another node runs is
 * pending here and shows as running (FUTURE_STARTED). */
static int adopt(Executor *x, const StoreJob *job, uint8_t flags, Future **ret) {
        /* Runs before this one (a claim counted the one it starts). */
        unsigned done = job->state == STATE_RUNNING && job->attempt ? job->attempt - 1u
                                                                    : job->attempt;
        Future *f;
        int r = stored_future(x, job, &f);

        *ret = NULL;
        if (r < 0 || !f)
                return r;
        f->id = job->id;
        f->cluster = flags;
        if ((flags & FUTURE_AWAY) && job->state == STATE_RUNNING)
                f->cluster |= FUTURE_STARTED;
        f->retries = (uint8_t) (job->retries > done ? job->retries - done : 0);
        /* A claimed job runs here: its finish waits for its commit in `unseen` (room for every
         * unfinished future, as rings_reserve() makes at a submit). */
        if ((r = ring_reserve(&x->unseen, x->n_state[STATE_PENDING] +
                                                  x->n_state[STATE_RUNNING] + 1)) < 0 ||
            (r = remote_put(&x->remote, f)) < 0) {
                discard(x, f);
                return r;
        }
        x->recovering = true;
        set_state(x, f, STATE_PENDING);
        x->submitted--;
        if (proto_state_final(job->state)) {
                set_state(x, f, (FutureState) job->state);
                (void) retention_add(&x->retention, f->id, timer_now());
        }
        x->recovering = false;
        *ret = f;
        return 0;
}

/* A future whose finish the database refused (on_fenced) lost its arguments and its timeout
 * with that finish: claimed back, it takes them from the row again. Returns 0 or -errno. */
static int rearm(Executor *x, Future *f, const StoreJob *job) {
        int r = 0;

        if (!f->args && job->args_len) {
                if (!(f->args = alloc_malloc(job->args_len)))
                        return -ENOMEM;
                memcpy(f->args, job->args, job->args_len);
                f->args_len = job->args_len;
        }
        if (f->timeout_ms && !f->timeout && (r = timeout_new(x, f)) < 0)
                f->timeout = mfree(f->timeout);
        return r;
}

static void on_claimed(void *userdata, const StoreJob *job) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, job->id);

        if (f && (f->cluster & FUTURE_AWAY) && f->state == STATE_PENDING && !f->heap_pos) {
                /* One of ours, open until now. */
                f->cluster &= (uint8_t) ~(FUTURE_AWAY | FUTURE_STARTED);
                cluster_unwatch(x->cluster, f->id);
        } else if (f) {
                /* Finished here meanwhile (cancelled): the row is ours now, say so. */
                if (proto_state_final(f->state) &&
                    store_finish(x->store, f->id, f->state, f->outcome, f->outcome_len,
                                 wall_ms(), job->attempt) < 0)
                        log_error("future %" PRIu64 ": its state is not stored", f->id);
                return;
        } else if (adopt(x, job, FUTURE_FOREIGN, &f) < 0 || !f) {
                log_error("future %" PRIu64 ": cannot take it: out of memory", job->id);
                return;
        }
        /* The claim counted the attempt and wrote the start: the start here does not. */
        f->attempt = (uint8_t) (job->attempt - 1);
        f->cluster |= FUTURE_CLAIMED;
        if (rearm(x, f, job) < 0 || scheduler_push(&x->sched, f) < 0)
                fail(x, f, PROTO_F_INTERNAL, "out of memory", 0, 0);
}

static void on_row(void *userdata, const StoreJob *job) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, job->id);
        uint8_t *outcome = NULL;

        if (!f) {
                if (adopt(x, job, FUTURE_FOREIGN | FUTURE_AWAY, &f) < 0)
                        log_error("future %" PRIu64 ": cannot read it: out of memory", job->id);
                return;
        }
        /* A mirror shows whether another node runs it now (or runs it no more: taken back). */
        if ((f->cluster & FUTURE_AWAY) && f->state == STATE_PENDING) {
                if (job->state == STATE_RUNNING)
                        f->cluster |= FUTURE_STARTED;
                else if (job->state == STATE_PENDING)
                        f->cluster &= (uint8_t) ~FUTURE_STARTED;
        }
        /* Only what another node finished; a job running here is this node's to finish. */
        if (proto_state_final(f->state) || !proto_state_final(job->state) ||
            f->state == STATE_RUNNING)
                return;
        if (job->outcome && !(outcome = alloc_malloc(job->outcome_len ? job->outcome_len : 1)))
                return;
        if (job->outcome_len)
                memcpy(outcome, job->outcome, job->outcome_len);
        x->recovering = true; /* written by the node that finished it */
        finish(x, f, (FutureState) job->state, outcome, job->outcome ? job->outcome_len : 0);
        x->recovering = false;
}

static void on_looked_up(void *userdata, uint64_t seq, bool failed) {
        Executor *x = userdata;

        if (failed) {
                x->lookup_ok_before_failed = x->looked_up;
                x->lookup_failed = seq;
        }
        x->looked_up = MAX(x->looked_up, seq);
}

static void on_finished(void *userdata, uint64_t id) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, id);

        if (f && !proto_state_final(f->state) && f->state != STATE_RUNNING)
                want(x, id);
}

/* A job held here is finished from its row, as a lookup would; one this node holds nothing of
 * has its event published from the row: every node's subscribers see every finish. */
static void on_finished_row(void *userdata, const StoreJob *job) {
        Executor *x = userdata;

        if (table_get(&x->table, job->id))
                on_row(x, job);
        else if (proto_state_final(job->state))
                events_job(x->events, job->id, (FutureState) job->state, job->kind,
                           job->group ? job->group : "", job->outcome, job->outcome_len);
}

/* A node released job `id`: its row is deleted, this node's copy goes too (unwritten). */
static void on_released(void *userdata, uint64_t id) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, id);

        if (!f || !proto_state_final(future_visible_state(f)))
                return;
        x->recovering = true;
        expire(x, f);
        x->recovering = false;
}

/* Another node claimed job `id`: a pending mirror of it shows it running. */
static void on_started(void *userdata, uint64_t id) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, id);

        if (f && (f->cluster & FUTURE_AWAY) && f->state == STATE_PENDING)
                f->cluster |= FUTURE_STARTED;
}

static void on_cancel(void *userdata, uint64_t id) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, id);

        if (f && !(f->cluster & FUTURE_AWAY))
                (void) executor_cancel(x, id);
}

/* Reads again every job this node waits for another node to finish. */
static void on_reconcile(void *userdata) {
        Executor *x = userdata;
        size_t pos = 0;
        Future *f;

        for (uint64_t id = x->table.base; id < x->table.next_id; id++)
                if ((f = table_get(&x->table, id)) && (f->cluster & FUTURE_AWAY) &&
                    !proto_state_final(f->state))
                        want(x, id);
        while ((f = remote_next(&x->remote, &pos)))
                if ((f->cluster & FUTURE_AWAY) && !proto_state_final(f->state))
                        want(x, f->id);
}

/* The database refused a start or finish of job `id`: it is no longer this node's (its lease
 * expired and another node took the job back, or it was cancelled meanwhile). Called before the
 * commit of the batch that carried the change (on_commit), so that a refused finish is never
 * seen: its work here is stopped, the slot it held in its group and its principal's running
 * quota goes back, and its copy is dropped unwritten (a request on it reads the row again), or,
 * when waiters wait on it, becomes a pending mirror that the database's row finishes. A finish
 * seen before (a store failure's, never stored) stays as it is. */
static void on_fenced(void *userdata, uint64_t id) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, id);
        bool seen;

        if (!f || (f->cluster & FUTURE_AWAY))
                return; /* dropped, or a mirror, already: its start and finish were refused */
        seen = proto_state_final(f->state) && !f->unseen_seq;
        log_fields(LOG_WARNING, &(LogFields){ .future_id = id, .job_kind = f->kind->name },
                   "future %" PRIu64 ": no longer this node's (taken back or cancelled "
                   "elsewhere): its work here is dropped", id);
        x->fenced++;
        x->recovering = true;
        x->fencing = true;
        if (!proto_state_final(f->state))
                stop(x, f, STATE_CANCELLED, NULL);
        else if (f->unseen_seq && f->unseen_running)
                scheduler_stopped(&x->sched, f);
        x->fencing = false;
        f->unseen_seq = 0; /* its entry in `unseen` is skipped */
        f->unseen_running = false;
        if (!f->waiters)
                expire(x, f);
        else if (!seen) {
                x->retained_bytes -= f->outcome_len;
                f->outcome = mfree(f->outcome);
                f->outcome_len = 0;
                f->cluster = (uint8_t) ((f->cluster | FUTURE_AWAY) & ~FUTURE_STARTED);
                set_state(x, f, STATE_PENDING);
                want(x, id);
        }
        x->recovering = false;
}

/* The job `id` of a batch just committed was not inserted: the row `existing` has its
 * idempotency key (another node's submit, or one whose row this node did not hold). The job is
 * dropped before it starts (it never runs); its submit's reply names `existing` instead
 * (executor_twin), and a client waiting on it (reply "results") waits on `existing`, mirrored
 * here from its row. */
static void on_twin(void *userdata, uint64_t id, uint64_t existing) {
        Executor *x = userdata;
        Future *f = table_get(&x->table, id), *e = table_get(&x->table, existing);

        if (!f || f->state != STATE_PENDING || (f->cluster & FUTURE_FOREIGN))
                return;
        log_fields(LOG_INFO, &(LogFields){ .future_id = id, .job_kind = f->kind->name },
                   "future %" PRIu64 ": its idempotency key names future %" PRIu64 " already: "
                   "it is that one", id, existing);
        if (idlist_add(&x->twins, id) < 0 || idlist_add(&x->twins, existing) < 0) {
                x->twins.n -= x->twins.n % 2;
                log_error("future %" PRIu64 ": out of memory: its submit's reply names it, "
                          "though it does not run", id);
        }
        if (!e && x->cluster) {
                StoreJob job = { .id = existing, .kind = f->kind->name, .state = STATE_PENDING,
                                 .principal = f->principal ? f->principal->name : NULL };
                if (adopt(x, &job, FUTURE_FOREIGN | FUTURE_AWAY, &e) >= 0 && e)
                        want(x, existing); /* its row says what it is */
        }
        if (f->waiters && e)
                waiter_retarget(&x->waiters, f, e);
        x->recovering = true; /* it has no row */
        if (f->waiters) /* out of memory: they are told it failed */
                fail_as(x, f, false, PROTO_F_INTERNAL,
                        "its idempotency key names another future, which cannot be followed "
                        "here: out of memory", 0, 0);
        else {
                int k = counters_kind_index(&x->counters, f->kind);
                if (f->timeout) {
                        timer_deinit(x->timers, &f->timeout->timer);
                        f->timeout = mfree(f->timeout);
                }
                if (k >= 0) /* it was never a job of its own */
                        x->counters.submitted[k]--;
                x->submitted--;
                expire(x, f);
        }
        x->recovering = false;
}

uint64_t executor_twin(const Executor *x, uint64_t id) {
        for (size_t i = 0; i + 1 < x->twins.n; i += 2)
                if (x->twins.ids[i] == id)
                        return x->twins.ids[i + 1];
        return id;
}

void executor_twins_sent(Executor *x) {
        x->twins.n = 0;
}

static const ClusterHooks cluster_hooks = {
        .claimed = on_claimed,
        .row = on_row,
        .looked_up = on_looked_up,
        .finished_row = on_finished_row,
        .finished = on_finished,
        .started = on_started,
        .cancel = on_cancel,
        .released = on_released,
        .reconcile = on_reconcile,
};

/* Joins the cluster: the kinds each lane claims are those this node runs. */
static int cluster_start(Executor *x, const char *uri) {
        char kinds[CLUSTER_LANES][256];
        ClusterConfig cc = { .uri = uri, .owner = store_owner(x->store),
                             .lease_ms = x->cfg.store.lease_ms, .retain = x->cfg.retain };
        int r;

        for (unsigned lane = 0; lane < CLUSTER_LANES; lane++) {
                size_t len = (size_t) snprintf(kinds[lane], sizeof(kinds[lane]), "{");
                for (const JobKind *const *k = kind_all(); *k; k++)
                        if (scheduler_lane(*k) == lane &&
                            ((*k)->pool != POOL_PROCESS || x->cfg.processes > 0))
                                len += (size_t) snprintf(kinds[lane] + len,
                                                         sizeof(kinds[lane]) - len, "%s%s",
                                                         len > 1 ? "," : "", (*k)->name);
                snprintf(kinds[lane] + len, sizeof(kinds[lane]) - len, "}");
                cc.kinds[lane] = kinds[lane];
        }
        x->table.remote = &x->remote;
        store_set_fenced(x->store, on_fenced);
        r = cluster_new(&x->cluster, x->loop, &cc, &cluster_hooks, x);
        return r < 0 ? r : 0;
}

void executor_cluster_stats(const Executor *x, ExecutorClusterStats *ret) {
        ClusterStats cs = {};

        if (x->cluster)
                cluster_stats(x->cluster, &cs);
        *ret = (ExecutorClusterStats){ .on = x->cluster != NULL,
                                       .ran = x->ran,
                                       .claimed = cs.claimed,
                                       .taken_back = cs.taken_back,
                                       .expired = cs.expired,
                                       .notifications = cs.notifications,
                                       .lookups = cs.lookups,
                                       .lease_lost = cs.lease_lost,
                                       .fenced = x->fenced,
                                       .connected = cs.connected,
                                       .foreign = x->remote.count };
}
