/* store: see store.h. This file holds what every backend shares: the batches (an array of
 * change records and one byte buffer for the blobs and names they carry), the store thread with
 * its one batch in flight, and the hand-back to the loop through an eventfd. The SQLite backend's
 * SQL is sqlitestore.c; the memory store is no backend at all: it keeps nothing and commits
 * nothing. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "macro.h"
#include "now.h"
#include "pgstore.h"
#include "sqlitestore.h"
#include "store.h"
#include "thread.h"

/* Commit durations' histogram bounds, in seconds: a WAL commit without fsync takes tens of
 * microseconds, one with an fsync (sync=full) milliseconds, a slow disk up to seconds. */
static const double commit_bounds[] = {
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1, 5,
};

struct Store {
        StoreKind kind;
        StoreCommitFn on_commit;
        StoreFencedFn on_fenced;
        StoreTwinFn on_twin;
        void *userdata;
        Loop *loop;
        uint64_t next_id;
        bool clock_ids;        /* StoreConfig's */

        /* Loop thread only. */
        StoreBatch *open;      /* collecting this turn's changes */
        LoopFile done_file;    /* the eventfd the store thread writes after a commit */
        bool in_flight;        /* `flight` is the thread's */
        bool failing;          /* the last commit failed */
        bool wanted;           /* someone waits for the open batch, even an empty one */
        StoreStats stats;

        /* Shared, under `lock`. */
        pthread_mutex_t lock;
        pthread_cond_t wake;
        StoreBatch *flight;    /* handed to the thread; back when `committed` */
        bool committed;
        bool stopping;

        /* The store thread's. */
        SqliteStore *db;
        PgStore *pg;
        pthread_t thread;
        bool thread_started;
};

static StoreBatch *batch_new(uint64_t seq) {
        StoreBatch *b = calloc(1, sizeof(*b));

        if (b)
                b->seq = seq;
        return b;
}

static StoreBatch *batch_free(StoreBatch *b) {
        if (!b)
                return NULL;
        free(b->ops);
        free(b->bytes);
        free(b->fenced.ids);
        free(b->twins.ids);
        free(b);
        return NULL;
}

static void batch_reset(StoreBatch *b, uint64_t seq) {
        b->seq = seq;
        b->n_ops = b->n_bytes = b->fenced.n = b->twins.n = 0;
        b->error = 0;
        b->durable = false;
}

/* Appends `len` bytes (and a NUL when `nul`) to the batch's byte buffer; puts their offset.
 * Returns 0 or -ENOMEM. */
static int batch_bytes(StoreBatch *b, const void *data, size_t len, bool nul, uint32_t *ret_off) {
        size_t need = b->n_bytes + len + nul;

        if (need > UINT32_MAX)
                return -ENOMEM;
        if (need > b->cap_bytes) {
                size_t cap = b->cap_bytes ? b->cap_bytes * 2 : 65536;
                uint8_t *p;
                while (cap < need)
                        cap *= 2;
                p = alloc_realloc(b->bytes, cap);
                if (!p)
                        return -ENOMEM;
                b->bytes = p;
                b->cap_bytes = cap;
        }
        if (len)
                memcpy(b->bytes + b->n_bytes, data, len);
        if (nul)
                b->bytes[b->n_bytes + len] = 0;
        *ret_off = (uint32_t) b->n_bytes;
        b->n_bytes = need;
        return 0;
}

/* A new change record at the end of the open batch, zeroed but for `type` and `id`. */
static StoreOp *batch_op(StoreBatch *b, StoreOpType type, uint64_t id) {
        StoreOp *op;

        if (b->n_ops == b->cap_ops) {
                size_t cap = b->cap_ops ? b->cap_ops * 2 : 1024;
                StoreOp *ops = alloc_realloc(b->ops, cap * sizeof(*ops));
                if (!ops)
                        return NULL;
                b->ops = ops;
                b->cap_ops = cap;
        }
        op = &b->ops[b->n_ops++];
        *op = (StoreOp){ .type = type,
                         .id = id,
                         .group_off = STORE_NONE,
                         .key_off = STORE_NONE,
                         .principal_off = STORE_NONE };
        return op;
}

