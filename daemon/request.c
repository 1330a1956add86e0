/* request: see request.h. Each operation is one op_* function in the table of request_handle();
 * request_handle() itself checks only the frame (size, then the msgpack pre-scan, before anything
 * is decoded) and the envelope (version, id, op, fields), and a submit is split into check (every
 * job), create (the executor, all or nothing) and reply. Client text is UTF-8-checked where it is
 * read, before any message quotes it. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "macro.h"
#include "request.h"
#include "scheduler.h"
#include "waiter.h"

/* The decoded common part of a request, and its reply. */
typedef struct Request {
        Requests *rq;
        Peer from;
        bool has_id;
        uint64_t id;
        const msgpack_object *body;
        const uint8_t *frame; /* the request's bytes (`body` unpacked), for park_at() */
        size_t frame_len;
        uint64_t parked;    /* the lookup a replayed request was parked for; 0: none */
        Reply reply;        /* this request's own */
        msgpack_packer *pk; /* &reply.pk */
} Request;

/* A submit or cancel reply waiting for its store batch: packed, with a copy of where it goes. */
struct HeldReply {
        HeldReply *next;
        uint64_t seq;
        bool cancel;        /* a cancel's: it waits for its finishes to be seen */
        bool has_id;
        uint64_t req_id;
        bool envelope;
        uint8_t identity_len;
        uint8_t identity[255];
        uint64_t *ids;      /* a submit's: the IDs its reply names (executor_twin), or NULL */
        uint32_t n_ids;
        size_t len;
        uint8_t bytes[];
};

static void held_free(HeldReply *h) {
        free(h->ids);
        free(h);
}

static void reply_ok(Request *req, uint32_t n_fields) {
        reply_begin(&req->reply, req->has_id, req->id, true, n_fields);
}

static void send_reply(Request *req) {
        reply_send(&req->reply, req->rq->router, req->rq->backlog, &req->from);
}

static void reply_error(Request *req, const ProtoError *e) {
        reply_pack_error(&req->reply, req->has_id, req->id, e);
        send_reply(req);
}

static bool same_str(const msgpack_object *a, const msgpack_object *b) {
        return a->type == MSGPACK_OBJECT_STR && b->type == MSGPACK_OBJECT_STR &&
               a->via.str.size == b->via.str.size &&
               memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0;
}

static int out_of_memory(ProtoError *e) {
        return proto_error(e, PROTO_E_OUT_OF_MEMORY, NULL,
                           "futured is out of memory; nothing was done");
}

static void reply_out_of_memory(Request *req, ProtoError *e) {
        out_of_memory(e);
        reply_error(req, e);
}

