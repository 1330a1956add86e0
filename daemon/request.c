/* request: decodes client requests (docs/PROTOCOL.md), carries them out on the daemon, and packs
 * the replies. Every way a request can be malformed ends in an error reply with a code; nothing a
 * client sends changes state unless the whole request is valid. Loop thread only. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "config.h"
#include "daemon.h"
#include "macro.h"
#include "waiter.h"

/* The decoded common part of a request. */
typedef struct Request {
        const uint8_t *identity;
        size_t identity_len;
        bool envelope;
        bool has_id;
        uint64_t id;
        const msgpack_object *body;
        msgpack_packer pk; /* packs into d->out */
} Request;

/* A job of a submit, checked and ready to become a Future. */
typedef struct JobSpec {
        const JobKind *kind;
        const msgpack_object *args;
        const msgpack_object *group; /* str or NULL */
        int64_t priority;
        double timeout;
        uint64_t group_limit;
        uint64_t retries;
} JobSpec;

static void pack_head(Daemon *d, msgpack_packer *pk, bool has_id, uint64_t id, bool ok,
                      uint32_t n_fields) {
        d->out.size = 0;
        msgpack_pack_map(pk, 3 + n_fields);
        proto_pack_str(pk, "v");
        msgpack_pack_uint8(pk, PROTO_VERSION);
        proto_pack_str(pk, "id");
        if (has_id)
                msgpack_pack_uint64(pk, id);
        else
                msgpack_pack_nil(pk);
        proto_pack_str(pk, "ok");
        if (ok)
                msgpack_pack_true(pk);
        else
                msgpack_pack_false(pk);
}

static void reply_begin(Daemon *d, Request *req, uint32_t n_fields) {
        pack_head(d, &req->pk, req->has_id, req->id, true, n_fields);
}

static void pack_error(Daemon *d, msgpack_packer *pk, bool has_id, uint64_t id,
                       const ProtoError *e) {
        pack_head(d, pk, has_id, id, false, 1);
        proto_pack_str(pk, "error");
        msgpack_pack_map(pk, 2 + (e->field != NULL) + (e->index >= 0));
        proto_pack_str(pk, "code");
        proto_pack_str(pk, e->code);
        proto_pack_str(pk, "message");
        proto_pack_str(pk, e->message);
        if (e->field) {
                proto_pack_str(pk, "field");
                proto_pack_str(pk, e->field);
        }
        if (e->index >= 0) {
                proto_pack_str(pk, "index");
                msgpack_pack_uint64(pk, (uint64_t) e->index);
        }
}