static void *thread_main(void *userdata) {
        Store *s = userdata;

        pthread_mutex_lock(&s->lock);
        for (;;) {
                StoreBatch *b;
                uint64_t t0, one = 1;

                while (!s->stopping && (!s->flight || s->committed))
                        pthread_cond_wait(&s->wake, &s->lock);
                if (!s->flight || s->committed)
                        break; /* stopping, nothing to do */
                b = s->flight;
                pthread_mutex_unlock(&s->lock);

                t0 = now_ns();
                b->error = s->pg ? pgstore_commit(s->pg, b) : sqlitestore_commit(s->db, b);
                b->commit_us = (now_ns() - t0) / 1000u;

                pthread_mutex_lock(&s->lock);
                s->committed = true;
                (void) !write(s->done_file.fd, &one, sizeof(one));
        }
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

/* A batch that could not be committed: its changes to jobs that exist already (starts,
 * finishes, removals) are carried into the open batch, ahead of what came since, so that they
 * are written once the store works again (the disk has room). Its new jobs are not: their
 * submits were never acknowledged, and the owner fails them. Returns 0 or -ENOMEM (the changes
 * are lost then: logged). */
static int carry_over(Store *s, StoreBatch *failed) {
        StoreBatch *open = s->open;
        size_t n = 0;
        uint32_t base;
        int r;

        for (size_t i = 0; i < failed->n_ops; i++)
                if (failed->ops[i].type != STORE_OP_ADD)
                        failed->ops[n++] = failed->ops[i];
        failed->n_ops = n;
        failed->fenced.n = failed->twins.n = 0;
        /* failed becomes the open batch: the open one's changes go after its own. */
        r = batch_bytes(failed, open->bytes, open->n_bytes, false, &base);
        for (size_t i = 0; r >= 0 && i < open->n_ops; i++) {
                StoreOp *op = batch_op(failed, open->ops[i].type, open->ops[i].id);
                if (!op) {
                        r = -ENOMEM;
                        break;
                }
                *op = open->ops[i];
                op->kind_off += base;
                op->args_off += base;
                op->outcome_off += base;
                if (op->group_off != STORE_NONE)
                        op->group_off += base;
                if (op->key_off != STORE_NONE)
                        op->key_off += base;
                if (op->principal_off != STORE_NONE)
                        op->principal_off += base;
        }
        if (r < 0) {
                log_error("out of memory: %zu changes to the store are lost", n);
                return r;
        }
        failed->seq = open->seq;
        failed->durable |= open->durable;
        s->open = failed;
        batch_reset(open, 0);
        s->flight = open; /* the spare */
        return 0;
}

/* A batch came back: tell the owner, make it the spare. */
static void on_done(LoopFile *lf, uint32_t events) {
        Store *s = container_of(lf, Store, done_file);
        StoreBatch *b;
        uint64_t v, seq;
        int error;

        (void) !read(lf->fd, &v, sizeof(v));
        pthread_mutex_lock(&s->lock);
        /* `committed` stays set until store_flush() hands the thread a new batch: the thread
         * commits a batch only while it is clear (at its stop too). */
        if (!s->in_flight || !s->committed) {
                pthread_mutex_unlock(&s->lock);
                return;
        }
        b = s->flight;
        pthread_mutex_unlock(&s->lock);
        s->in_flight = false;
        s->stats.last_batch = b->n_ops;
        s->stats.last_commit_us = b->commit_us;
        s->stats.commits++;
        s->stats.unflushed += s->pg && !b->durable;
        histogram_observe(&s->stats.commit_seconds, (double) b->commit_us / 1e6);
        seq = b->seq;
        error = b->error;
        if (error < 0) {
                /* Logged once per outage, not once per batch. */
                if (!s->failing)
                        log_error("cannot commit to the store: %s; new jobs are "
                                  "refused until it works again",
                                  strerror(-error));
                s->failing = true;
                (void) carry_over(s, b);
        } else if (s->failing) {
                log_notice("the store works again");
                s->failing = false;
        }
        if (error >= 0 && b->fenced.n > 0 && s->on_fenced)
                for (size_t i = 0; i < b->fenced.n; i++)
                        s->on_fenced(s->userdata, b->fenced.ids[i]);
        if (error >= 0 && s->on_twin)
                for (size_t i = 0; i + 1 < b->twins.n; i += 2)
                        s->on_twin(s->userdata, b->twins.ids[i], b->twins.ids[i + 1]);
        s->on_commit(s->userdata, seq, error);
        /* The next batch may have waited for this one. */
        store_flush(s);
}

bool store_durable(const Store *s) {
        return s->kind != STORE_MEMORY;
}

const char *store_kind_to_string(StoreKind kind) {
        return kind == STORE_SQLITE ? "sqlite" : kind == STORE_POSTGRESQL ? "postgresql" : "memory";
}

const char *store_kind_name(const Store *s) {
        return store_kind_to_string(s->kind);
}

/* The memory store's IDs: they start at the wall clock's microseconds since 1970, so that a
 * restarted daemon issues none that its previous run did (docs/DURABILITY.md). The IDs stay below
 * 2^53 (exact in a double) until the year 2255. */
static uint64_t clock_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static uint64_t memory_first_id(void) {
        return MAX(clock_us(), 1u);
}

/* At shutdown: a run that issued IDs faster than one per microsecond is ahead of the clock; it
 * waits (at most MEMORY_MAX_LEAD_US) until the clock passes its next ID, so that the next run
 * starts above every ID of this one. */
#define MEMORY_MAX_LEAD_US 10000000u
static void memory_wait_for_clock(uint64_t next_id) {
        uint64_t now = clock_us();

        if (next_id > now) {
                uint64_t lead = MIN(next_id - now, MEMORY_MAX_LEAD_US);
                struct timespec ts = { .tv_sec = (time_t) (lead / 1000000u),
                                       .tv_nsec = (long) (lead % 1000000u) * 1000 };
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
        }
}

uint64_t store_next_id(const Store *s) {
        return s->next_id;
}

uint64_t store_issue_ids(Store *s, uint32_t n) {
        uint64_t first = s->next_id;

        if (s->pg && n > 0 && !(first = pgstore_issue_ids(s->pg, n)))
                return 0;
        s->next_id = first + n;
        return first;
}

void store_want_durable(Store *s) {
        if (s->open)
                s->open->durable = true;
}

uint64_t store_open_seq(Store *s) {
        if (!s->open)
                return 0;
        /* The caller waits for this batch: it must be committed even if nothing more comes. */
        s->wanted = true;
        return s->open->seq;
}

int store_open(Store **ret, const StoreConfig *cfg, Loop *loop, StoreCommitFn on_commit,
               void *userdata) {
        _cleanup_(store_closep) Store *s = calloc(1, sizeof(*s));
        int r, fd;

        if (!s)
                return -ENOMEM;
        s->kind = cfg->kind;
        s->on_commit = on_commit;
        s->userdata = userdata;
        s->loop = loop;
        s->next_id = 1;
        histogram_init(&s->stats.commit_seconds, commit_bounds, ELEMENTSOF(commit_bounds));
        loop_file_init(&s->done_file);
        s->clock_ids = cfg->kind == STORE_MEMORY && cfg->clock_ids;
        if (s->clock_ids)
                s->next_id = memory_first_id();
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->wake, NULL);
        if (s->kind == STORE_MEMORY) {
                *ret = TAKE_PTR(s);
                return 0;
        }

        if (s->kind == STORE_POSTGRESQL)
                r = pgstore_open(&s->pg, cfg->path, cfg->cluster, &s->next_id);
        else
                r = sqlitestore_open(&s->db, cfg->path, cfg->sync == STORE_SYNC_FULL,
                                     &s->next_id);
        if (r < 0)
                return r;
        s->open = batch_new(1);
        s->flight = batch_new(0);
        if (!s->open || !s->flight)
                return -ENOMEM;
        /* The spare is no work for the thread: without this it would commit the empty batch at
         * once, on the connection that recovery is using meanwhile on this thread. */
        s->committed = true;
        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0)
                return -errno;
        r = loop_add(loop, &s->done_file, fd, EPOLLIN, on_done);
        if (r < 0) {
                close(fd);
                return r;
        }
        r = thread_start(&s->thread, thread_main, s);
        if (r < 0)
                return r;
        s->thread_started = true;
        *ret = TAKE_PTR(s);
        return 0;
}

