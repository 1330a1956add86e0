/* wedge: a test-only job kind, built with -Dtest-kinds=true and never in a release. Its start()
 * blocks the transfer thread for `seconds`, ignoring cancels, as a libcurl callback that hangs
 * would: the test of the watchdog needs a transfer thread that stops answering its ping while the
 * loop still serves clients. It then fails with `internal`. Runs on the transfer thread. */
#include <time.h>

#include "kind.h"
#include "wedge.h"

static int wedge_check(const msgpack_object *args, ProtoError *e) {
        double s;

        if (proto_get_number(proto_map_get(args, "seconds"), &s) < 0 || s < 0 || s > 600)
                return proto_error(e, PROTO_E_BAD_ARGS, "seconds",
                                   "'seconds' must be between 0 and 600");
        return 0;
}

static void *wedge_start(const msgpack_object *args, const JobContext *ctx, void **ret_state,
                         JobFailure *failure) {
        double seconds = 0;
        struct timespec ts;

        (void) proto_get_number(proto_map_get(args, "seconds"), &seconds);
        ts.tv_sec = (time_t) seconds;
        ts.tv_nsec = (long) ((seconds - (double) ts.tv_sec) * 1e9);
        while (nanosleep(&ts, &ts) < 0)
                ;
        job_failure(failure, PROTO_F_INTERNAL, "the wedge let go");
        return NULL;
}

static const JobParam wedge_params[] = {
        { "seconds", PARAM_FLOAT, true },
        {},
};

const JobKind wedge_kind = {
        .name = "wedge",
        .pool = POOL_TRANSFER,
        .params = wedge_params,
        .check = wedge_check,
        .start = wedge_start,
};