void request_send(Daemon *d, const uint8_t *identity, size_t identity_len, bool envelope) {
        /* ROUTER_MANDATORY makes a send to a client that is gone fail with EHOSTUNREACH instead
         * of vanishing silently; either way the reply is dropped and nothing else changes. */
        if (zmq_send(d->router, identity, identity_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
                return;
        if (envelope)
                zmq_send(d->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(d->router, d->out.data, d->out.size, ZMQ_DONTWAIT);
}

static void reply_error(Daemon *d, Request *req, const ProtoError *e) {
        pack_error(d, &req->pk, req->has_id, req->id, e);
        request_send(d, req->identity, req->identity_len, req->envelope);
}

static void reply_send(Daemon *d, Request *req) {
        request_send(d, req->identity, req->identity_len, req->envelope);
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

/* Reads the `ids` array: 1 (or 0 when `allow_empty`) to PROTO_MAX_IDS uints, into a malloc'ed
 * array with duplicates kept or removed. */
static int get_ids(const msgpack_object *body, bool allow_empty, bool dedup, uint64_t **ret,
                   uint32_t *ret_n, ProtoError *e) {
        const msgpack_object *o = proto_map_get(body, "ids");
        uint64_t *ids;
        uint32_t n = 0;

        if (!o)
                return proto_error(e, PROTO_E_BAD_REQUEST, "ids", "missing field 'ids'");
        if (o->type != MSGPACK_OBJECT_ARRAY)
                return proto_error(e, PROTO_E_BAD_REQUEST, "ids", "'ids' must be an array");
        if (o->via.array.size > PROTO_MAX_IDS)
                return proto_error(e, PROTO_E_TOO_MANY, "ids", "%u IDs, at most %u allowed",
                                   o->via.array.size, PROTO_MAX_IDS);
        if (o->via.array.size == 0 && !allow_empty)
                return proto_error(e, PROTO_E_BAD_REQUEST, "ids", "'ids' must not be empty");
        ids = malloc(MAX(o->via.array.size, 1u) * sizeof(*ids));
        if (!ids)
                return -ENOMEM;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                uint64_t id;
                bool dup = false;
                if (proto_get_uint(&o->via.array.ptr[i], &id) < 0) {
                        free(ids);
                        return proto_error(e, PROTO_E_BAD_REQUEST, "ids",
                                           "'ids' must hold unsigned integers");
                }
                /* Duplicates are rare and lists are short; a scan of the few IDs kept so far is
                 * only quadratic for hostile input bounded by PROTO_MAX_IDS. */
                if (dedup)
                        for (uint32_t j = n; j > 0 && !dup; j--)
                                dup = ids[j - 1] == id;
                if (!dup)
                        ids[n++] = id;
        }
        *ret = ids;
        *ret_n = n;
        return 0;
}

static void op_hello(Daemon *d, Request *req, ProtoError *e) {
        msgpack_packer *pk = &req->pk;
        const JobKind *const *kinds = kind_all();
        uint32_t n_kinds = 0;

        while (kinds[n_kinds])
                n_kinds++;
        reply_begin(d, req, 8);
        proto_pack_str(pk, "version");
        msgpack_pack_uint8(pk, PROTO_VERSION);
        proto_pack_str(pk, "server");
        proto_pack_str(pk, "futured " FUTURED_VERSION);
        proto_pack_str(pk, "events");
        proto_pack_str(pk, d->cfg.events);
        proto_pack_str(pk, "threads");
        msgpack_pack_uint32(pk, d->cfg.threads);
        proto_pack_str(pk, "transfers");
        msgpack_pack_uint32(pk, d->cfg.transfers);
        proto_pack_str(pk, "processes");
        msgpack_pack_uint32(pk, d->cfg.processes);
        proto_pack_str(pk, "limits");
        msgpack_pack_map(pk, 5);
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
        reply_send(d, req);
}

static int check_job(const msgpack_object *job, JobSpec *spec, ProtoError *e) {
        static const char *const fields[] = { "kind", "args", "priority", "timeout", "group",
                                              "group_limit", "retries", NULL };
        static const msgpack_object no_args = { .type = MSGPACK_OBJECT_MAP };
        const msgpack_object *o;
        int r;

        *spec = (JobSpec){};
        if (job->type != MSGPACK_OBJECT_MAP)
                return proto_error(e, PROTO_E_BAD_REQUEST, NULL, "a job must be a map");
        r = proto_check_fields(job, fields, e);
        if (r < 0)
                return r;
        o = proto_map_get(job, "kind");
        if (!o || o->type != MSGPACK_OBJECT_STR)
                return proto_error(e, PROTO_E_BAD_REQUEST, "kind", "a job needs a 'kind' string");
        spec->kind = kind_find(o->via.str.ptr, o->via.str.size);
        if (!spec->kind)
                return proto_error(e, PROTO_E_UNKNOWN_KIND, "kind", "no job kind '%.*s'",
                                   (int) MIN(o->via.str.size, 64u), o->via.str.ptr);
        spec->args = proto_map_get(job, "args") ?: &no_args;
        r = kind_validate(spec->kind, spec->args, e);
        if (r < 0)
                return r;
        if ((o = proto_map_get(job, "priority")) &&
            (proto_get_int(o, &spec->priority) < 0 || spec->priority < -PROTO_MAX_PRIORITY ||
             spec->priority > PROTO_MAX_PRIORITY))
                return proto_error(e, PROTO_E_BAD_REQUEST, "priority",
                                   "'priority' must be an integer from %d to %d",
                                   -PROTO_MAX_PRIORITY, PROTO_MAX_PRIORITY);
        if (get_seconds(proto_map_get(job, "timeout"), 4e6, 0, &spec->timeout) < 0)
                return proto_error(e, PROTO_E_BAD_REQUEST, "timeout",
                                   "'timeout' must be a number of seconds from 0 to 4e6");
        if ((o = proto_map_get(job, "group"))) {
                if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
                    o->via.str.size > PROTO_MAX_GROUP || memchr(o->via.str.ptr, 0, o->via.str.size))
                        return proto_error(e, PROTO_E_BAD_REQUEST, "group",
                                           "'group' must be a string of 1 to %u bytes",
                                           PROTO_MAX_GROUP);
                spec->group = o;
        }
        if ((o = proto_map_get(job, "group_limit"))) {
                if (proto_get_uint(o, &spec->group_limit) < 0 || spec->group_limit > UINT32_MAX)
                        return proto_error(e, PROTO_E_BAD_REQUEST, "group_limit",
                                           "'group_limit' must be an unsigned 32-bit integer");
                if (!spec->group && spec->group_limit)
                        return proto_error(e, PROTO_E_BAD_REQUEST, "group_limit",
                                           "'group_limit' needs a 'group'");
        }
        if ((o = proto_map_get(job, "retries")) &&
            (proto_get_uint(o, &spec->retries) < 0 || spec->retries > PROTO_MAX_RETRIES))
                return proto_error(e, PROTO_E_BAD_REQUEST, "retries",
                                   "'retries' must be an integer from 0 to %u", PROTO_MAX_RETRIES);
        return 0;
}

/* Makes the Future for a checked job; returns it (owned by the caller) or NULL on ENOMEM. */
static Future *make_future(Daemon *d, const JobSpec *spec) {
        msgpack_sbuffer sbuf;
        msgpack_packer pk;
        Future *f;

        msgpack_sbuffer_init(&sbuf);
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        if (msgpack_pack_object(&pk, *spec->args) < 0 || !sbuf.data) {
                msgpack_sbuffer_destroy(&sbuf);
                return NULL;
        }
        uint32_t len = (uint32_t) sbuf.size;
        uint8_t *args = proto_sbuffer_take(&sbuf);
        f = args ? future_new(0, spec->kind, args, len) : NULL;
        if (!f) {
                free(args);
                return NULL;
        }
        f->priority = (int16_t) spec->priority;
        f->timeout_ms = (uint32_t) ceil(spec->timeout * 1000.0);
        f->retries = (uint8_t) spec->retries;
        f->timeout.kind = TIMER_JOB_TIMEOUT;
        if (spec->group) {
                char name[PROTO_MAX_GROUP + 1];
                memcpy(name, spec->group->via.str.ptr, spec->group->via.str.size);
                name[spec->group->via.str.size] = 0;
                if (scheduler_group_ref(&d->sched, name, (uint32_t) spec->group_limit,
                                        &f->group) < 0) {
                        future_free(f);
                        return NULL;
                }
        }
        return f;
}

static void op_submit(Daemon *d, Request *req, ProtoError *e) {
        _cleanup_free_ JobSpec *specs = NULL;
        const msgpack_object *jobs = proto_map_get(req->body, "jobs");
        const msgpack_object *reply = proto_map_get(req->body, "reply");
        _cleanup_free_ uint64_t *ids = NULL;
        bool want_results = false;
        uint32_t n;

        if (!jobs || jobs->type != MSGPACK_OBJECT_ARRAY) {
                proto_error(e, PROTO_E_BAD_REQUEST, "jobs", "'jobs' must be an array of jobs");
                return reply_error(d, req, e);
        }
        if (reply) {
                want_results = proto_str_eq(reply, "results");
                if (!want_results && !proto_str_eq(reply, "ids")) {
                        proto_error(e, PROTO_E_BAD_REQUEST, "reply",
                                    "'reply' must be \"ids\" or \"results\"");
                        return reply_error(d, req, e);
                }
        }
        if (want_results && !waiter_can_defer(d, req->identity, req->identity_len)) {
                proto_error(e, PROTO_E_TOO_MANY_DEFERRED, NULL,
                            "%u outstanding deferred replies is the limit per client",
                            PROTO_MAX_DEFERRED);
                return reply_error(d, req, e);
        }
        n = jobs->via.array.size;
        if (n == 0) {
                proto_error(e, PROTO_E_BAD_REQUEST, "jobs", "'jobs' must not be empty");
                return reply_error(d, req, e);
        }
        if (n > PROTO_MAX_BATCH) {
                proto_error(e, PROTO_E_TOO_MANY, "jobs", "%u jobs, at most %u in one submit", n,
                            PROTO_MAX_BATCH);
                return reply_error(d, req, e);
        }
        if (d->stopping) {
                proto_error(e, PROTO_E_SHUTTING_DOWN, NULL, "futured is shutting down");
                return reply_error(d, req, e);
        }
        if (d->n_state[STATE_PENDING] + d->n_state[STATE_RUNNING] + n > PROTO_MAX_PENDING) {
                proto_error(e, PROTO_E_QUEUE_FULL, NULL, "%u unfinished futures is the limit",
                            PROTO_MAX_PENDING);
                return reply_error(d, req, e);
        }
        specs = calloc(n, sizeof(*specs));
        if (!specs) {
                proto_error(e, PROTO_E_QUEUE_FULL, NULL, "out of memory");
                return reply_error(d, req, e);
        }
        /* Check every job before queueing any: a batch is all or nothing. */
        for (uint32_t i = 0; i < n; i++)
                if (check_job(&jobs->via.array.ptr[i], &specs[i], e) < 0) {
                        e->index = i;
                        return reply_error(d, req, e);
                }

        uint64_t first = d->table.next_id;
        for (uint32_t i = 0; i < n; i++) {
                Future *f = make_future(d, &specs[i]);
                if (!f || table_add(&d->table, f) < 0 || scheduler_push(&d->sched, f) < 0) {
                        /* Out of memory halfway: what was queued stays queued and is reported,
                         * so no job the client does not know of runs. Since IDs are consecutive
                         * the client learns exactly which. */
                        if (f && table_get(&d->table, f->id) == f) {
                                table_steal(&d->table, f->id);
                        }
                        if (f) {
                                scheduler_group_unref(&d->sched, f->group);
                                f->group = NULL;
                                future_free(f);
                        }
                        n = i;
                        break;
                }
                d->n_state[STATE_PENDING]++;
                d->submitted++;
        }
        if (n == 0) {
                proto_error(e, PROTO_E_QUEUE_FULL, NULL, "out of memory");
                return reply_error(d, req, e);
        }
        if (want_results) {
                /* The reply waits for every job; the jobs start only after the waiter exists. */
                ids = malloc(n * sizeof(*ids));
                for (uint32_t i = 0; ids && i < n; i++)
                        ids[i] = first + i;
                if (!ids || waiter_start(d, req->identity, req->identity_len, req->envelope,
                                         req->id, WAIT_RESULTS, ids, n, -1) < 0)
                        want_results = false; /* out of memory: answer with the IDs at least */
        }
        if (!want_results) {
                reply_begin(d, req, 1);
                proto_pack_str(&req->pk, "ids");
                msgpack_pack_array(&req->pk, n);
                for (uint32_t i = 0; i < n; i++)
                        msgpack_pack_uint64(&req->pk, first + i);
                reply_send(d, req);
        }
        daemon_dispatch(d);
}

static void op_status(Daemon *d, Request *req, ProtoError *e) {
        _cleanup_free_ uint64_t *ids = NULL;
        uint32_t n;

        if (get_ids(req->body, true, false, &ids, &n, e) < 0)
                return reply_error(d, req, e);
        reply_begin(d, req, 1);
        proto_pack_str(&req->pk, "states");
        msgpack_pack_array(&req->pk, n);
        for (uint32_t i = 0; i < n; i++)
                proto_pack_str(&req->pk, proto_state_name(daemon_state_of(d, ids[i])));
        reply_send(d, req);
}

static int get_timeout_ns(const msgpack_object *body, int64_t *ret, ProtoError *e) {
        double t;

        if (get_seconds(proto_map_get(body, "timeout"), 4e6, -1, &t) < 0)
                return proto_error(e, PROTO_E_BAD_REQUEST, "timeout",
                                   "'timeout' must be nil or seconds from 0 to 4e6");
        *ret = t < 0 ? -1 : (int64_t) (t * 1e9);
        return 0;
}

static void start_waiter(Daemon *d, Request *req, WaitMode mode, const uint64_t *ids, uint32_t n,
                         int64_t timeout_ns, ProtoError *e) {
        int r = waiter_start(d, req->identity, req->identity_len, req->envelope, req->id, mode,
                             ids, n, timeout_ns);
        if (r == -EBUSY) {
                proto_error(e, PROTO_E_TOO_MANY_DEFERRED, NULL,
                            "%u outstanding wait/result replies is the limit per client",
                            PROTO_MAX_DEFERRED);
                reply_error(d, req, e);
        } else if (r < 0) {
                proto_error(e, PROTO_E_TOO_MANY_DEFERRED, NULL, "out of memory");
                reply_error(d, req, e);
        }
}

static void op_wait(Daemon *d, Request *req, ProtoError *e) {
        _cleanup_free_ uint64_t *ids = NULL;
        const msgpack_object *o;
        WaitMode mode = WAIT_ALL;
        int64_t timeout_ns = -1;
        uint32_t n;

        if (get_ids(req->body, false, true, &ids, &n, e) < 0)
                return reply_error(d, req, e);
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
                        return reply_error(d, req, e);
                }
        }
        if (get_timeout_ns(req->body, &timeout_ns, e) < 0)
                return reply_error(d, req, e);
        start_waiter(d, req, mode, ids, n, timeout_ns, e);
}

