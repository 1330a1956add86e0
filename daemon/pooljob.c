/* pooljob: see pooljob.h. The adapters below run on the pool threads: they decode the job's
 * arguments, call the kind, and leave the outcome (or the failure) packed in the item. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "frame.h"
#include "macro.h"
#include "now.h"
#include "pooljob.h"
#include "transferpool.h"

typedef struct ThreadJob {
        PoolJob job;
        Work work;
} ThreadJob;

typedef struct TransferJob {
        PoolJob job;
        Transfer xfer;
        JobContext ctx; /* must outlive the transfer */
        void *state;    /* the kind's, between start() and finish() */
} TransferJob;

/* The start both pools share, on their thread: marks the job taken and decodes its arguments
 * into `args` (the caller destroys it). Returns false with `failure` filled when the job must not
 * run. */
static bool job_begin(PoolJob *j, JobContext *ctx, msgpack_unpacked *args, JobFailure *failure) {
        *ctx = (JobContext){
                .cancel = &j->cancel,
                .progress_done = &j->progress_done,
                .progress_total = &j->progress_total,
                .download_held = j->principal ? &j->principal->download_bytes : NULL,
                .principal = j->principal ? j->principal->name : NULL,
        };
        msgpack_unpacked_init(args);
        msgpack_sbuffer_init(&j->out);
        atomic_store(&j->started_ns, now_ns());
        if (atomic_load(&j->cancel)) /* cancelled while it waited in the pool's queue */
                j->rc = job_failure(failure, PROTO_F_CANCELLED, "cancelled before it started");
        else if (msgpack_unpack_next(args, (const char *) j->args, j->args_len, NULL) !=
                 MSGPACK_UNPACK_SUCCESS)
                j->rc = job_failure(failure, PROTO_F_INTERNAL, "cannot decode the arguments");
        else
                return true;
        return false;
}

/* Packs the failure in place of anything packed so far, when j->rc says the job failed. */
static void job_end(PoolJob *j, const JobFailure *failure) {
        msgpack_packer pk;

        if (j->rc >= 0)
                return;
        j->out.size = 0;
        msgpack_packer_init(&pk, &j->out, msgpack_sbuffer_write);
        frame_pack_failure(&pk, failure);
}

/* Thread pool: run() on a pool thread. */
static void thread_job_run(Work *w) {
        ThreadJob *tj = container_of(w, ThreadJob, work);
        JobFailure failure = {};
        msgpack_unpacked args;
        msgpack_packer pk;
        JobContext ctx;

        if (job_begin(&tj->job, &ctx, &args, &failure)) {
                msgpack_packer_init(&pk, &tj->job.out, msgpack_sbuffer_write);
                tj->job.rc = tj->job.kind->run(&args.data, &ctx, &pk, &failure);
        }
        job_end(&tj->job, &failure);
        msgpack_unpacked_destroy(&args);
}

/* Transfer pool: start() and finish() on the transfer thread. */
static void *transfer_job_start(Transfer *t) {
        TransferJob *xj = container_of(t, TransferJob, xfer);
        JobFailure failure = {};
        msgpack_unpacked args;
        void *handle = NULL;

        if (job_begin(&xj->job, &xj->ctx, &args, &failure)) {
                handle = xj->job.kind->start(&args.data, &xj->ctx, &xj->state, &failure);
                if (!handle)
                        xj->job.rc = -EIO;
        }
        job_end(&xj->job, &failure);
        msgpack_unpacked_destroy(&args);
        return handle;
}

static void transfer_job_finish(Transfer *t, int result) {
        TransferJob *xj = container_of(t, TransferJob, xfer);
        JobFailure failure = {};
        msgpack_packer pk;

        msgpack_packer_init(&pk, &xj->job.out, msgpack_sbuffer_write);
        xj->job.rc = xj->job.kind->finish(TAKE_PTR(xj->state), result, &pk, &failure);
        job_end(&xj->job, &failure);
}

int pooljob_new(PoolJob **ret, uint64_t id, const JobKind *kind, uint8_t *args, uint32_t args_len) {
        PoolJob *j;

        if (kind->pool == POOL_TRANSFER) {
                TransferJob *xj = alloc_calloc(1, sizeof(*xj));
                if (!xj)
                        return -ENOMEM;
                xj->xfer.start = transfer_job_start;
                xj->xfer.finish = transfer_job_finish;
                xj->xfer.cancel = &xj->job.cancel;
                j = &xj->job;
        } else {
                ThreadJob *tj = alloc_calloc(1, sizeof(*tj));
                if (!tj)
                        return -ENOMEM;
                tj->work.run = thread_job_run;
                j = &tj->job;
        }
        j->id = id;
        j->kind = kind;
        j->args = args;
        j->args_len = args_len;
        msgpack_sbuffer_init(&j->out);
        *ret = j;
        return 0;
}

PoolJob *pooljob_free(PoolJob *j) {
        if (!j)
                return NULL;
        free(j->args);
        msgpack_sbuffer_destroy(&j->out);
        if (j->kind->pool == POOL_TRANSFER)
                free(container_of(j, TransferJob, job));
        else
                free(container_of(j, ThreadJob, job));
        return NULL;
}

Work *pooljob_work(PoolJob *j) {
        return &container_of(j, ThreadJob, job)->work;
}

Transfer *pooljob_transfer(PoolJob *j) {
        return &container_of(j, TransferJob, job)->xfer;
}

PoolJob *pooljob_from_work(Work *w) {
        /* Only thread items are run by the thread pool; a transfer item's Work only links it. */
        if (w->run == thread_job_run)
                return &container_of(w, ThreadJob, work)->job;
        return &container_of(w, TransferJob, xfer.work)->job;
}

int pooljob_take_outcome(PoolJob *j, uint8_t **ret, uint32_t *ret_len, bool *ret_ok) {
        uint8_t *copy = alloc_malloc(j->out.size ? j->out.size : 1);

        if (!copy)
                return -ENOMEM;
        if (j->out.size)
                memcpy(copy, j->out.data, j->out.size);
        *ret = copy;
        *ret_len = (uint32_t) j->out.size;
        *ret_ok = j->rc >= 0;
        return 0;
}

int pooljob_run_inline(const JobKind *kind, const uint8_t *args, uint32_t args_len, uint8_t **ret,
                       uint32_t *ret_len, bool *ret_ok) {
        static const atomic_int never = 0;
        JobContext ctx = { .cancel = &never };
        JobFailure failure = {};
        msgpack_unpacked unpacked;
        msgpack_packer pk;
        ProtoBuf out;
        uint8_t *copy;
        size_t size;
        int rc;

        proto_buf_init(&out);
        proto_buf_packer(&out, &pk);
        msgpack_unpacked_init(&unpacked);
        if (msgpack_unpack_next(&unpacked, (const char *) args, args_len, NULL) !=
            MSGPACK_UNPACK_SUCCESS)
                rc = job_failure(&failure, PROTO_F_INTERNAL, "cannot decode the arguments");
        else
                rc = kind->run(&unpacked.data, &ctx, &pk, &failure);
        msgpack_unpacked_destroy(&unpacked);
        if (rc < 0) {
                proto_buf_reset(&out);
                frame_pack_failure(&pk, &failure);
        }
        size = out.size;
        copy = out.failed ? NULL : alloc_malloc(size ? size : 1);
        if (copy && size)
                memcpy(copy, out.data, size);
        proto_buf_deinit(&out);
        if (!copy)
                return -ENOMEM;
        *ret = copy;
        *ret_len = (uint32_t) size;
        *ret_ok = rc >= 0;
        return 0;
}
