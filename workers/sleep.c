/* sleep: the `sleep` job kind, the classic `loiter` demo. It waits in 10 ms slices so that a cancel
 * or a timeout stops it at once, and returns its argument. Runs in the thread pool. */
#include <errno.h>
#include <time.h>

#include "kind.h"
#include "now.h"

#define SLEEP_MAX 86400.0
#define SLICE_NS 10000000L

static int sleep_check(const msgpack_object *args, ProtoError *e) {
        double s;

        if (proto_get_number(proto_map_get(args, "seconds"), &s) < 0 || s < 0 || s > SLEEP_MAX)
                return proto_error(e, PROTO_E_BAD_ARGS, "seconds",
                                   "'seconds' must be between 0 and %.0f", SLEEP_MAX);
        return 0;
}

static int sleep_run(const msgpack_object *args, const JobContext *ctx, msgpack_packer *pk,
                     JobFailure *failure) {
        double seconds, end, left;

        if (proto_get_number(proto_map_get(args, "seconds"), &seconds) < 0)
                return job_failure(failure, PROTO_F_INTERNAL, "argument 'seconds' lost its type");
        end = now_seconds() + seconds;
        while ((left = end - now_seconds()) > 0) {
                long ns = left * 1e9 < SLICE_NS ? (long) (left * 1e9) : SLICE_NS;
                struct timespec ts = { 0, ns };

                if (ctx->cancel && atomic_load(ctx->cancel))
                        return job_failure(failure, PROTO_F_CANCELLED, "sleep stopped early");
                nanosleep(&ts, NULL);
        }
        msgpack_pack_map(pk, 1);
        proto_pack_str(pk, "seconds");
        msgpack_pack_double(pk, seconds);
        return 0;
}

static const JobParam sleep_params[] = {
        { "seconds", PARAM_FLOAT, true },
        {},
};

const JobKind sleep_kind = {
        .name = "sleep",
        .pool = POOL_THREAD,
        .params = sleep_params,
        .check = sleep_check,
        .run = sleep_run,
};