static void op_result(Daemon *d, Request *req, ProtoError *e) {
        int64_t timeout_ns = -1;
        uint64_t id;

        if (proto_get_uint(proto_map_get(req->body, "future"), &id) < 0) {
                proto_error(e, PROTO_E_BAD_REQUEST, "future",
                            "'future' must be the future's ID, an unsigned integer");
                return reply_error(d, req, e);
        }
        if (get_timeout_ns(req->body, &timeout_ns, e) < 0)
                return reply_error(d, req, e);
        start_waiter(d, req, WAIT_RESULT, &id, 1, timeout_ns, e);
}

static void op_results(Daemon *d, Request *req, ProtoError *e) {
        _cleanup_free_ uint64_t *ids = NULL;
        int64_t timeout_ns = -1;
        uint32_t n;

        if (get_ids(req->body, false, true, &ids, &n, e) < 0)
                return reply_error(d, req, e);
        if (get_timeout_ns(req->body, &timeout_ns, e) < 0)
                return reply_error(d, req, e);
        start_waiter(d, req, WAIT_RESULTS, ids, n, timeout_ns, e);
}

static void op_cancel(Daemon *d, Request *req, ProtoError *e) {
        _cleanup_free_ uint64_t *ids = NULL;
        uint32_t n;

        if (get_ids(req->body, false, false, &ids, &n, e) < 0)
                return reply_error(d, req, e);
        /* Cancelling finishes futures, which may answer other clients' waiters and so reuse
         * d->out: decide every answer first, pack the reply after. */
        _cleanup_free_ bool *res = calloc(n, sizeof(bool));
        if (!res) {
                proto_error(e, PROTO_E_QUEUE_FULL, NULL, "out of memory");
                return reply_error(d, req, e);
        }
        for (uint32_t i = 0; i < n; i++) {
                Future *f = table_get(&d->table, ids[i]);
                res[i] = f && daemon_cancel(d, f, STATE_CANCELLED, NULL);
                if (!res[i] && f && f->state == STATE_CANCELLED)
                        res[i] = true; /* cancelled already: it is cancelled, as Python says */
        }
        reply_begin(d, req, 1);
        proto_pack_str(&req->pk, "cancelled");
        msgpack_pack_array(&req->pk, n);
        for (uint32_t i = 0; i < n; i++)
                if (res[i])
                        msgpack_pack_true(&req->pk);
                else
                        msgpack_pack_false(&req->pk);
        reply_send(d, req);
        daemon_dispatch(d);
}