/* Reads an optional number of seconds (nil or absent: `def`). Returns 0 or -EINVAL. */
static int get_seconds(const msgpack_object *o, double max, double def, double *ret) {
        double v;

        if (!o || o->type == MSGPACK_OBJECT_NIL) {
                *ret = def;
                return 0;
        }
        if (proto_get_number(o, &v) < 0 || v < 0 || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* Removes the later copies of repeated IDs from ids[0..*n), keeping the first of each in request
 * order, in O(n log n): a sorted copy without repeats, and one "kept" flag per distinct ID found
 * by binary search. Returns 0 or -ENOMEM (ids untouched). */
static int dedup_ids(uint64_t *ids, uint32_t *n) {
        _cleanup_free_ uint64_t *sorted = malloc(MAX(*n, 1u) * sizeof(*sorted));
        _cleanup_free_ bool *kept = NULL;
        uint32_t n_sorted = 0, out = 0;

        if (!sorted)
                return -ENOMEM;
        memcpy(sorted, ids, *n * sizeof(*ids));
        qsort(sorted, *n, sizeof(*sorted), cmp_u64);
        for (uint32_t i = 0; i < *n; i++)
                if (n_sorted == 0 || sorted[n_sorted - 1] != sorted[i])
                        sorted[n_sorted++] = sorted[i];
        if (n_sorted == *n)
                return 0;
        kept = calloc(n_sorted, sizeof(*kept));
        if (!kept)
                return -ENOMEM;
        for (uint32_t i = 0; i < *n; i++) {
                const uint64_t *at = bsearch(&ids[i], sorted, n_sorted, sizeof(*sorted), cmp_u64);
                size_t k = (size_t) (at - sorted);
                if (!kept[k]) {
                        kept[k] = true;
                        ids[out++] = ids[i];
                }
        }
        *n = out;
        return 0;
}

/* Reads the `ids` array: 1 (or 0 when `allow_empty`) to PROTO_MAX_IDS uints, into a malloc'ed
 * array with duplicates kept or removed (docs/PROTOCOL.md: wait and results remove them, in
 * request order; status, cancel and release answer each position). */
static int get_ids(const msgpack_object *body, bool allow_empty, bool dedup, uint64_t **ret,
                   uint32_t *ret_n, ProtoError *e) {
        const msgpack_object *o = proto_map_get(body, "ids");
        _cleanup_free_ uint64_t *ids = NULL;
        uint32_t n;

        if (!o)
                return proto_error(e, PROTO_E_BAD_REQUEST, "ids", "missing field 'ids'");
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return proto_error(e, PROTO_E_BAD_REQUEST, "ids", "'ids' must be an array");
        n = o->via.array.size;
        if (n > PROTO_MAX_IDS)
                return proto_error(e, PROTO_E_TOO_MANY, "ids", "%u IDs, at most %u allowed", n,
                                   PROTO_MAX_IDS);
        if (n == 0 && !allow_empty)
                return proto_error(e, PROTO_E_BAD_REQUEST, "ids", "'ids' must not be empty");
        ids = malloc(MAX(n, 1u) * sizeof(*ids));
        if (!ids)
                return out_of_memory(e);
        for (uint32_t i = 0; i < n; i++)
                if (proto_get_uint(&o->via.array.ptr[i], &ids[i]) < 0)
                        return proto_error(e, PROTO_E_BAD_REQUEST, "ids",
                                           "'ids' must hold unsigned integers");
        if (dedup && dedup_ids(ids, &n) < 0)
                return out_of_memory(e);
        *ret = TAKE_PTR(ids);
        *ret_n = n;
        return 0;
}

static void op_hello(Request *req, ProtoError *e) {
        msgpack_packer *pk = req->pk;
        const JobKind *const *kinds = kind_all();
        uint32_t n_kinds = 0;

        while (kinds[n_kinds])
                n_kinds++;
        reply_ok(req, 11);
        proto_pack_str(pk, "principal");
        proto_pack_str(pk, req->from.principal ? req->from.principal : PRINCIPAL_UNKNOWN);
        proto_pack_str(pk, "quotas");
        msgpack_pack_map(pk, 5);
        proto_pack_str(pk, "pending");
        msgpack_pack_uint32(pk, req->rq->quota_pending);
        proto_pack_str(pk, "running");
        msgpack_pack_uint32(pk, req->rq->quota_running);
        proto_pack_str(pk, "retained");
        msgpack_pack_uint32(pk, req->rq->quota_retained);
        proto_pack_str(pk, "deferred");
        msgpack_pack_uint32(pk, req->rq->quota_deferred);
        proto_pack_str(pk, "download_bytes");
        msgpack_pack_uint64(pk, req->rq->quota_download_bytes);
        proto_pack_str(pk, "version");
        msgpack_pack_uint8(pk, PROTO_VERSION);
        proto_pack_str(pk, "server");
        proto_pack_str(pk, "futured " FUTURED_VERSION);
        proto_pack_str(pk, "events");
        proto_pack_str(pk, req->rq->events_endpoint);
        proto_pack_str(pk, "threads");
        msgpack_pack_uint32(pk, req->rq->threads);
        proto_pack_str(pk, "transfers");
        msgpack_pack_uint32(pk, req->rq->transfers);
        proto_pack_str(pk, "processes");
        msgpack_pack_uint32(pk, req->rq->processes);
        proto_pack_str(pk, "store");
        proto_pack_str(pk, req->rq->store);
        proto_pack_str(pk, "limits");
        msgpack_pack_map(pk, 9);
        proto_pack_str(pk, "max_deferred_total");
        msgpack_pack_uint64(pk, executor_waiters(req->rq->executor)->max_deferred);
        proto_pack_str(pk, "max_deferred_ids");
        msgpack_pack_uint64(pk, executor_waiters(req->rq->executor)->max_ids);
        proto_pack_str(pk, "max_retained");
        msgpack_pack_uint64(pk, req->rq->max_retained);
        proto_pack_str(pk, "max_retained_bytes");
        msgpack_pack_uint64(pk, req->rq->max_retained_bytes);
        proto_pack_str(pk, "max_message");
        msgpack_pack_uint32(pk, PROTO_MAX_MESSAGE);
        proto_pack_str(pk, "max_batch");
        msgpack_pack_uint32(pk, PROTO_MAX_BATCH);
        proto_pack_str(pk, "max_ids");
        msgpack_pack_uint32(pk, PROTO_MAX_IDS);
        proto_pack_str(pk, "max_pending");
        msgpack_pack_uint32(pk, PROTO_MAX_PENDING);
        proto_pack_str(pk, "max_deferred");
        msgpack_pack_uint32(pk, PROTO_MAX_DEFERRED);
        proto_pack_str(pk, "kinds");
        msgpack_pack_array(pk, n_kinds);
        for (uint32_t i = 0; i < n_kinds; i++) {
                static const char *const type_names[] = {
                        [PARAM_UINT] = "uint", [PARAM_FLOAT] = "float",
                        [PARAM_STR] = "str",   [PARAM_BOOL] = "bool",
                };
                uint32_t n_params = 0;
                while (kinds[i]->params && kinds[i]->params[n_params].name)
                        n_params++;
                msgpack_pack_map(pk, 3);
                proto_pack_str(pk, "name");
                proto_pack_str(pk, kinds[i]->name);
                proto_pack_str(pk, "pool");
                proto_pack_str(pk, pool_name(kinds[i]->pool));
                proto_pack_str(pk, "params");
                msgpack_pack_array(pk, n_params);
                for (uint32_t j = 0; j < n_params; j++) {
                        const JobParam *p = &kinds[i]->params[j];
                        msgpack_pack_map(pk, 3);
                        proto_pack_str(pk, "name");
                        proto_pack_str(pk, p->name);
                        proto_pack_str(pk, "type");
                        proto_pack_str(pk, type_names[p->type]);
                        proto_pack_str(pk, "required");
                        if (p->required)
                                msgpack_pack_true(pk);
                        else
                                msgpack_pack_false(pk);
                }
        }
        send_reply(req);
}

/* The checks of a job's `args` that the kind's own do not make: at most PROTO_MAX_ARGS entries,
 * each name given once, names and str values UTF-8 text (before kind_validate(), whose messages
 * may quote them). The `field` of a bad value is its name (a copy in e->field_buf). Returns 0 or
 * -EINVAL with `e` filled (bad_args). */
static int check_args_text(const msgpack_object *args, ProtoError *e) {
        if (args->type != MSGPACK_OBJECT_MAP)
                return 0; /* kind_validate() refuses it */
        if (args->via.map.size > PROTO_MAX_ARGS)
                return proto_error(e, PROTO_E_BAD_ARGS, "args", "at most %u arguments",
                                   PROTO_MAX_ARGS);
        for (uint32_t i = 0; i < args->via.map.size; i++) {
                const msgpack_object *key = &args->via.map.ptr[i].key;
                const msgpack_object *val = &args->via.map.ptr[i].val;

                if (key->type != MSGPACK_OBJECT_STR)
                        continue; /* kind_validate() refuses it */
                if (!proto_is_text(key) || memchr(key->via.str.ptr, 0, key->via.str.size))
                        return proto_error(e, PROTO_E_BAD_ARGS, "args",
                                           "argument names must be UTF-8 text");
                /* Quadratic, but over at most PROTO_MAX_ARGS names. */
                for (uint32_t j = 0; j < i; j++)
                        if (same_str(&args->via.map.ptr[j].key, key))
                                return proto_error(e, PROTO_E_BAD_ARGS, "args",
                                                   "argument '%.*s' is given twice",
                                                   (int) proto_utf8_prefix(key->via.str.ptr,
                                                                           key->via.str.size,
                                                                           PROTO_MAX_QUOTE),
                                                   key->via.str.ptr);
                if (val->type == MSGPACK_OBJECT_STR && !proto_is_text(val)) {
                        size_t n = proto_utf8_prefix(key->via.str.ptr, key->via.str.size,
                                                     PROTO_MAX_QUOTE);
                        memcpy(e->field_buf, key->via.str.ptr, n);
                        e->field_buf[n] = 0;
                        return proto_error(e, PROTO_E_BAD_ARGS, e->field_buf,
                                           "argument '%s' must be UTF-8 text", e->field_buf);
                }
        }
        return 0;
}

/* Checks one job of a submit into `spec`; its group name, if any, is copied to `group` (which
 * spec->group then points at). Returns 0 or -EINVAL with `e` filled. */
static int check_job(const msgpack_object *job, JobSpec *spec, char group[PROTO_MAX_GROUP + 1],
                     ProtoError *e) {
        static const char *const fields[] = { "kind", "args", "priority", "timeout", "group",
                                              "group_limit", "retries", "idempotency_key", NULL };
        static const msgpack_object no_args = { .type = MSGPACK_OBJECT_MAP };
        const msgpack_object *o;
        uint64_t u;
        int64_t i;
        double t;
        int r;

        *spec = (JobSpec){};
        if (job->type != MSGPACK_OBJECT_MAP)
                return proto_error(e, PROTO_E_BAD_REQUEST, NULL, "a job must be a map");
        r = proto_check_fields(job, fields, e);
        if (r < 0)
                return r;
        o = proto_map_get(job, "kind");
        if (!proto_is_text(o))
                return proto_error(e, PROTO_E_BAD_REQUEST, "kind",
                                   "a job needs a 'kind' string of UTF-8 text");
        spec->kind = kind_find(o->via.str.ptr, o->via.str.size);
        if (!spec->kind)
                return proto_error(e, PROTO_E_UNKNOWN_KIND, "kind", "no job kind '%.*s'",
                                   (int) proto_utf8_prefix(o->via.str.ptr, o->via.str.size,
                                                           PROTO_MAX_QUOTE),
                                   o->via.str.ptr);
        spec->args = proto_map_get(job, "args") ?: &no_args;
        r = check_args_text(spec->args, e);
        if (r < 0)
                return r;
        r = kind_validate(spec->kind, spec->args, e);
        if (r < 0)
                return r;
        if ((o = proto_map_get(job, "priority")) &&
            (proto_get_int(o, &i) < 0 || i < -PROTO_MAX_PRIORITY || i > PROTO_MAX_PRIORITY))
                return proto_error(e, PROTO_E_BAD_REQUEST, "priority",
                                   "'priority' must be an integer from %d to %d",
                                   -PROTO_MAX_PRIORITY, PROTO_MAX_PRIORITY);
        spec->priority = (int16_t) (o ? i : 0);
        if (get_seconds(proto_map_get(job, "timeout"), 4e6, 0, &t) < 0)
                return proto_error(e, PROTO_E_BAD_REQUEST, "timeout",
                                   "'timeout' must be a number of seconds from 0 to 4e6");
        spec->timeout_ms = (uint32_t) ceil(t * 1000.0);
        if ((o = proto_map_get(job, "group"))) {
                if (!proto_is_text(o) || o->via.str.size == 0 ||
                    o->via.str.size > PROTO_MAX_GROUP || memchr(o->via.str.ptr, 0, o->via.str.size))
                        return proto_error(e, PROTO_E_BAD_REQUEST, "group",
                                           "'group' must be UTF-8 text of 1 to %u bytes, no NUL",
                                           PROTO_MAX_GROUP);
                memcpy(group, o->via.str.ptr, o->via.str.size);
                group[o->via.str.size] = 0;
                spec->group = group;
        }
        if ((o = proto_map_get(job, "group_limit"))) {
                if (proto_get_uint(o, &u) < 0 || u > UINT32_MAX)
                        return proto_error(e, PROTO_E_BAD_REQUEST, "group_limit",
                                           "'group_limit' must be an unsigned 32-bit integer");
                spec->group_limit = (uint32_t) u;
                if (!spec->group && spec->group_limit)
                        return proto_error(e, PROTO_E_BAD_REQUEST, "group_limit",
                                           "'group_limit' needs a 'group'");
        }
        if ((o = proto_map_get(job, "retries")) &&
            (proto_get_uint(o, &u) < 0 || u > PROTO_MAX_RETRIES))
                return proto_error(e, PROTO_E_BAD_REQUEST, "retries",
                                   "'retries' must be an integer from 0 to %u", PROTO_MAX_RETRIES);
        spec->retries = (uint8_t) (o ? u : 0);
        if ((o = proto_map_get(job, "idempotency_key"))) {
                if (!proto_is_text(o) || o->via.str.size == 0 || o->via.str.size > PROTO_MAX_KEY ||
                    memchr(o->via.str.ptr, 0, o->via.str.size))
                        return proto_error(e, PROTO_E_BAD_REQUEST, "idempotency_key",
                                           "'idempotency_key' must be UTF-8 text of 1 to %u bytes",
                                           PROTO_MAX_KEY);
                spec->key = o->via.str.ptr;
                spec->key_len = o->via.str.size;
        }
        return 0;
}

/* Reads the `reply` field of a submit: false for "ids" (the default), true for "results". */
static int get_reply_mode(const msgpack_object *body, bool *ret, ProtoError *e) {
        const msgpack_object *o = proto_map_get(body, "reply");

        *ret = o && proto_str_eq(o, "results");
        if (o && !*ret && !proto_str_eq(o, "ids"))
                return proto_error(e, PROTO_E_BAD_REQUEST, "reply",
                                   "'reply' must be \"ids\" or \"results\"");
        return 0;
}

/* The check step of a submit: every job, before anything is queued. Returns 0 or -errno with `e`
 * filled (and e->index naming the job at fault). */
static int check_submit(const msgpack_object *jobs, JobSpec *specs,
                        char (*groups)[PROTO_MAX_GROUP + 1], ProtoError *e) {
        for (uint32_t i = 0; i < jobs->via.array.size; i++)
                if (check_job(&jobs->via.array.ptr[i], &specs[i], groups[i], e) < 0) {
                        e->index = i;
                        return -EINVAL;
                }
        return 0;
}

/* The reply step of a submit with reply "results": a deferred reply for the whole batch (the
 * jobs start only in the loop's before-sleep hook, after the waiter exists). Returns false when
 * it could not be deferred for lack of memory: the caller answers with the IDs then. */
/* An ID and where it stands in the batch. */
typedef struct Placed {
        uint64_t id;
        uint32_t index;
} Placed;

static int placed_cmp(const void *a, const void *b) {
        const Placed *x = a, *y = b;

        if (x->id != y->id)
                return x->id < y->id ? -1 : 1;
        return x->index < y->index ? -1 : x->index > y->index;
}

/* Learns which connection `req` came on, for a deferred reply. Returns false when it is closed
 * already: nobody is there to answer, and nothing is deferred. */
static bool know_connection(Request *req) {
        Requests *rq = req->rq;

        if (rq->connection && req->from.fd >= 0)
                req->from.conn = rq->connection(rq->connection_data, req->from.fd);
        return req->from.conn != REQUEST_CONN_GONE;
}

/* The error of waiter_start() or waiter_can_defer() refusing to defer: `r` is WAITER_QUOTA,
 * WAITER_PRINCIPAL_QUOTA or WAITER_FULL. */
static void reply_cannot_defer(Request *req, int r, ProtoError *e) {
        const WaiterSet *set = executor_waiters(req->rq->executor);

        if (r == WAITER_QUOTA)
                proto_error(e, PROTO_E_TOO_MANY_DEFERRED, NULL,
                            "%u outstanding deferred replies is the limit per client",
                            PROTO_MAX_DEFERRED);
        else if (r == WAITER_PRINCIPAL_QUOTA)
                proto_error(e, PROTO_E_QUOTA_EXCEEDED, NULL,
                            "%s: %u outstanding deferred replies is the quota of each principal",
                            req->from.principal ? req->from.principal : PRINCIPAL_UNKNOWN,
                            req->rq->quota_deferred);
        else
                proto_error(e, PROTO_E_TOO_MANY_DEFERRED, NULL,
                            "the daemon holds %" PRIu64 " deferred replies on %" PRIu64 " IDs; "
                            "the limit is %" PRIu64 " on %" PRIu64 " IDs",
                            set->n_deferred, set->n_ids, set->max_deferred, set->max_ids);
        reply_error(req, e);
}

static bool defer_results(Request *req, const uint64_t *ids, uint32_t n) {
        _cleanup_free_ Placed *placed = malloc(n * sizeof(*placed));
        _cleanup_free_ bool *first = calloc(n, sizeof(*first));
        _cleanup_free_ uint64_t *unique = malloc(n * sizeof(*unique));
        uint32_t n_unique = 0;

        if (!placed || !first || !unique)
                return false;
        if (!know_connection(req))
                return true; /* the client is gone: its jobs run, nobody waits */
        /* Idempotency keys may repeat an ID within a batch; a waiter wants each once, in the
         * order of its first job: O(n log n), whatever the batch. */
        for (uint32_t i = 0; i < n; i++)
                placed[i] = (Placed){ .id = ids[i], .index = i };
        qsort(placed, n, sizeof(*placed), placed_cmp);
        for (uint32_t i = 0; i < n; i++)
                if (i == 0 || placed[i].id != placed[i - 1].id)
                        first[placed[i].index] = true;
        for (uint32_t i = 0; i < n; i++)
                if (first[i])
                        unique[n_unique++] = ids[i];
        return waiter_start(executor_waiters(req->rq->executor), &req->from, req->id,
                            WAIT_RESULTS, unique, n_unique, -1) == 0;
}

/* Keeps the packed reply of a submit until the store has committed batch `seq`: a submit is
 * acknowledged only once its jobs are on disk. Likewise a `cancel`, whose futures read cancelled
 * only once their finish is seen (executor_seen(): committed, also when batch `seq` failed and
 * a later one carried it). A submit's `ids` (copied; NULL for a cancel) are those its reply
 * names: packed again when the commit found some of them to be twins (executor_twin). Returns
 * false when it cannot (out of memory, or a routing id too long to copy): the caller sends it
 * at once then, acknowledging early rather than never. */
static bool hold_reply(Request *req, uint64_t seq, bool cancel, const uint64_t *ids,
                       uint32_t n_ids) {
        Requests *rq = req->rq;
        HeldReply *h;

        if (req->reply.buf.failed || req->from.identity_len > sizeof(h->identity))
                return false;
        h = malloc(sizeof(*h) + req->reply.buf.size);
        if (!h)
                return false;
        *h = (HeldReply){
                .seq = seq,
                .cancel = cancel,
                .has_id = req->has_id,
                .req_id = req->id,
                .envelope = req->from.envelope,
                .identity_len = (uint8_t) req->from.identity_len,
                .len = req->reply.buf.size,
        };
        memcpy(h->identity, req->from.identity, req->from.identity_len);
        memcpy(h->bytes, req->reply.buf.data, req->reply.buf.size);
        if (ids && !(h->ids = malloc(n_ids * sizeof(*ids)))) {
                free(h);
                return false;
        }
        if (ids)
                memcpy(h->ids, ids, n_ids * sizeof(*ids));
        h->n_ids = ids ? n_ids : 0;
        QUEUE_APPEND(rq->held, rq->held_tail, h);
        return true;
}

static void store_unavailable(ProtoError *e) {
        proto_error(e, PROTO_E_STORE_UNAVAILABLE, NULL,
                    "the store's database cannot be reached: no job of the batch was kept; try "
                    "again later");
}

/* Whether a held submit's reply names a job that the commit found to be a twin. */
static bool twins_in(Requests *rq, const HeldReply *h) {
        for (uint32_t i = 0; i < h->n_ids; i++)
                if (executor_twin(rq->executor, h->ids[i]) != h->ids[i])
                        return true;
        return false;
}

/* Sends the held replies whose batch the store is done with: a submit's as packed when it was
 * committed, else the error saying why the jobs were not kept; a cancel's once its finishes are
 * seen. The list is in batch order: it stops at the first batch not done yet. */
static void release_held(Requests *rq) {
        HeldReply *h, *prev = NULL;
        int r;

        while ((h = prev ? prev->next : rq->held) &&
               (r = executor_commit_result(rq->executor, h->seq)) != EXECUTOR_UNCOMMITTED) {
                Peer to = { .identity = h->identity, .identity_len = h->identity_len,
                            .envelope = h->envelope };
                Reply reply;
                if (h->cancel && !executor_seen(rq->executor, h->seq)) {
                        prev = h; /* its batch failed: it waits for the one that carries it */
                        continue;
                }
                reply_init(&reply);
                if (r == 0 && twins_in(rq, h)) { /* packed again, as op_submit() does */
                        reply_begin(&reply, h->has_id, h->req_id, true, 1);
                        proto_pack_str(&reply.pk, "ids");
                        msgpack_pack_array(&reply.pk, h->n_ids);
                        for (uint32_t i = 0; i < h->n_ids; i++)
                                msgpack_pack_uint64(&reply.pk,
                                                    executor_twin(rq->executor, h->ids[i]));
                } else if (r == 0 || h->cancel)
                        proto_buf_write(&reply.buf, (const char *) h->bytes, h->len);
                else {
                        ProtoError e = { .index = -1 };
                        if (r == EXECUTOR_STORE_FULL)
                                proto_error(&e, PROTO_E_STORE_FULL, NULL,
                                            "the store's disk is full: no job of the batch was "
                                            "kept; try again once there is room");
                        else if (r == EXECUTOR_STORE_UNAVAILABLE)
                                store_unavailable(&e);
                        else
                                proto_error(&e, PROTO_E_OUT_OF_MEMORY, NULL,
                                            "the store could not keep the batch; nothing of it "
                                            "was queued");
                        reply_pack_error(&reply, h->has_id, h->req_id, &e);
                }
                reply_send(&reply, rq->router, rq->backlog, &to);
                reply_deinit(&reply);
                if (prev)
                        prev->next = h->next;
                else
                        rq->held = h->next;
                if (rq->held_tail == h)
                        rq->held_tail = prev;
                held_free(h);
        }
        /* Every submit of the batches committed so far is answered. */
        executor_twins_sent(rq->executor);
}

/* A request parked until the database's rows of the IDs it names are read (cluster mode). */
struct Parked {
        Parked *next;
        uint64_t seq;             /* the lookup (executor_lookup) */
        Peer from;                /* its identity and principal point into `bytes` */
        size_t len;               /* of the request's frame, at the start of `bytes` */
        uint8_t bytes[];          /* the frame, the identity, the principal */
};

/* The IDs a request names ("ids" or "future") that the table does not hold, and with `fresh`
 * those it holds as unfinished mirrors (FUTURE_AWAY: another node's to run, and its state here
 * may be old): 0 when the request names none (or is malformed: its handler says so). */
static size_t missing_ids(const Table *t, const msgpack_object *body, bool fresh, uint64_t *ret,
                          size_t max) {
        const msgpack_object *o = proto_map_get(body, "ids"), *one = proto_map_get(body, "future");
        const msgpack_object *list = o && o->type == MSGPACK_OBJECT_ARRAY ? o->via.array.ptr : one;
        size_t n = o && o->type == MSGPACK_OBJECT_ARRAY ? o->via.array.size : one ? 1 : 0, k = 0;

        for (size_t i = 0; i < n && k < max; i++) {
                uint64_t id;
                const Future *f;
                if (proto_get_uint(&list[i], &id) < 0 || id == 0)
                        continue;
                f = table_get(t, id);
                if (!f || (fresh && (f->cluster & FUTURE_AWAY) && !proto_state_final(f->state)))
                        ret[k++] = id;
        }
        return k;
}

/* Parks `req` until lookup `seq` is answered (0: it could not be asked). Returns true when
 * parked. */
static bool park_at(Request *req, uint64_t seq) {
        Requests *rq = req->rq;
        const uint8_t *body = req->frame;
        size_t body_len = req->frame_len;
        size_t plen = req->from.principal ? strlen(req->from.principal) + 1 : 0;
        Parked *p;

        if (seq == 0 || !know_connection(req))
                return false;
        p = malloc(sizeof(*p) + body_len + req->from.identity_len + plen);
        if (!p)
                return false;
        p->seq = seq;
        p->len = body_len;
        p->from = req->from;
        p->from.fd = -1; /* its connection is known */
        memcpy(p->bytes, body, body_len);
        memcpy(p->bytes + body_len, req->from.identity, req->from.identity_len);
        p->from.identity = p->bytes + body_len;
        if (plen) {
                memcpy(p->bytes + body_len + req->from.identity_len, req->from.principal, plen);
                p->from.principal = (const char *) p->bytes + body_len + req->from.identity_len;
        }
        QUEUE_APPEND(rq->parked, rq->parked_tail, p);
        return true;
}

/* Cluster mode: parks `req` when it names IDs this node does not hold, and asks for their
 * rows. Returns true when parked. */
static bool park(Request *req, bool fresh) {
        Requests *rq = req->rq;
        _cleanup_free_ uint64_t *ids = malloc(PROTO_MAX_IDS * sizeof(*ids));
        size_t n;

        if (!ids)
                return false;
        n = missing_ids(executor_table(rq->executor), req->body, fresh, ids, PROTO_MAX_IDS);
        return n > 0 && know_connection(req) &&
               park_at(req, executor_lookup(rq->executor, ids, n));
}

static void handle(Requests *rq, const Peer *from, const uint8_t *body, size_t body_len,
                   uint64_t replay, bool unavailable);

/* Whether the table holds every future `req` names (those it could not read again are answered
 * as they are). */
static bool holds_all(Request *req) {
        _cleanup_free_ uint64_t *ids = malloc(PROTO_MAX_IDS * sizeof(*ids));

        return ids && missing_ids(executor_table(req->rq->executor), req->body, false, ids,
                                  PROTO_MAX_IDS) == 0;
}

/* Handles again the parked requests whose rows are read. */
static void unpark(Requests *rq) {
        uint64_t done = executor_looked_up(rq->executor);
        Parked *p;

        while ((p = rq->parked) && p->seq <= done) {
                rq->parked = p->next;
                if (!rq->parked)
                        rq->parked_tail = NULL;
                handle(rq, &p->from, p->bytes, p->len, p->seq,
                       executor_lookup_failed(rq->executor, p->seq));
                free(p);
        }
}

void request_deinit(Requests *rq) {
        while (rq->parked) {
                Parked *p = rq->parked;
                rq->parked = p->next;
                free(p);
        }
        rq->parked_tail = NULL;
        while (rq->held) {
                HeldReply *h = rq->held;
                rq->held = h->next;
                held_free(h);
        }
        rq->held_tail = NULL;
}

static void op_submit(Request *req, ProtoError *e) {
        const msgpack_object *jobs = proto_map_get(req->body, "jobs");
        _cleanup_free_ JobSpec *specs = NULL;
        _cleanup_free_ char (*groups)[PROTO_MAX_GROUP + 1] = NULL;
        _cleanup_free_ uint64_t *ids = NULL;
        bool want_results, keyed = false;
        uint64_t seq;
        uint32_t n;
        int r;

        if (!jobs || jobs->type != MSGPACK_OBJECT_ARRAY) {
                proto_error(e, PROTO_E_BAD_REQUEST, "jobs", "'jobs' must be an array of jobs");
                return reply_error(req, e);
        }
        if (get_reply_mode(req->body, &want_results, e) < 0)
                return reply_error(req, e);
        n = jobs->via.array.size;
        if (want_results &&
            (r = waiter_can_defer(executor_waiters(req->rq->executor), &req->from, n)) != 0)
                return reply_cannot_defer(req, r, e);
        if (n == 0) {
                proto_error(e, PROTO_E_BAD_REQUEST, "jobs", "'jobs' must not be empty");
                return reply_error(req, e);
        }
        if (n > PROTO_MAX_BATCH) {
                proto_error(e, PROTO_E_TOO_MANY, "jobs", "%u jobs, at most %u in one submit", n,
                            PROTO_MAX_BATCH);
                return reply_error(req, e);
        }
        specs = calloc(n, sizeof(*specs));
        groups = calloc(n, sizeof(*groups));
        ids = malloc(n * sizeof(*ids));
        if (!specs || !groups || !ids)
                return reply_out_of_memory(req, e);
        if (check_submit(jobs, specs, groups, e) < 0)
                return reply_error(req, e);
        for (uint32_t i = 0; i < n; i++)
                specs[i].principal = req->from.principal;

        r = executor_submit(req->rq->executor, specs, n, ids, &seq);
        if (r == EXECUTOR_STOPPING) {
                proto_error(e, PROTO_E_SHUTTING_DOWN, NULL, "futured is shutting down");
                return reply_error(req, e);
        }
        if (r == EXECUTOR_STORE_UNAVAILABLE) {
                store_unavailable(e);
                return reply_error(req, e);
        }
        if (r == EXECUTOR_QUEUE_FULL) {
                proto_error(e, PROTO_E_QUEUE_FULL, NULL, "%u unfinished futures is the limit",
                            PROTO_MAX_PENDING);
                return reply_error(req, e);
        }
        if (r == EXECUTOR_QUOTA_PENDING || r == EXECUTOR_QUOTA_RETAINED) {
                bool pending = r == EXECUTOR_QUOTA_PENDING;
                proto_error(e, PROTO_E_QUOTA_EXCEEDED, NULL,
                            "%s: %u %s futures is the quota of each principal",
                            req->from.principal ? req->from.principal : PRINCIPAL_UNKNOWN,
                            pending ? req->rq->quota_pending : req->rq->quota_retained,
                            pending ? "unfinished" : "retained and unfinished");
                return reply_error(req, e);
        }
        if (r == EXECUTOR_RETAINED_FULL) {
                ExecutorStats st;
                executor_stats(req->rq->executor, &st);
                e->retry_after_ms = executor_retry_after_ms(req->rq->executor);
                proto_error(e, PROTO_E_RETAINED_FULL, NULL,
                            "%" PRIu64 " finished results (%" PRIu64 " bytes) are kept, the "
                            "limit is %" PRIu64 " (%" PRIu64 " bytes): release results already "
                            "read, or try again in %.3f s, when the oldest expires",
                            st.retained, st.retained_bytes, req->rq->max_retained,
                            req->rq->max_retained_bytes, (double) e->retry_after_ms / 1000.0);
                return reply_error(req, e);
        }
        if (r < 0)
                return reply_out_of_memory(req, e);

        if (want_results && defer_results(req, ids, n))
                return;
        reply_ok(req, 1);
        proto_pack_str(req->pk, "ids");
        msgpack_pack_array(req->pk, n);
        for (uint32_t i = 0; i < n; i++)
                msgpack_pack_uint64(req->pk, ids[i]);
        for (uint32_t i = 0; i < n && !keyed; i++)
                keyed = specs[i].key != NULL;
        /* The IDs acknowledge the jobs: their batch must be on disk first. */
        if (seq != 0)
                seq = executor_change_seq(req->rq->executor);
        /* Only a job with a key may turn out a twin (executor_twin) when it is committed. */
        if (seq == 0 || !hold_reply(req, seq, false, keyed ? ids : NULL, n))
                send_reply(req);
}

static void op_status(Request *req, ProtoError *e) {
        const Table *t = executor_table(req->rq->executor);
        _cleanup_free_ uint64_t *ids = NULL;
        uint32_t n;

        if (get_ids(req->body, true, false, &ids, &n, e) < 0)
                return reply_error(req, e);
        reply_ok(req, 1);
        proto_pack_str(req->pk, "states");
        msgpack_pack_array(req->pk, n);
        for (uint32_t i = 0; i < n; i++)
                proto_pack_str(req->pk, proto_state_name(table_state_of(t, ids[i])));
        send_reply(req);
}

static int get_timeout_ns(const msgpack_object *body, int64_t *ret, ProtoError *e) {
        double t;

        if (get_seconds(proto_map_get(body, "timeout"), 4e6, -1, &t) < 0)
                return proto_error(e, PROTO_E_BAD_REQUEST, "timeout",
                                   "'timeout' must be nil or seconds from 0 to 4e6");
        *ret = t < 0 ? -1 : (int64_t) (t * 1e9);
        return 0;
}

/* Packs the reply of a wait/result/results for `ids` as things stand now. */
static void pack_wait_reply(Reply *r, const Table *t, WaitMode mode, uint64_t req_id,
                            const uint64_t *ids, uint32_t n) {
        if (mode == WAIT_RESULT)
                reply_pack_result(r, t, req_id, ids[0]);
        else if (mode == WAIT_RESULTS)
                reply_pack_results(r, t, req_id, ids, n);
        else
                reply_pack_wait(r, t, req_id, ids, n);
}

static void start_waiter(Request *req, WaitMode mode, const uint64_t *ids, uint32_t n,
                         int64_t timeout_ns, ProtoError *e) {
        Executor *x = req->rq->executor;
        int r;

        if (timeout_ns != 0 && !waiter_condition(executor_table(x), mode, ids, n) &&
            !know_connection(req))
                return; /* the client is gone: nobody to answer */
        r = waiter_start(executor_waiters(x), &req->from, req->id, mode, ids, n, timeout_ns);
        if (r == WAITER_READY) {
                pack_wait_reply(&req->reply, executor_table(x), mode, req->id, ids, n);
                send_reply(req);
        } else if (r == WAITER_QUOTA || r == WAITER_PRINCIPAL_QUOTA || r == WAITER_FULL)
                reply_cannot_defer(req, r, e);
        else if (r < 0)
                reply_out_of_memory(req, e);
}

static void op_wait(Request *req, ProtoError *e) {
        _cleanup_free_ uint64_t *ids = NULL;
        const msgpack_object *o;
        WaitMode mode = WAIT_ALL;
        int64_t timeout_ns = -1;
        uint32_t n;

        if (get_ids(req->body, false, true, &ids, &n, e) < 0)
                return reply_error(req, e);
        if ((o = proto_map_get(req->body, "mode"))) {
                if (proto_str_eq(o, "all"))
                        mode = WAIT_ALL;
                else if (proto_str_eq(o, "first_completed"))
                        mode = WAIT_FIRST_COMPLETED;
                else if (proto_str_eq(o, "first_exception"))
                        mode = WAIT_FIRST_EXCEPTION;
                else {
                        proto_error(e, PROTO_E_BAD_REQUEST, "mode",
                                    "'mode' must be all, first_completed or first_exception");
                        return reply_error(req, e);
                }
        }
        if (get_timeout_ns(req->body, &timeout_ns, e) < 0)
                return reply_error(req, e);
        start_waiter(req, mode, ids, n, timeout_ns, e);
}

static void op_result(Request *req, ProtoError *e) {
        int64_t timeout_ns = -1;
        uint64_t id;

        if (proto_get_uint(proto_map_get(req->body, "future"), &id) < 0) {
                proto_error(e, PROTO_E_BAD_REQUEST, "future",
                            "'future' must be the future's ID, an unsigned integer");
                return reply_error(req, e);
        }
        if (get_timeout_ns(req->body, &timeout_ns, e) < 0)
                return reply_error(req, e);
        start_waiter(req, WAIT_RESULT, &id, 1, timeout_ns, e);
}

static void op_results(Request *req, ProtoError *e) {
        _cleanup_free_ uint64_t *ids = NULL;
        int64_t timeout_ns = -1;
        uint32_t n;

        if (get_ids(req->body, false, true, &ids, &n, e) < 0)
                return reply_error(req, e);
        if (get_timeout_ns(req->body, &timeout_ns, e) < 0)
                return reply_error(req, e);
        start_waiter(req, WAIT_RESULTS, ids, n, timeout_ns, e);
}

/* cancel and release: one bool per ID. `hold`: a true one is a change the reply waits for the
 * store to commit (cancel). */
static void reply_bools(Request *req, ProtoError *e, const char *field,
                        bool (*fn)(Executor *x, uint64_t id), bool hold) {
        _cleanup_free_ uint64_t *ids = NULL;
        bool any = false;
        uint64_t seq;
        uint32_t n;

        if (get_ids(req->body, false, false, &ids, &n, e) < 0)
                return reply_error(req, e);
        reply_ok(req, 1);
        proto_pack_str(req->pk, field);
        msgpack_pack_array(req->pk, n);
        for (uint32_t i = 0; i < n; i++)
                if (fn(req->rq->executor, ids[i])) {
                        msgpack_pack_true(req->pk);
                        any = true;
                } else
                        msgpack_pack_false(req->pk);
        seq = hold && any ? executor_change_seq(req->rq->executor) : 0;
        if (seq == 0 || !hold_reply(req, seq, true, NULL, 0))
                send_reply(req);
}

static void op_cancel(Request *req, ProtoError *e) {
        reply_bools(req, e, "cancelled", executor_cancel, true);
}

static void op_release(Request *req, ProtoError *e) {
        reply_bools(req, e, "released", executor_release, false);
}

/* One entry of a `list` reply. */
static void pack_listed(msgpack_packer *pk, uint64_t id, uint8_t attempts, const char *kind,
                        FutureState state, const char *group, int priority) {
        msgpack_pack_map(pk, 6);
        proto_pack_str(pk, "id");
        msgpack_pack_uint64(pk, id);
        proto_pack_str(pk, "attempts");
        msgpack_pack_uint8(pk, attempts);
        proto_pack_str(pk, "kind");
        proto_pack_str(pk, kind);
        proto_pack_str(pk, "state");
        proto_pack_str(pk, proto_state_name(state));
        proto_pack_str(pk, "group");
        proto_pack_str(pk, group);
        proto_pack_str(pk, "priority");
        msgpack_pack_int(pk, priority);
}

/* Ends and sends a `list` reply. */
static void list_end(Request *req, bool more) {
        proto_pack_str(req->pk, "more");
        if (more)
                msgpack_pack_true(req->pk);
        else
                msgpack_pack_false(req->pk);
        send_reply(req);
}

/* Cluster mode: answers a `list` from the database's rows (cluster_list(): `limit` + 1 asked,
 * so that `more` is known), read while the request was parked. */
static void list_rows(Request *req, ProtoError *e, Cluster *c, uint64_t limit) {
        size_t n;

        if (cluster_listed(c, req->parked, &n) < 0) {
                proto_error(e, PROTO_E_STORE_UNAVAILABLE, NULL,
                            "the store's database cannot be reached: try again later");
                return reply_error(req, e);
        }
        reply_ok(req, 2);
        proto_pack_str(req->pk, "futures");
        msgpack_pack_array(req->pk, (uint32_t) MIN(n, limit));
        for (size_t i = 0; i < n && i < limit; i++) {
                StoreJob job;
                cluster_listed_row(c, req->parked, i, &job);
                pack_listed(req->pk, job.id, job.attempt, job.kind, (FutureState) job.state,
                            job.group ? job.group : "", job.priority);
        }
        list_end(req, n > limit); /* the answer goes once the request is handled (handle()) */
}

static void op_list(Request *req, ProtoError *e) {
        const Table *t = executor_table(req->rq->executor);
        Cluster *c = executor_cluster(req->rq->executor);
        _cleanup_free_ Future **found = NULL;
        _cleanup_free_ uint8_t *states = NULL;
        const msgpack_object *o;
        uint64_t after = 0, limit = 100;
        int state = -1;
        uint32_t n = 0;
        bool more = false;

        if ((o = proto_map_get(req->body, "state"))) {
                /* The daemon holds futures in these states only: an expired or unknown future
                 * has left the table, so asking for one is a mistake, not an empty list. */
                if (!proto_is_text(o) ||
                    (state = proto_state_from_name(o->via.str.ptr, o->via.str.size)) < 0 ||
                    state == STATE_EXPIRED || state == STATE_UNKNOWN) {
                        proto_error(e, PROTO_E_BAD_REQUEST, "state",
                                    "'state' must be pending, running, done, failed or cancelled");
                        return reply_error(req, e);
                }
        }
        if ((o = proto_map_get(req->body, "after")) && proto_get_uint(o, &after) < 0) {
                proto_error(e, PROTO_E_BAD_REQUEST, "after", "'after' must be a future ID");
                return reply_error(req, e);
        }
        if ((o = proto_map_get(req->body, "limit")) &&
            (proto_get_uint(o, &limit) < 0 || limit < 1 || limit > PROTO_MAX_LIST)) {
                proto_error(e, PROTO_E_BAD_REQUEST, "limit", "'limit' must be from 1 to %u",
                            PROTO_MAX_LIST);
                return reply_error(req, e);
        }

        /* Cluster mode: from the database, parked until its rows are read (never blocking the
         * loop); a request that cannot be parked is answered from what the node holds. */
        if (c && req->parked)
                return list_rows(req, e, c, limit);
        if (c && park_at(req, cluster_list(c, state, after, (uint32_t) limit + 1)))
                return;

        /* One pass that takes each future's state once: pool threads change what a visible state
         * reads, so a count pass and a pack pass could disagree. */
        found = malloc(limit * sizeof(*found));
        states = malloc(limit);
        if (!found || !states)
                return reply_out_of_memory(req, e);
        for (uint64_t id = MAX(after + 1, t->base); id < t->next_id; id++) {
                Future *f = table_get(t, id);
                FutureState s;
                if (!f)
                        continue;
                s = future_visible_state(f);
                if (state >= 0 && s != (FutureState) state)
                        continue;
                if (n == limit) {
                        more = true;
                        break;
                }
                found[n] = f;
                states[n++] = (uint8_t) s;
        }
        reply_ok(req, 2);
        proto_pack_str(req->pk, "futures");
        msgpack_pack_array(req->pk, n);
        for (uint32_t i = 0; i < n; i++) {
                const Future *f = found[i];
                pack_listed(req->pk, f->id, f->attempt, f->kind->name, (FutureState) states[i],
                            f->group ? f->group->name : "", f->priority);
        }
        list_end(req, more);
}

static void pack_counter(msgpack_packer *pk, const char *name, uint64_t v) {
        proto_pack_str(pk, name);
        msgpack_pack_uint64(pk, v);
}

static void op_stats(Request *req, ProtoError *e) {
        msgpack_packer *pk = req->pk;
        ExecutorStats st;
        ExecutorClusterStats cs;

        executor_stats(req->rq->executor, &st);
        executor_cluster_stats(req->rq->executor, &cs);
        reply_ok(req, 1);
        proto_pack_str(pk, "stats");
        msgpack_pack_map(pk, 24 + (cs.on ? 10 : 0));
        pack_counter(pk, "pending", st.n_state[STATE_PENDING]);
        pack_counter(pk, "running", st.n_state[STATE_RUNNING]);
        pack_counter(pk, "done", st.n_state[STATE_DONE]);
        pack_counter(pk, "failed", st.n_state[STATE_FAILED]);
        pack_counter(pk, "cancelled", st.n_state[STATE_CANCELLED]);
        pack_counter(pk, "submitted", st.submitted);
        pack_counter(pk, "finished", st.finished);
        pack_counter(pk, "threads", req->rq->threads);
        pack_counter(pk, "transfers", req->rq->transfers);
        pack_counter(pk, "transfers_running", st.transfers_running);
        pack_counter(pk, "processes", req->rq->processes);
        pack_counter(pk, "processes_alive", st.processes_alive);
        pack_counter(pk, "workers_started", st.workers_started);
        pack_counter(pk, "workers_died", st.workers_died);
        pack_counter(pk, "clients_deferred", st.deferred);
        pack_counter(pk, "retained", st.retained);
        pack_counter(pk, "retained_bytes", st.retained_bytes);
        pack_counter(pk, "uptime_ms", (timer_now() - req->rq->started_ns) / 1000000u);
        pack_counter(pk, "store_bytes", st.store_stats.file_bytes);
        pack_counter(pk, "store_commits", st.store_stats.commits);
        pack_counter(pk, "store_commits_unflushed", st.store_stats.unflushed);
        pack_counter(pk, "store_last_batch", st.store_stats.last_batch);
        pack_counter(pk, "store_commit_us", st.store_stats.last_commit_us);
        pack_counter(pk, "store_failing", st.store_stats.failing);
        if (cs.on) {
                pack_counter(pk, "cluster_ran", cs.ran);
                pack_counter(pk, "cluster_claimed", cs.claimed);
                pack_counter(pk, "cluster_taken_back", cs.taken_back);
                pack_counter(pk, "cluster_expired", cs.expired);
                pack_counter(pk, "cluster_notifications", cs.notifications);
                pack_counter(pk, "cluster_lookups", cs.lookups);
                pack_counter(pk, "cluster_foreign", cs.foreign);
                pack_counter(pk, "cluster_lease_lost", cs.lease_lost);
                pack_counter(pk, "cluster_fenced", cs.fenced);
                pack_counter(pk, "cluster_connected", cs.connected);
        }
        send_reply(req);
}

static void op_probe(Request *req, ProtoError *e) {
        const msgpack_object *o = proto_map_get(req->body, "token");

        if (!proto_is_text(o) || o->via.str.size == 0 || o->via.str.size > PROTO_MAX_TOKEN) {
                proto_error(e, PROTO_E_BAD_REQUEST, "token",
                            "'token' must be UTF-8 text of 1 to %u bytes", PROTO_MAX_TOKEN);
                return reply_error(req, e);
        }
        events_probe(req->rq->events, o->via.str.ptr, o->via.str.size);
        reply_ok(req, 0);
        send_reply(req);
}

typedef struct Op {
        const char *name;
        void (*run)(Request *req, ProtoError *e);
        const char *fields[6]; /* besides v, id and op */
        bool ids;              /* names futures by ID (cluster mode: may read them first) */
        bool fresh;            /* reads states: a mirror not finished yet is read again first */
} Op;

static const Op ops[] = {
        { "hello", op_hello, {}, false, false },
        { "submit", op_submit, { "jobs", "reply" }, false, false },
        { "status", op_status, { "ids" }, true, true },
        { "wait", op_wait, { "ids", "mode", "timeout" }, true, true },
        { "result", op_result, { "future", "timeout" }, true, true },
        { "results", op_results, { "ids", "timeout" }, true, true },
        { "cancel", op_cancel, { "ids" }, true, false },
        { "release", op_release, { "ids" }, true, false },
        { "list", op_list, { "state", "after", "limit" }, false, false },
        { "stats", op_stats, {}, false, false },
        { "probe", op_probe, { "token" }, false, false },
};

/* How far into an oversized frame request_handle() looks for the id to echo: the id comes early
 * in a request, and the frame as a whole is never decoded. */
#define PEEK_ID_BYTES 4096u

/* The checks before decoding: the size (an oversized frame is not decoded at all: its id, if any,
 * is found by a bounded scan of its first bytes) and the pre-scan, which refuses bytes that
 * would make msgpack-c allocate more than the frame's size warrants (proto_msgpack_check). Returns
 * 0 when `body` is one msgpack value safe to decode, else -EINVAL with `e` filled. */
static int check_frame(Request *req, const uint8_t *body, size_t body_len, ProtoError *e) {
        size_t end;
        int r;

        if (body_len > PROTO_MAX_MESSAGE) {
                req->has_id = proto_msgpack_peek_uint(body, MIN(body_len, PEEK_ID_BYTES), "id",
                                                      &req->id) == 0;
                return proto_error(e, PROTO_E_TOO_LARGE, NULL,
                                   "request of %zu bytes; the limit is %u", body_len,
                                   PROTO_MAX_MESSAGE);
        }
        r = proto_msgpack_check(body, body_len, PROTO_MAX_DEPTH, &end);
        if (r == -ELOOP)
                return proto_error(e, PROTO_E_BAD_MESSAGE, NULL,
                                   "the request nests more than %u levels deep", PROTO_MAX_DEPTH);
        if (r < 0)
                return proto_error(e, PROTO_E_BAD_MESSAGE, NULL,
                                   "the request is not one well-formed msgpack value");
        if (end != body_len)
                return proto_error(e, PROTO_E_BAD_MESSAGE, NULL,
                                   "the request is not exactly one msgpack value");
        return 0;
}

/* The envelope checks of the decoded request: id (first, so that every later error can echo
 * it), version, op and the op's fields. Returns the op, or NULL with `e` filled. */
static const Op *check_envelope(Request *req, ProtoError *e) {
        static const char *const common[] = { "v", "id", "op" };
        const char *allowed[ELEMENTSOF(common) + ELEMENTSOF(ops[0].fields) + 1] = {};
        const msgpack_object *o;
        const Op *op = NULL;
        size_t n = 0;
        uint64_t v;

        if (req->body->type != MSGPACK_OBJECT_MAP) {
                proto_error(e, PROTO_E_BAD_REQUEST, NULL, "the request must be a msgpack map");
                return NULL;
        }
        if (!(o = proto_map_get(req->body, "id"))) {
                proto_error(e, PROTO_E_BAD_REQUEST, "id", "missing field 'id'");
                return NULL;
        }
        if (proto_get_uint(o, &req->id) < 0) {
                proto_error(e, PROTO_E_BAD_REQUEST, "id", "'id' must be an unsigned integer");
                return NULL;
        }
        req->has_id = true;
        if (!(o = proto_map_get(req->body, "v"))) {
                proto_error(e, PROTO_E_BAD_REQUEST, "v", "missing field 'v'");
                return NULL;
        }
        if (proto_get_uint(o, &v) < 0 || v != PROTO_VERSION) {
                proto_error(e, PROTO_E_BAD_VERSION, "v", "this daemon speaks protocol version %d",
                            PROTO_VERSION);
                return NULL;
        }
        o = proto_map_get(req->body, "op");
        if (!proto_is_text(o)) {
                proto_error(e, PROTO_E_BAD_REQUEST, "op", "missing field 'op', or not UTF-8 text");
                return NULL;
        }
        for (size_t i = 0; i < ELEMENTSOF(ops) && !op; i++)
                if (proto_str_eq(o, ops[i].name))
                        op = &ops[i];
        if (!op) {
                proto_error(e, PROTO_E_UNKNOWN_OP, "op", "unknown operation '%.*s'",
                            (int) proto_utf8_prefix(o->via.str.ptr, o->via.str.size,
                                                    PROTO_MAX_QUOTE),
                            o->via.str.ptr);
                return NULL;
        }
        for (size_t i = 0; i < ELEMENTSOF(common); i++)
                allowed[n++] = common[i];
        for (size_t i = 0; i < ELEMENTSOF(op->fields) && op->fields[i]; i++)
                allowed[n++] = op->fields[i];
        if (proto_check_fields(req->body, allowed, e) < 0)
                return NULL;
        return op;
}

/* The checks of check_frame(), the decoding into `msg`, and those of check_envelope(). Returns the
 * op, or NULL with `e` filled. */
static const Op *decode(Request *req, msgpack_unpacked *msg, const uint8_t *body, size_t body_len,
                        ProtoError *e) {
        size_t off = 0;

        if (check_frame(req, body, body_len, e) < 0)
                return NULL;
        if (msgpack_unpack_next(msg, (const char *) body, body_len, &off) !=
                    MSGPACK_UNPACK_SUCCESS ||
            off != body_len) {
                /* The pre-scan passed: msgpack-c ran out of memory, or refused what the pre-scan
                 * allows (its own nesting limit). */
                proto_error(e, PROTO_E_BAD_MESSAGE, NULL, "the request could not be decoded");
                return NULL;
        }
        return check_envelope(req, e);
}

void request_handle(Requests *rq, const Peer *from, const uint8_t *body, size_t body_len) {
        handle(rq, from, body, body_len, 0, false);
}

/* `replay`: the lookup of a parked request handled again (its rows read; 0: not parked);
 * `unavailable`: they could not be read, the request is answered store_unavailable. */
static void handle(Requests *rq, const Peer *from, const uint8_t *body, size_t body_len,
                   uint64_t replay, bool unavailable) {
        Request req = { .rq = rq, .from = *from, .frame = body, .frame_len = body_len,
                        .parked = replay };
        ProtoError e = { .index = -1 };
        msgpack_unpacked msg;
        const Op *op;

        reply_init(&req.reply);
        req.pk = &req.reply.pk;
        msgpack_unpacked_init(&msg);
        req.body = &msg.data;
        op = decode(&req, &msg, body, body_len, &e);
        if (op && !replay && op->ids && executor_clustered(rq->executor) &&
            park(&req, op->fresh))
                ; /* handled once the rows are read */
        else if (op && unavailable && holds_all(&req)) /* mirrors read again: as they were */
                op->run(&req, &e);
        else if (op && unavailable) {
                proto_error(&e, PROTO_E_STORE_UNAVAILABLE, NULL,
                            "the store's database cannot be reached: the futures this node "
                            "does not hold cannot be read; try again later");
                reply_error(&req, &e);
        } else if (op)
                op->run(&req, &e);
        else
                reply_error(&req, &e);
        if (replay) /* a list's answer, whether used or not */
                cluster_list_drop(executor_cluster(rq->executor), replay);
        msgpack_unpacked_destroy(&msg);
        reply_deinit(&req.reply);
}

void request_answer_due(Requests *rq) {
        WaiterSet *set = executor_waiters(rq->executor);

        release_held(rq);
        if (rq->parked)
                unpark(rq);
        const Table *t = executor_table(rq->executor);
        Waiter *w;
        Reply r;

        reply_init(&r);
        while ((w = waiter_take_due(set))) {
                Peer to = waiter_peer(w);
                pack_wait_reply(&r, t, w->mode, w->req_id, w->ids, w->n_ids);
                reply_send(&r, rq->router, rq->backlog, &to);
                waiter_free(set, w);
        }
        reply_deinit(&r);
}
