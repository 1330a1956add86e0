/* noop: the `noop` job kind. It does nothing and returns an empty map; the benchmarks use it to
 * measure what the daemon itself costs per job. A thread-pool kind that the daemon may run on
 * its loop thread (inline_run): it cannot block. */
#include "kind.h"

static int noop_run(const msgpack_object *args, const JobContext *ctx, msgpack_packer *pk,
                    JobFailure *failure) {
        msgpack_pack_map(pk, 0);
        return 0;
}

static const JobParam noop_params[] = {
        {},
};

const JobKind noop_kind = {
        .name = "noop",
        .pool = POOL_THREAD,
        .inline_run = true,
        .params = noop_params,
        .run = noop_run,
};