static void op_release(Daemon *d, Request *req, ProtoError *e) {
        _cleanup_free_ uint64_t *ids = NULL;
        uint32_t n;

        if (get_ids(req->body, false, false, &ids, &n, e) < 0)
                return reply_error(d, req, e);
        reply_begin(d, req, 1);
        proto_pack_str(&req->pk, "released");
        msgpack_pack_array(&req->pk, n);
        for (uint32_t i = 0; i < n; i++) {
                Future *f = table_get(&d->table, ids[i]);
                if (f && proto_state_final(f->state)) {
                        daemon_expire(d, f);
                        msgpack_pack_true(&req->pk);
                } else
                        msgpack_pack_false(&req->pk);
        }
        reply_send(d, req);
}

/* The future `id` when it exists and `list` shows it: every state, or only `state` (>= 0) as
 * clients see it. */
static Future *listed(Daemon *d, uint64_t id, int state) {
        Future *f = table_get(&d->table, id);

        return f && (state < 0 || daemon_visible_state(d, f) == (FutureState) state) ? f : NULL;
}

static void op_list(Daemon *d, Request *req, ProtoError *e) {
        const msgpack_object *o;
        uint64_t after = 0, limit = 100;
        int state = -1;
        uint32_t n = 0;
        bool more = false;

        if ((o = proto_map_get(req->body, "state"))) {
                if (o->type != MSGPACK_OBJECT_STR ||
                    (state = proto_state_from_name(o->via.str.ptr, o->via.str.size)) < 0) {
                        proto_error(e, PROTO_E_BAD_REQUEST, "state", "'state' must be a state name");
                        return reply_error(d, req, e);
                }
        }
        if ((o = proto_map_get(req->body, "after")) && proto_get_uint(o, &after) < 0) {
                proto_error(e, PROTO_E_BAD_REQUEST, "after", "'after' must be a future ID");
                return reply_error(d, req, e);
        }
        if ((o = proto_map_get(req->body, "limit")) &&
            (proto_get_uint(o, &limit) < 0 || limit < 1 || limit > PROTO_MAX_LIST)) {
                proto_error(e, PROTO_E_BAD_REQUEST, "limit", "'limit' must be from 1 to %u",
                            PROTO_MAX_LIST);
                return reply_error(d, req, e);
        }

        /* Two passes over the same range: count, then pack, since msgpack needs the length
         * first. */
        uint64_t from = MAX(after + 1, d->table.base), last = 0;
        for (uint64_t id = from; id < d->table.next_id; id++) {
                if (!listed(d, id, state))
                        continue;
                if (n == limit) {
                        more = true;
                        break;
                }
                n++;
                last = id;
        }
        reply_begin(d, req, 2);
        proto_pack_str(&req->pk, "futures");
        msgpack_pack_array(&req->pk, n);
        for (uint64_t id = from; n > 0 && id <= last; id++) {
                Future *f = listed(d, id, state);
                if (!f)
                        continue;
                msgpack_pack_map(&req->pk, 5);
                proto_pack_str(&req->pk, "id");
                msgpack_pack_uint64(&req->pk, f->id);
                proto_pack_str(&req->pk, "kind");
                proto_pack_str(&req->pk, f->kind->name);
                proto_pack_str(&req->pk, "state");
                proto_pack_str(&req->pk, proto_state_name(daemon_visible_state(d, f)));
                proto_pack_str(&req->pk, "group");
                proto_pack_str(&req->pk, f->group ? f->group->name : "");
                proto_pack_str(&req->pk, "priority");
                msgpack_pack_int(&req->pk, f->priority);
        }
        proto_pack_str(&req->pk, "more");
        if (more)
                msgpack_pack_true(&req->pk);
        else
                msgpack_pack_false(&req->pk);
        reply_send(d, req);
}