int store_recover(Store *s, StoreRecoverFn fn, void *userdata) {
        if (s->kind == STORE_MEMORY)
                return 0;
        if (s->pg)
                return pgstore_recover(s->pg, fn, userdata);
        return sqlitestore_recover(s->db, fn, userdata);
}

void store_flush(Store *s) {
        StoreBatch *b;

        if (s->kind == STORE_MEMORY || s->in_flight || (s->open->n_ops == 0 && !s->wanted))
                return;
        s->wanted = false;
        pthread_mutex_lock(&s->lock);
        b = s->flight;
        s->flight = s->open;
        s->flight->next_id = s->next_id;
        s->committed = false;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        s->in_flight = true;
        batch_reset(b, s->flight->seq + 1);
        s->open = b;
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;
        if (s->clock_ids)
                memory_wait_for_clock(s->next_id);
        if (s->thread_started) {
                /* Wait for the batch in flight, then commit what is left, once. */
                for (int round = 0; round < 2; round++) {
                        while (s->in_flight) {
                                /* The thread writes the eventfd when it is done, as in a turn
                                 * of the loop: wait on it rather than poll the flag. */
                                struct pollfd pfd = { .fd = s->done_file.fd, .events = POLLIN };
                                (void) poll(&pfd, 1, -1);
                                on_done(&s->done_file, EPOLLIN);
                        }
                        store_flush(s);
                }
                pthread_mutex_lock(&s->lock);
                s->stopping = true;
                pthread_cond_signal(&s->wake);
                pthread_mutex_unlock(&s->lock);
                pthread_join(s->thread, NULL);
        }
        if (s->done_file.fd >= 0) {
                int fd = s->done_file.fd;
                loop_remove(s->loop, &s->done_file);
                close(fd);
        }
        s->db = sqlitestore_close(s->db);
        s->pg = pgstore_close(s->pg);
        batch_free(s->open);
        batch_free(s->flight);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
}