static void pack_counter(msgpack_packer *pk, const char *name, uint64_t v) {
        proto_pack_str(pk, name);
        msgpack_pack_uint64(pk, v);
}

static void op_stats(Daemon *d, Request *req, ProtoError *e) {
        msgpack_packer *pk = &req->pk;

        reply_begin(d, req, 1);
        proto_pack_str(pk, "stats");
        msgpack_pack_map(pk, 16);
        unsigned queued = daemon_thread_jobs_queued(d);
        pack_counter(pk, "pending", d->n_state[STATE_PENDING] + queued);
        pack_counter(pk, "running", d->n_state[STATE_RUNNING] - queued);
        pack_counter(pk, "done", d->n_state[STATE_DONE]);
        pack_counter(pk, "failed", d->n_state[STATE_FAILED]);
        pack_counter(pk, "cancelled", d->n_state[STATE_CANCELLED]);
        pack_counter(pk, "submitted", d->submitted);
        pack_counter(pk, "finished", d->finished);
        pack_counter(pk, "threads", d->cfg.threads);
        pack_counter(pk, "transfers", d->cfg.transfers);
        pack_counter(pk, "transfers_running", d->transfers_busy);
        pack_counter(pk, "processes", d->cfg.processes);
        pack_counter(pk, "processes_alive", procpool_alive(d->ppool));
        pack_counter(pk, "workers_started", procpool_started(d->ppool));
        pack_counter(pk, "workers_died", procpool_died(d->ppool));
        pack_counter(pk, "clients_deferred", d->n_deferred);
        pack_counter(pk, "uptime_ms", (timer_now() - d->started_ns) / 1000000u);
        reply_send(d, req);
}

static void op_probe(Daemon *d, Request *req, ProtoError *e) {
        const msgpack_object *o = proto_map_get(req->body, "token");
        char topic[6 + PROTO_MAX_TOKEN + 1];
        msgpack_packer pk;

        if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
            o->via.str.size > PROTO_MAX_TOKEN) {
                proto_error(e, PROTO_E_BAD_REQUEST, "token",
                            "'token' must be a string of 1 to %u bytes", PROTO_MAX_TOKEN);
                return reply_error(d, req, e);
        }
        memcpy(topic, "probe/", 6);
        memcpy(topic + 6, o->via.str.ptr, o->via.str.size);
        d->out.size = 0;
        msgpack_packer_init(&pk, &d->out, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 0);
        zmq_send(d->pub, topic, 6 + o->via.str.size, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(d->pub, d->out.data, d->out.size, ZMQ_DONTWAIT);
        reply_begin(d, req, 0);
        reply_send(d, req);
}

void request_pack_wait_reply(Daemon *d, uint64_t req_id, const uint64_t *ids, uint32_t n) {
        msgpack_packer pk;
        uint32_t n_done = 0;

        msgpack_packer_init(&pk, &d->out, msgpack_sbuffer_write);
        for (uint32_t i = 0; i < n; i++)
                n_done += proto_state_final(daemon_state_of(d, ids[i]));
        pack_head(d, &pk, true, req_id, true, 2);
        proto_pack_str(&pk, "done");
        msgpack_pack_array(&pk, n_done);
        for (uint32_t i = 0; i < n; i++)
                if (proto_state_final(daemon_state_of(d, ids[i])))
                        msgpack_pack_uint64(&pk, ids[i]);
        proto_pack_str(&pk, "not_done");
        msgpack_pack_array(&pk, n - n_done);
        for (uint32_t i = 0; i < n; i++)
                if (!proto_state_final(daemon_state_of(d, ids[i])))
                        msgpack_pack_uint64(&pk, ids[i]);
}