int store_add(Store *s, const StoreJob *job) {
        StoreBatch *b = s->open;
        StoreOp *op;
        int r;

        if (s->kind == STORE_MEMORY)
                return 0;
        op = batch_op(b, STORE_OP_ADD, job->id);
        if (!op)
                return -ENOMEM;
        op->state = job->state;
        op->priority = job->priority;
        op->timeout_ms = job->timeout_ms;
        op->retries = job->retries;
        op->attempt = job->attempt;
        op->open = job->open;
        op->group_limit = job->group_limit;
        op->args_len = job->args_len;
        if ((r = batch_bytes(b, job->kind, strlen(job->kind), true, &op->kind_off)) < 0 ||
            (r = batch_bytes(b, job->args, job->args_len, false, &op->args_off)) < 0 ||
            (job->group &&
             (r = batch_bytes(b, job->group, strlen(job->group), true, &op->group_off)) < 0) ||
            (job->key &&
             (r = batch_bytes(b, job->key, strlen(job->key), true, &op->key_off)) < 0) ||
            (job->principal && (r = batch_bytes(b, job->principal, strlen(job->principal), true,
                                                &op->principal_off)) < 0)) {
                b->n_ops--;
                return r;
        }
        return 0;
}

static int simple_op(Store *s, StoreOpType type, uint64_t id, uint8_t attempt) {
        StoreOp *op;

        if (s->kind == STORE_MEMORY)
                return 0;
        op = batch_op(s->open, type, id);
        if (!op)
                return -ENOMEM;
        op->attempt = attempt;
        /* A start alone is not worth a wait for the disk: lost in a crash of the database, the
         * job is pending again there, and the next durable commit carries it anyway. */
        s->open->durable |= type != STORE_OP_START;
        return 0;
}

int store_start(Store *s, uint64_t id, uint8_t attempt) {
        return simple_op(s, STORE_OP_START, id, attempt);
}

int store_requeue(Store *s, uint64_t id, uint8_t attempt) {
        return simple_op(s, STORE_OP_REQUEUE, id, attempt);
}

int store_remove(Store *s, uint64_t id) {
        return simple_op(s, STORE_OP_REMOVE, id, 0);
}

int store_finish(Store *s, uint64_t id, uint8_t state, const uint8_t *outcome, uint32_t len,
                 int64_t finished_at_ms, uint8_t attempt) {
        StoreBatch *b = s->open;
        StoreOp *op;

        if (s->kind == STORE_MEMORY)
                return 0;
        op = batch_op(b, STORE_OP_FINISH, id);
        if (!op)
                return -ENOMEM;
        b->durable = true; /* a result is reported only once it is on disk */
        op->state = state;
        op->attempt = attempt;
        op->finished_at_ms = finished_at_ms;
        op->outcome_len = outcome ? len : 0;
        op->has_outcome = outcome != NULL;
        if (outcome && batch_bytes(b, outcome, len, false, &op->outcome_off) < 0) {
                b->n_ops--;
                return -ENOMEM;
        }
        return 0;
}

void store_set_fenced(Store *s, StoreFencedFn fn) {
        s->on_fenced = fn;
}

void store_set_twin(Store *s, StoreTwinFn fn) {
        s->on_twin = fn;
}

const char *store_owner(const Store *s) {
        return s->pg ? pgstore_owner(s->pg) : NULL;
}

int store_commit_pid(const Store *s) {
        return s->pg ? pgstore_commit_pid(s->pg) : 0;
}

uint64_t store_commits(const Store *s) {
        return s->stats.commits;
}

void store_stats(const Store *s, StoreStats *ret) {
        *ret = s->stats;
        ret->failing = s->failing;
        ret->file_bytes = s->db ? sqlitestore_size(s->db) : 0;
}