/* True if a future in state `s` shows its stored result or failure. */
static bool shows_outcome(const Future *f, FutureState s) {
        return f && f->outcome && (s == STATE_DONE || s == STATE_FAILED);
}

/* Packs the `state` field and, when shows_outcome(), `result` or `failure`: 1 or 2 fields. */
static void pack_state_fields(Daemon *d, msgpack_packer *pk, const Future *f, FutureState s) {
        proto_pack_str(pk, "state");
        proto_pack_str(pk, proto_state_name(s));
        if (shows_outcome(f, s)) {
                /* The outcome is stored packed: splice its bytes in as the value. */
                proto_pack_str(pk, s == STATE_DONE ? "result" : "failure");
                msgpack_sbuffer_write(&d->out, (const char *) f->outcome, f->outcome_len);
        }
}

void request_pack_result_reply(Daemon *d, uint64_t req_id, uint64_t id) {
        FutureState s = daemon_state_of(d, id);
        Future *f = table_get(&d->table, id);
        msgpack_packer pk;

        msgpack_packer_init(&pk, &d->out, msgpack_sbuffer_write);
        if (!proto_state_final(s)) {
                ProtoError e = { .index = -1 };
                proto_error(&e, PROTO_E_NOT_DONE, NULL, "future %" PRIu64 " is still %s", id,
                            proto_state_name(s));
                pack_error(d, &pk, true, req_id, &e);
                return;
        }
        pack_head(d, &pk, true, req_id, true, 1 + shows_outcome(f, s));
        pack_state_fields(d, &pk, f, s);
}

/* Packs {id, state, result|failure} for one future. */
static void pack_outcome(Daemon *d, msgpack_packer *pk, uint64_t id) {
        FutureState s = daemon_state_of(d, id);
        Future *f = table_get(&d->table, id);

        msgpack_pack_map(pk, 2 + shows_outcome(f, s));
        proto_pack_str(pk, "id");
        msgpack_pack_uint64(pk, id);
        pack_state_fields(d, pk, f, s);
}

void request_pack_results_reply(Daemon *d, uint64_t req_id, const uint64_t *ids, uint32_t n) {
        msgpack_packer pk;

        msgpack_packer_init(&pk, &d->out, msgpack_sbuffer_write);
        pack_head(d, &pk, true, req_id, true, 2);
        proto_pack_str(&pk, "ids");
        msgpack_pack_array(&pk, n);
        for (uint32_t i = 0; i < n; i++)
                msgpack_pack_uint64(&pk, ids[i]);
        proto_pack_str(&pk, "results");
        msgpack_pack_array(&pk, n);
        for (uint32_t i = 0; i < n; i++)
                pack_outcome(d, &pk, ids[i]);
}

void request_handle(Daemon *d, const uint8_t *identity, size_t identity_len, bool envelope,
                    const uint8_t *body, size_t body_len) {
        static const char *const common[] = { "v", "id", "op" };
        static const struct {
                const char *name;
                void (*run)(Daemon *d, Request *req, ProtoError *e);
                const char *fields[6];
        } ops[] = {
                { "hello", op_hello, {} },
                { "submit", op_submit, { "jobs", "reply" } },
                { "status", op_status, { "ids" } },
                { "wait", op_wait, { "ids", "mode", "timeout" } },
                { "result", op_result, { "future", "timeout" } },
                { "results", op_results, { "ids", "timeout" } },
                { "cancel", op_cancel, { "ids" } },
                { "release", op_release, { "ids" } },
                { "list", op_list, { "state", "after", "limit" } },
                { "stats", op_stats, {} },
                { "probe", op_probe, { "token" } },
        };
        Request req = { .identity = identity, .identity_len = identity_len, .envelope = envelope };
        ProtoError e = { .index = -1 };
        msgpack_unpacked msg;
        const msgpack_object *o;
        size_t off = 0;
        uint64_t v;
        int op = -1;

        msgpack_packer_init(&req.pk, &d->out, msgpack_sbuffer_write);
        msgpack_unpacked_init(&msg);
        bool decoded = msgpack_unpack_next(&msg, (const char *) body, body_len, &off) ==
                               MSGPACK_UNPACK_SUCCESS &&
                       off == body_len;
        req.body = &msg.data;
        if (body_len > PROTO_MAX_MESSAGE) {
                /* Still echo the id if the oversized request has one (ZeroMQ caps the size at
                 * PROTO_HARD_MAX_MESSAGE, so decoding it is bounded). */
                uint64_t id;
                if (decoded && proto_get_uint(proto_map_get(req.body, "id"), &id) == 0) {
                        req.id = id;
                        req.has_id = true;
                }
                proto_error(&e, PROTO_E_TOO_LARGE, NULL, "request of %zu bytes; the limit is %u",
                            body_len, PROTO_MAX_MESSAGE);
                goto out;
        }
        if (!decoded) {
                proto_error(&e, PROTO_E_BAD_MESSAGE, NULL,
                            "the request is not exactly one msgpack value");
                goto out;
        }
        if (req.body->type != MSGPACK_OBJECT_MAP) {
                proto_error(&e, PROTO_E_BAD_REQUEST, NULL, "the request must be a msgpack map");
                goto out;
        }
        /* Find the request id first, so that every later error can echo it. */
        if ((o = proto_map_get(req.body, "id"))) {
                if (proto_get_uint(o, &req.id) < 0) {
                        proto_error(&e, PROTO_E_BAD_REQUEST, "id",
                                    "'id' must be an unsigned integer");
                        goto out;
                }
                req.has_id = true;
        } else {
                proto_error(&e, PROTO_E_BAD_REQUEST, "id", "missing field 'id'");
                goto out;
        }
        o = proto_map_get(req.body, "v");
        if (!o) {
                proto_error(&e, PROTO_E_BAD_REQUEST, "v", "missing field 'v'");
                goto out;
        }
        if (proto_get_uint(o, &v) < 0 || v != PROTO_VERSION) {
                proto_error(&e, PROTO_E_BAD_VERSION, "v", "this daemon speaks protocol version %d",
                            PROTO_VERSION);
                goto out;
        }
        o = proto_map_get(req.body, "op");
        if (!o || o->type != MSGPACK_OBJECT_STR) {
                proto_error(&e, PROTO_E_BAD_REQUEST, "op", "missing or non-string field 'op'");
                goto out;
        }
        for (size_t i = 0; i < ELEMENTSOF(ops) && op < 0; i++)
                if (proto_str_eq(o, ops[i].name))
                        op = (int) i;
        if (op < 0) {
                proto_error(&e, PROTO_E_UNKNOWN_OP, "op", "unknown operation '%.*s'",
                            (int) MIN(o->via.str.size, 64u), o->via.str.ptr);
                goto out;
        }
        {
                const char *allowed[ELEMENTSOF(common) + 7] = {};
                size_t n = 0;
                for (size_t i = 0; i < ELEMENTSOF(common); i++)
                        allowed[n++] = common[i];
                for (size_t i = 0; i < ELEMENTSOF(ops[op].fields) && ops[op].fields[i]; i++)
                        allowed[n++] = ops[op].fields[i];
                if (proto_check_fields(req.body, allowed, &e) < 0)
                        goto out;
        }

        ops[op].run(d, &req, &e);
        msgpack_unpacked_destroy(&msg);
        return;
out:
        reply_error(d, &req, &e);
        msgpack_unpacked_destroy(&msg);
}
