/* libfutured: see futured/client.h. One DEALER (and, for events, one SUB) per handle; requests
 * are packed into one reusable buffer and matched to replies by request id. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "futured/client.h"
#include "keyfile.h"
#include "macro.h"
#include "now.h"
#include "proto.h"

/* How long an ordinary request may go unanswered before the daemon counts as unreachable, and the
 * margin added to the daemon-side timeout of wait and result. */
#define REPLY_TIMEOUT 30.0
#define RECONCILE_INTERVAL 1.0

struct futured {
        void *zctx;
        void *dealer;
        void *sub; /* NULL until events are used */
        char *endpoint;
        char *events;
        char *server;
        unsigned threads, processes;
        uint64_t next_id;
        msgpack_sbuffer out;
        msgpack_packer pk;
        zmq_msg_t reply_msg;    /* the bytes of the last reply, which `reply` points into */
        msgpack_unpacked reply; /* the last reply; valid until the next request */
        msgpack_unpacked hello; /* kept for the kinds table */
        char error_code[32];
        char error_message[256];
        /* CURVE, for network endpoints (keyfile.h): empty strings when not used. */
        char server_key[KEYFILE_KEY_LEN + 1];
        char public_key[KEYFILE_KEY_LEN + 1];
        char secret_key[KEYFILE_KEY_LEN + 1];
};

struct futured_as_completed {
        futured *c;
        futured_id *ids; /* sorted, unique */
        bool *yielded;   /* by index into ids */
        size_t n, left;
        futured_id *ready; /* finished, not yet handed out: a FIFO */
        size_t ready_head, ready_tail;
        double deadline; /* monotonic seconds, or INFINITY */
        double next_reconcile;
};

static const char *const completion_topics[] = { "done/", "failed/", "cancelled/" };

/* Milliseconds until `deadline` for zmq_poll: -1 forever, else at least 0. */
static long poll_ms(double deadline) {
        double left;

        if (isinf(deadline))
                return -1;
        left = deadline - now_seconds();
        return left <= 0 ? 0 : (long) ceil(left * 1000);
}

static int set_error(futured *c, int r, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int set_error(futured *c, int r, const char *code, const char *fmt, ...) {
        va_list ap;

        snprintf(c->error_code, sizeof c->error_code, "%s", code);
        va_start(ap, fmt);
        vsnprintf(c->error_message, sizeof c->error_message, fmt, ap);
        va_end(ap);
        return r;
}

static void copy_str(char *dst, size_t size, const msgpack_object *o) {
        if (o && o->type == MSGPACK_OBJECT_STR)
                snprintf(dst, size, "%.*s", (int) o->via.str.size, o->via.str.ptr);
        else if (size > 0)
                dst[0] = '\0';
}

char *futured_endpoint_default(void) {
        const char *env = getenv("FUTURED_ENDPOINT");

        if (env && *env)
                return strdup(env);
        return proto_client_endpoint();
}

const char *futured_state_name(futured_state s) {
        return proto_state_name((FutureState) s);
}

const char *futured_endpoint(futured *c) {
        return c->endpoint;
}

const char *futured_server(futured *c) {
        return c->server;
}

unsigned futured_processes(futured *c) {
        return c->processes;
}

unsigned futured_threads(futured *c) {
        return c->threads;
}

const char *futured_error_code(futured *c) {
        return c->error_code;
}

const char *futured_error_message(futured *c) {
        return c->error_message;
}

/* Starts a request: the common fields and a map header for `n_fields` more. */
static msgpack_packer *request_begin(futured *c, const char *op, uint32_t n_fields) {
        c->out.size = 0;
        msgpack_pack_map(&c->pk, 3 + n_fields);
        proto_pack_str(&c->pk, "v");
        msgpack_pack_uint8(&c->pk, PROTO_VERSION);
        proto_pack_str(&c->pk, "id");
        msgpack_pack_uint64(&c->pk, ++c->next_id);
        proto_pack_str(&c->pk, "op");
        proto_pack_str(&c->pk, op);
        return &c->pk;
}

/* Sends the packed request and waits until `deadline` for its reply, which lands in c->reply.
 * Returns 0 for an ok reply, -EPROTO for an error reply, -EHOSTUNREACH on silence. */
static int request_finish(futured *c, double deadline) {
        const msgpack_object *o;

        if (zmq_send(c->dealer, c->out.data, c->out.size, 0) < 0)
                return set_error(c, -errno, "send", "cannot send: %s", zmq_strerror(errno));
        for (;;) {
                zmq_pollitem_t item = { .socket = c->dealer, .events = ZMQ_POLLIN };
                uint64_t id;
                int r;

                r = zmq_poll(&item, 1, poll_ms(deadline));
                if (r < 0 && errno == EINTR)
                        return set_error(c, -EINTR, "interrupted", "interrupted");
                if (r <= 0)
                        return set_error(c, -EHOSTUNREACH, "unreachable",
                                         "futured at %s did not answer", c->endpoint);
                /* Strings of the unpacked reply point into the message: keep it until the next. */
                zmq_msg_close(&c->reply_msg);
                zmq_msg_init(&c->reply_msg);
                if (zmq_msg_recv(&c->reply_msg, c->dealer, 0) < 0)
                        continue;
                if (msgpack_unpack_next(&c->reply, zmq_msg_data(&c->reply_msg),
                                        zmq_msg_size(&c->reply_msg), NULL) != MSGPACK_UNPACK_SUCCESS)
                        continue;
                o = proto_map_get(&c->reply.data, "id");
                /* A late reply to an abandoned request carries its id: skip it. A reply without
                 * an id is the daemon saying it could not read ours (the only one outstanding). */
                if (o && o->type != MSGPACK_OBJECT_NIL &&
                    (proto_get_uint(o, &id) < 0 || id != c->next_id))
                        continue;
                o = proto_map_get(&c->reply.data, "ok");
                if (o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean)
                        return 0;
                o = proto_map_get(&c->reply.data, "error");
                copy_str(c->error_code, sizeof c->error_code, proto_map_get(o, "code"));
                copy_str(c->error_message, sizeof c->error_message, proto_map_get(o, "message"));
                if (!c->error_code[0])
                        return set_error(c, -EBADMSG, "bad_reply", "a reply without ok or error");
                return -EPROTO;
        }
}

/* Deadline for a request the daemon answers at once, or after `wait` seconds (< 0: never). */
static double reply_deadline(double wait) {
        if (wait < 0)
                return INFINITY;
        return now_seconds() + wait + REPLY_TIMEOUT;
}

/* For ipc:// endpoints, a missing socket file means nobody listens, and one we may not open will
 * never answer (ZeroMQ connects in the background and would only time out): say so at once.
 * Returns 0, -EHOSTUNREACH or -EACCES. */
static int ipc_endpoint_check(const char *endpoint) {
        struct stat st;

        if (strncmp(endpoint, "ipc://", 6) != 0 || endpoint[6] == '@')
                return 0;
        if (stat(endpoint + 6, &st) < 0)
                return errno == EACCES ? -EACCES : errno == ENOENT ? -EHOSTUNREACH : 0;
        return access(endpoint + 6, R_OK | W_OK) < 0 && errno == EACCES ? -EACCES : 0;
}

static int read_hello(futured *c) {
        const msgpack_object *r = &c->reply.data, *o;
        size_t len = zmq_msg_size(&c->reply_msg);
        uint64_t v;
        char *copy;

        /* Keep the hello (its kinds table) in bytes of our own. */
        copy = malloc(len);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, zmq_msg_data(&c->reply_msg), len);
        msgpack_unpacked_destroy(&c->hello);
        msgpack_unpacked_init(&c->hello);
        if (msgpack_unpack_next(&c->hello, copy, len, NULL) != MSGPACK_UNPACK_SUCCESS) {
                free(copy);
                return -EBADMSG;
        }
        /* The zone of `hello` does not own `copy`: hand it over by pushing a finalizer. */
        if (!msgpack_zone_push_finalizer(c->hello.zone, free, copy)) {
                free(copy);
                return -ENOMEM;
        }
        r = &c->hello.data;
        c->events = proto_strdup(proto_map_get(r, "events"), 4096);
        c->server = proto_strdup(proto_map_get(r, "server"), 256);
        if (!c->events || !c->server)
                return -EBADMSG;
        if ((o = proto_map_get(r, "threads")) && proto_get_uint(o, &v) == 0)
                c->threads = (unsigned) v;
        if ((o = proto_map_get(r, "processes")) && proto_get_uint(o, &v) == 0)
                c->processes = (unsigned) v;
        return 0;
}

/* Sets the CURVE client options of `socket` for `endpoint` when it is a network one (anything
 * but ipc:// and inproc://) and the handle has keys. Returns 0 or -errno. */
static int curve_setup(futured *c, void *socket, const char *endpoint) {
        if (!c->server_key[0] || strncmp(endpoint, "ipc://", 6) == 0 ||
            strncmp(endpoint, "inproc://", 9) == 0)
                return 0;
        if (zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, c->server_key, KEYFILE_KEY_LEN) < 0 ||
            zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, c->public_key, KEYFILE_KEY_LEN) < 0 ||
            zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, c->secret_key, KEYFILE_KEY_LEN) < 0)
                return -errno;
        return 0;
}

/* Takes the server's public key (a key or a key file) and the client's key pair (a key file).
 * Returns 0, or keyfile's errors; -EINVAL when only one of them is given. */
static int curve_keys(futured *c, const char *server_key, const char *client_key) {
        int r;

        if (!server_key && !client_key)
                return 0;
        if (!server_key || !client_key)
                return -EINVAL;
        r = keyfile_public(server_key, c->server_key);
        if (r >= 0)
                r = keyfile_read(client_key, c->public_key, c->secret_key);
        if (r < 0)
                c->server_key[0] = c->public_key[0] = c->secret_key[0] = 0;
        return r;
}

int futured_connect(futured **ret, const char *endpoint, double timeout) {
        return futured_connect_curve(ret, endpoint, timeout, getenv("FUTURED_SERVER_KEY"),
                                     getenv("FUTURED_CLIENT_KEY"));
}

int futured_connect_curve(futured **ret, const char *endpoint, double timeout,
                          const char *server_key, const char *client_key) {
        futured *c;
        int r, zero = 0;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        msgpack_sbuffer_init(&c->out);
        msgpack_packer_init(&c->pk, &c->out, msgpack_sbuffer_write);
        msgpack_unpacked_init(&c->reply);
        msgpack_unpacked_init(&c->hello);
        zmq_msg_init(&c->reply_msg);
        c->endpoint = endpoint ? strdup(endpoint) : futured_endpoint_default();
        c->zctx = zmq_ctx_new();
        if (!c->endpoint || !c->zctx) {
                futured_free(c);
                return -ENOMEM;
        }
        c->dealer = zmq_socket(c->zctx, ZMQ_DEALER);
        if (!c->dealer) {
                futured_free(c);
                return -ENOMEM;
        }
        zmq_setsockopt(c->dealer, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(c->dealer, ZMQ_RCVHWM, &zero, sizeof zero);
        zmq_setsockopt(c->dealer, ZMQ_SNDHWM, &zero, sizeof zero);
        r = curve_keys(c, server_key, client_key);
        if (r >= 0)
                r = curve_setup(c, c->dealer, c->endpoint);
        if (r >= 0)
                r = ipc_endpoint_check(c->endpoint);
        if (r < 0 || zmq_connect(c->dealer, c->endpoint) < 0) {
                futured_free(c);
                return r < 0 ? r : -EHOSTUNREACH;
        }
        request_begin(c, "hello", 0);
        r = request_finish(c, now_seconds() + (timeout > 0 ? timeout : 5.0));
        if (r == 0)
                r = read_hello(c);
        if (r < 0) {
                futured_free(c);
                return r == -EPROTO || r == -EBADMSG ? -EBADMSG : r;
        }
        *ret = c;
        return 0;
}

void futured_free(futured *c) {
        if (!c)
                return;
        if (c->sub)
                zmq_close(c->sub);
        if (c->dealer)
                zmq_close(c->dealer);
        if (c->zctx)
                zmq_ctx_term(c->zctx);
        zmq_msg_close(&c->reply_msg);
        msgpack_unpacked_destroy(&c->reply);
        msgpack_unpacked_destroy(&c->hello);
        msgpack_sbuffer_destroy(&c->out);
        free(c->endpoint);
        free(c->events);
        free(c->server);
        free(c);
}

/* Copies `o` into a new msgpack buffer (caller frees). */
static int pack_copy(const msgpack_object *o, void **ret, size_t *ret_len) {
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (msgpack_pack_object(&pk, *o) < 0 || !sb.data) {
                msgpack_sbuffer_destroy(&sb);
                return -ENOMEM;
        }
        *ret_len = sb.size;
        *ret = msgpack_sbuffer_release(&sb);
        return 0;
}

int futured_call(futured *c, const char *op, const void *fields, size_t fields_len, void **reply,
                 size_t *reply_len) {
        msgpack_unpacked extra;
        uint32_t n = 0;
        int r;

        msgpack_unpacked_init(&extra);
        if (fields) {
                if (msgpack_unpack_next(&extra, fields, fields_len, NULL) !=
                            MSGPACK_UNPACK_SUCCESS ||
                    extra.data.type != MSGPACK_OBJECT_MAP) {
                        msgpack_unpacked_destroy(&extra);
                        return set_error(c, -EINVAL, "bad_fields", "fields must be a msgpack map");
                }
                n = extra.data.via.map.size;
        }
        request_begin(c, op, n);
        for (uint32_t i = 0; i < n; i++) {
                msgpack_pack_object(&c->pk, extra.data.via.map.ptr[i].key);
                msgpack_pack_object(&c->pk, extra.data.via.map.ptr[i].val);
        }
        msgpack_unpacked_destroy(&extra);
        r = request_finish(c, reply_deadline(0));
        if (r < 0)
                return r;
        return pack_copy(&c->reply.data, reply, reply_len);
}

static void pack_ids(msgpack_packer *pk, const futured_id *ids, size_t n) {
        msgpack_pack_array(pk, (uint32_t) n);
        for (size_t i = 0; i < n; i++)
                msgpack_pack_uint64(pk, ids[i]);
}

/* Reads reply field `key` as an array of exactly `n` elements. */
static const msgpack_object *reply_array(futured *c, const char *key, size_t n) {
        const msgpack_object *o = proto_map_get(&c->reply.data, key);

        if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != n)
                return NULL;
        return o;
}

/* Packs a submit request of `n` jobs; `want_results` asks for the deferred reply with results. */
static int pack_submit(futured *c, const futured_job *jobs, size_t n, bool want_results) {
        if (n == 0 || n > UINT32_MAX)
                return set_error(c, -EINVAL, "bad_request", "no jobs to submit");
        request_begin(c, "submit", 1 + want_results);
        if (want_results) {
                proto_pack_str(&c->pk, "reply");
                proto_pack_str(&c->pk, "results");
        }
        proto_pack_str(&c->pk, "jobs");
        msgpack_pack_array(&c->pk, (uint32_t) n);
        for (size_t i = 0; i < n; i++) {
                const futured_job *j = &jobs[i];
                uint32_t fields = 1 + !!j->args + !!j->priority + (j->timeout > 0) + !!j->group +
                                  (j->group && j->group_limit) + !!j->retries +
                                  !!j->idempotency_key;

                msgpack_pack_map(&c->pk, fields);
                proto_pack_str(&c->pk, "kind");
                proto_pack_str(&c->pk, j->kind);
                if (j->args) {
                        /* Embed the caller's map as it is: it is one msgpack value already. */
                        proto_pack_str(&c->pk, "args");
                        msgpack_sbuffer_write(&c->out, j->args, j->args_len);
                }
                if (j->priority) {
                        proto_pack_str(&c->pk, "priority");
                        msgpack_pack_int(&c->pk, j->priority);
                }
                if (j->timeout > 0) {
                        proto_pack_str(&c->pk, "timeout");
                        msgpack_pack_double(&c->pk, j->timeout);
                }
                if (j->group) {
                        proto_pack_str(&c->pk, "group");
                        proto_pack_str(&c->pk, j->group);
                        if (j->group_limit) {
                                proto_pack_str(&c->pk, "group_limit");
                                msgpack_pack_unsigned_int(&c->pk, j->group_limit);
                        }
                }
                if (j->retries) {
                        proto_pack_str(&c->pk, "retries");
                        msgpack_pack_unsigned_int(&c->pk, j->retries);
                }
                if (j->idempotency_key) {
                        proto_pack_str(&c->pk, "idempotency_key");
                        proto_pack_str(&c->pk, j->idempotency_key);
                }
        }
        return 0;
}

/* Reads the `ids` of a submit reply. */
static int read_ids(futured *c, size_t n, futured_id *ids) {
        const msgpack_object *a = reply_array(c, "ids", n);

        if (!a)
                return set_error(c, -EBADMSG, "bad_reply", "submit reply without ids");
        for (size_t i = 0; i < n; i++)
                if (proto_get_uint(&a->via.array.ptr[i], &ids[i]) < 0)
                        return set_error(c, -EBADMSG, "bad_reply", "submit reply with a bad id");
        return 0;
}

int futured_submit(futured *c, const futured_job *jobs, size_t n, futured_id *ids) {
        int r = pack_submit(c, jobs, n, false);

        if (r < 0)
                return r;
        r = request_finish(c, reply_deadline(0));
        if (r < 0)
                return r;
        return read_ids(c, n, ids);
}

int futured_status(futured *c, const futured_id *ids, size_t n, futured_state *states) {
        const msgpack_object *a;
        int r;

        request_begin(c, "status", 1);
        proto_pack_str(&c->pk, "ids");
        pack_ids(&c->pk, ids, n);
        r = request_finish(c, reply_deadline(0));
        if (r < 0)
                return r;
        a = reply_array(c, "states", n);
        if (!a)
                return set_error(c, -EBADMSG, "bad_reply", "status reply without states");
        for (size_t i = 0; i < n; i++) {
                const msgpack_object *s = &a->via.array.ptr[i];
                r = s->type == MSGPACK_OBJECT_STR
                            ? proto_state_from_name(s->via.str.ptr, s->via.str.size)
                            : -EINVAL;
                if (r < 0)
                        return set_error(c, -EBADMSG, "bad_reply", "status reply with a bad state");
                states[i] = (futured_state) r;
        }
        return 0;
}

static void pack_timeout(msgpack_packer *pk, double timeout) {
        proto_pack_str(pk, "timeout");
        if (timeout < 0)
                msgpack_pack_nil(pk);
        else
                msgpack_pack_double(pk, timeout);
}

static int id_compare(const void *a, const void *b) {
        futured_id x = *(const futured_id *) a, y = *(const futured_id *) b;

        return x < y ? -1 : x > y;
}

int futured_wait(futured *c, const futured_id *ids, size_t n, futured_wait_mode mode,
                 double timeout, bool *done) {
        static const char *const modes[] = {
                [FUTURED_ALL_COMPLETED] = "all",
                [FUTURED_FIRST_COMPLETED] = "first_completed",
                [FUTURED_FIRST_EXCEPTION] = "first_exception",
        };
        const msgpack_object *a;
        int r, n_done = 0;

        if ((unsigned) mode > FUTURED_FIRST_EXCEPTION)
                return set_error(c, -EINVAL, "bad_request", "no such wait mode");
        request_begin(c, "wait", 3);
        proto_pack_str(&c->pk, "ids");
        pack_ids(&c->pk, ids, n);
        proto_pack_str(&c->pk, "mode");
        proto_pack_str(&c->pk, modes[mode]);
        pack_timeout(&c->pk, timeout);
        r = request_finish(c, reply_deadline(timeout));
        if (r < 0)
                return r;
        a = proto_map_get(&c->reply.data, "done");
        if (!a || a->type != MSGPACK_OBJECT_ARRAY)
                return set_error(c, -EBADMSG, "bad_reply", "wait reply without done");
        /* The reply lists each done ID once; the request may repeat IDs: look each one up. */
        _cleanup_free_ futured_id *sorted = malloc((a->via.array.size + 1) * sizeof *sorted);
        if (!sorted)
                return -ENOMEM;
        for (uint32_t j = 0; j < a->via.array.size; j++)
                if (proto_get_uint(&a->via.array.ptr[j], &sorted[j]) < 0)
                        return set_error(c, -EBADMSG, "bad_reply", "wait reply with a bad id");
        qsort(sorted, a->via.array.size, sizeof *sorted, id_compare);
        for (size_t i = 0; i < n; i++) {
                done[i] = bsearch(&ids[i], sorted, a->via.array.size, sizeof *sorted, id_compare);
                n_done += done[i];
        }
        return n_done;
}

/* Fills *out from a map holding `state` and maybe `result` or `failure`. */
static int read_outcome(futured *c, const msgpack_object *m, futured_outcome *out) {
        const msgpack_object *f = proto_map_get(m, "state");
        uint64_t v;
        int r, s;

        s = f && f->type == MSGPACK_OBJECT_STR ? proto_state_from_name(f->via.str.ptr, f->via.str.size)
                                               : -EINVAL;
        if (s < 0)
                return set_error(c, -EBADMSG, "bad_reply", "a result without a state");
        out->state = (futured_state) s;
        if ((f = proto_map_get(m, "result"))) {
                r = pack_copy(f, &out->result, &out->result_len);
                if (r < 0)
                        return r;
        }
        if ((f = proto_map_get(m, "failure"))) {
                copy_str(out->failure_code, sizeof out->failure_code, proto_map_get(f, "code"));
                copy_str(out->failure_message, sizeof out->failure_message,
                         proto_map_get(f, "message"));
                if (proto_get_uint(proto_map_get(f, "signal"), &v) == 0)
                        out->signal = (int) v;
                if (proto_get_uint(proto_map_get(f, "http_status"), &v) == 0)
                        out->http_status = (int) v;
        }
        return 0;
}

int futured_result(futured *c, futured_id id, double timeout, futured_outcome *out) {
        const msgpack_object *r_obj = &c->reply.data;
        int r;

        *out = (futured_outcome){};
        request_begin(c, "result", 2);
        proto_pack_str(&c->pk, "future");
        msgpack_pack_uint64(&c->pk, id);
        pack_timeout(&c->pk, timeout);
        r = request_finish(c, reply_deadline(timeout));
        if (r == -EPROTO && strcmp(c->error_code, PROTO_E_NOT_DONE) == 0)
                return -ETIMEDOUT;
        if (r < 0)
                return r;
        return read_outcome(c, r_obj, out);
}

/* Reads the results array of a reply into outs[0..n). */
static int read_results(futured *c, size_t n, futured_outcome *outs) {
        const msgpack_object *a = reply_array(c, "results", n);
        int r, finished = 0;

        for (size_t i = 0; i < n; i++)
                outs[i] = (futured_outcome){};
        if (!a)
                return set_error(c, -EBADMSG, "bad_reply", "reply without results");
        for (size_t i = 0; i < n; i++) {
                r = read_outcome(c, &a->via.array.ptr[i], &outs[i]);
                if (r < 0) {
                        for (size_t j = 0; j < i; j++)
                                futured_outcome_clear(&outs[j]);
                        return r;
                }
                finished += proto_state_final((FutureState) outs[i].state);
        }
        return finished;
}

int futured_results(futured *c, const futured_id *ids, size_t n, double timeout,
                    futured_outcome *outs) {
        int r;

        request_begin(c, "results", 2);
        proto_pack_str(&c->pk, "ids");
        pack_ids(&c->pk, ids, n);
        pack_timeout(&c->pk, timeout);
        r = request_finish(c, reply_deadline(timeout));
        if (r < 0)
                return r;
        return read_results(c, n, outs);
}

int futured_run(futured *c, const futured_job *jobs, size_t n, futured_id *ids,
                futured_outcome *outs) {
        int r = pack_submit(c, jobs, n, true);

        if (r < 0)
                return r;
        r = request_finish(c, INFINITY);
        if (r < 0)
                return r;
        r = read_ids(c, n, ids);
        if (r < 0)
                return r;
        r = read_results(c, n, outs);
        return r < 0 ? r : 0;
}

void futured_outcome_clear(futured_outcome *o) {
        free(o->result);
        *o = (futured_outcome){};
}

/* cancel and release: IDs in, one bool per ID out. */
static int ids_to_bools(futured *c, const char *op, const char *key, const futured_id *ids,
                        size_t n, bool *out) {
        const msgpack_object *a;
        int r, count = 0;

        request_begin(c, op, 1);
        proto_pack_str(&c->pk, "ids");
        pack_ids(&c->pk, ids, n);
        r = request_finish(c, reply_deadline(0));
        if (r < 0)
                return r;
        a = reply_array(c, key, n);
        if (!a)
                return set_error(c, -EBADMSG, "bad_reply", "%s reply without %s", op, key);
        for (size_t i = 0; i < n; i++) {
                bool b = a->via.array.ptr[i].type == MSGPACK_OBJECT_BOOLEAN &&
                         a->via.array.ptr[i].via.boolean;
                if (out)
                        out[i] = b;
                count += b;
        }
        return count;
}

int futured_cancel(futured *c, const futured_id *ids, size_t n, bool *cancelled) {
        return ids_to_bools(c, "cancel", "cancelled", ids, n, cancelled);
}

int futured_release(futured *c, const futured_id *ids, size_t n, bool *released) {
        return ids_to_bools(c, "release", "released", ids, n, released);
}

static const msgpack_object *hello_kind(futured *c, const char *kind) {
        const msgpack_object *kinds = proto_map_get(&c->hello.data, "kinds");

        if (!kinds || kinds->type != MSGPACK_OBJECT_ARRAY)
                return NULL;
        for (uint32_t i = 0; i < kinds->via.array.size; i++)
                if (proto_str_eq(proto_map_get(&kinds->via.array.ptr[i], "name"), kind))
                        return &kinds->via.array.ptr[i];
        return NULL;
}

/* Packs the text `value` as a value of the hello type `type` ("uint", "float", "str", "bool"). */
static int pack_typed(futured *c, msgpack_packer *pk, const msgpack_object *type, const char *name,
                      const char *value) {
        char *end;

        errno = 0;
        if (proto_str_eq(type, "uint")) {
                unsigned long long v;
                if (!*value || *value == '-' || *value == '+')
                        goto bad;
                v = strtoull(value, &end, 10);
                if (*end || errno)
                        goto bad;
                return msgpack_pack_uint64(pk, v);
        }
        if (proto_str_eq(type, "float")) {
                double v = strtod(value, &end);
                if (!*value || *end || errno || !isfinite(v))
                        goto bad;
                return msgpack_pack_double(pk, v);
        }
        if (proto_str_eq(type, "bool")) {
                if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 || strcmp(value, "1") == 0)
                        return msgpack_pack_true(pk);
                if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 || strcmp(value, "0") == 0)
                        return msgpack_pack_false(pk);
                goto bad;
        }
        proto_pack_str(pk, value);
        return 0;
bad:
        return set_error(c, -EINVAL, "bad_args", "'%s' is not a valid %.*s for '%s'", value,
                         type && type->type == MSGPACK_OBJECT_STR ? (int) type->via.str.size : 0,
                         type && type->type == MSGPACK_OBJECT_STR ? type->via.str.ptr : "", name);
}

int futured_args_pack(futured *c, const char *kind, char *const *argv, size_t argc, void **ret,
                      size_t *ret_len) {
        const msgpack_object *k = hello_kind(c, kind), *params;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        size_t next_positional = 0;
        int r = 0;

        if (!k)
                return set_error(c, -EINVAL, "unknown_kind", "no job kind '%s'", kind);
        params = proto_map_get(k, "params");
        if (!params || params->type != MSGPACK_OBJECT_ARRAY)
                return set_error(c, -EBADMSG, "bad_reply", "hello without params for '%s'", kind);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, (uint32_t) argc);
        for (size_t i = 0; i < argc && r >= 0; i++) {
                const char *eq = strchr(argv[i], '='), *value = argv[i];
                const msgpack_object *p = NULL;

                for (uint32_t j = 0; eq && j < params->via.array.size; j++) {
                        const msgpack_object *name = proto_map_get(&params->via.array.ptr[j], "name");
                        if (name && name->type == MSGPACK_OBJECT_STR &&
                            name->via.str.size == (size_t) (eq - argv[i]) &&
                            memcmp(name->via.str.ptr, argv[i], name->via.str.size) == 0) {
                                p = &params->via.array.ptr[j];
                                value = eq + 1;
                        }
                }
                if (!p && next_positional < params->via.array.size)
                        p = &params->via.array.ptr[next_positional++];
                if (!p) {
                        r = set_error(c, -EINVAL, "bad_args", "kind '%s' takes no argument '%s'",
                                      kind, argv[i]);
                        break;
                }
                _cleanup_free_ char *name = proto_strdup(proto_map_get(p, "name"), 256);
                if (!name) {
                        r = set_error(c, -EBADMSG, "bad_reply", "a parameter without a name");
                        break;
                }
                proto_pack_str(&pk, name);
                r = pack_typed(c, &pk, proto_map_get(p, "type"), name, value);
        }
        if (r < 0) {
                msgpack_sbuffer_destroy(&sb);
                return r;
        }
        *ret_len = sb.size;
        *ret = msgpack_sbuffer_release(&sb);
        return *ret ? 0 : -ENOMEM;
}

/* Makes sure the handle has a SUB socket on the daemon's events endpoint. */
static int sub_open(futured *c) {
        int zero = 0;

        if (c->sub)
                return 0;
        c->sub = zmq_socket(c->zctx, ZMQ_SUB);
        if (!c->sub)
                return set_error(c, -ENOMEM, "internal", "cannot make a SUB socket");
        zmq_setsockopt(c->sub, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(c->sub, ZMQ_RCVHWM, &zero, sizeof zero);
        if (curve_setup(c, c->sub, c->events) < 0 || zmq_connect(c->sub, c->events) < 0) {
                int r = -errno;
                zmq_close(c->sub);
                c->sub = NULL;
                return set_error(c, r, "unreachable", "cannot connect to events at %s",
                                 c->events);
        }
        return 0;
}

/* Subscribes to each of `prefixes`, then sends probes until one comes back through the SUB
 * socket: from then on the subscriptions are live. Events received while probing are dropped;
 * callers reconcile with status afterwards where that matters. */
static int subscribe_live(futured *c, const char *const *prefixes, size_t n) {
        char token[48], topic[64];
        double deadline = now_seconds() + REPLY_TIMEOUT;
        bool live = false;
        int r;

        r = sub_open(c);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                zmq_setsockopt(c->sub, ZMQ_SUBSCRIBE, prefixes[i], strlen(prefixes[i]));
        snprintf(token, sizeof token, "%d-%llu", (int) getpid(), (unsigned long long) ++c->next_id);
        snprintf(topic, sizeof topic, "probe/%s", token);
        zmq_setsockopt(c->sub, ZMQ_SUBSCRIBE, topic, strlen(topic));
        /* The first probe usually beats the subscription to the PUB: probe again soon, then
         * back off, so a live subscription costs milliseconds, not a fixed wait. */
        for (double backoff = 0.001; !live; backoff = MIN(backoff * 2, 0.05)) {
                double until = now_seconds() + backoff;

                if (now_seconds() > deadline)
                        return set_error(c, -EHOSTUNREACH, "unreachable",
                                         "no probe came back from %s", c->events);
                request_begin(c, "probe", 1);
                proto_pack_str(&c->pk, "token");
                proto_pack_str(&c->pk, token);
                r = request_finish(c, reply_deadline(0));
                if (r < 0)
                        return r;
                while (!live) {
                        zmq_pollitem_t item = { .socket = c->sub, .events = ZMQ_POLLIN };
                        char buf[64];
                        int len, more = 0;
                        size_t more_len = sizeof more;

                        if (zmq_poll(&item, 1, poll_ms(until)) <= 0)
                                break;
                        len = zmq_recv(c->sub, buf, sizeof buf, 0);
                        live = len == (int) strlen(topic) && memcmp(buf, topic, (size_t) len) == 0;
                        /* Skip the body frame(s). */
                        while (zmq_getsockopt(c->sub, ZMQ_RCVMORE, &more, &more_len) == 0 && more)
                                zmq_recv(c->sub, buf, sizeof buf, 0);
                }
        }
        zmq_setsockopt(c->sub, ZMQ_UNSUBSCRIBE, topic, strlen(topic));
        return 0;
}

int futured_subscribe(futured *c, const char *prefix) {
        return subscribe_live(c, &prefix, 1);
}

static void unsubscribe(futured *c, const char *const *prefixes, size_t n) {
        for (size_t i = 0; c->sub && i < n; i++)
                zmq_setsockopt(c->sub, ZMQ_UNSUBSCRIBE, prefixes[i], strlen(prefixes[i]));
}

/* Receives one event until `deadline`; the body goes to a new buffer. */
static int event_recv(futured *c, double deadline, char *topic, size_t topic_size, void **body,
                      size_t *body_len) {
        zmq_pollitem_t item = { .socket = c->sub, .events = ZMQ_POLLIN };
        zmq_msg_t part;
        int r, more = 0;
        size_t more_len = sizeof more;

        if (!c->sub)
                return set_error(c, -EINVAL, "bad_request", "not subscribed to anything");
        r = zmq_poll(&item, 1, poll_ms(deadline));
        if (r < 0 && errno == EINTR)
                return -EINTR;
        if (r <= 0)
                return -ETIMEDOUT;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, c->sub, 0) < 0) {
                zmq_msg_close(&part);
                return -errno;
        }
        snprintf(topic, topic_size, "%.*s", (int) zmq_msg_size(&part), (char *) zmq_msg_data(&part));
        *body = NULL;
        *body_len = 0;
        while (zmq_getsockopt(c->sub, ZMQ_RCVMORE, &more, &more_len) == 0 && more) {
                if (zmq_msg_recv(&part, c->sub, 0) < 0)
                        break;
                if (!*body) {
                        *body = malloc(zmq_msg_size(&part) + 1);
                        if (*body) {
                                memcpy(*body, zmq_msg_data(&part), zmq_msg_size(&part));
                                *body_len = zmq_msg_size(&part);
                        }
                }
        }
        zmq_msg_close(&part);
        return *body ? 0 : -EBADMSG;
}

int futured_event_next(futured *c, double timeout, char *topic, size_t topic_size, void **body,
                       size_t *body_len) {
        double deadline = timeout < 0 ? INFINITY : now_seconds() + timeout;

        return event_recv(c, deadline, topic, topic_size, body, body_len);
}

/* Marks ids[index] finished and queues it for yielding, once. */
static void ac_finish(futured_as_completed *it, size_t index) {
        if (it->yielded[index])
                return;
        it->yielded[index] = true;
        it->ready[it->ready_tail++] = it->ids[index];
}

static void ac_finish_id(futured_as_completed *it, futured_id id) {
        futured_id *p = bsearch(&id, it->ids, it->n, sizeof *it->ids, id_compare);

        if (p)
                ac_finish(it, (size_t) (p - it->ids));
}

/* Asks for the states of every ID not yet finished and queues the finished ones, in ID order. */
static int ac_reconcile(futured_as_completed *it) {
        _cleanup_free_ futured_id *batch = malloc(PROTO_MAX_IDS * sizeof *batch);
        _cleanup_free_ size_t *where = malloc(PROTO_MAX_IDS * sizeof *where);
        _cleanup_free_ futured_state *states = malloc(PROTO_MAX_IDS * sizeof *states);
        size_t i = 0;

        if (!batch || !where || !states)
                return -ENOMEM;
        while (i < it->n) {
                size_t k = 0;
                int r;

                for (; i < it->n && k < PROTO_MAX_IDS; i++)
                        if (!it->yielded[i]) {
                                batch[k] = it->ids[i];
                                where[k++] = i;
                        }
                if (k == 0)
                        break;
                r = futured_status(it->c, batch, k, states);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < k; j++)
                        if (proto_state_final((FutureState) states[j]))
                                ac_finish(it, where[j]);
        }
        it->next_reconcile = now_seconds() + RECONCILE_INTERVAL;
        return 0;
}

int futured_as_completed_new(futured *c, const futured_id *ids, size_t n, double timeout,
                             futured_as_completed **ret) {
        futured_as_completed *it;
        size_t u = 0;
        int r;

        it = calloc(1, sizeof *it);
        if (!it)
                return -ENOMEM;
        it->c = c;
        it->ids = malloc((n ? n : 1) * sizeof *it->ids);
        it->ready = malloc((n ? n : 1) * sizeof *it->ready);
        it->yielded = calloc(n ? n : 1, sizeof *it->yielded);
        if (!it->ids || !it->ready || !it->yielded) {
                futured_as_completed_free(it);
                return -ENOMEM;
        }
        memcpy(it->ids, ids, n * sizeof *ids);
        qsort(it->ids, n, sizeof *it->ids, id_compare);
        for (size_t i = 0; i < n; i++)
                if (u == 0 || it->ids[u - 1] != it->ids[i])
                        it->ids[u++] = it->ids[i];
        it->n = u;
        it->deadline = timeout < 0 ? INFINITY : now_seconds() + timeout;

        /* Subscribe first, then ask: a future finishing in between is seen by one or the other. */
        r = subscribe_live(c, completion_topics, ELEMENTSOF(completion_topics));
        if (r >= 0)
                r = ac_reconcile(it);
        if (r < 0) {
                futured_as_completed_free(it);
                return r;
        }
        *ret = it;
        return 0;
}

/* Receives one event until `deadline` and queues the ID it finishes. Returns 0, -ETIMEDOUT when
 * none came, or another negative errno. */
static int ac_absorb_event(futured_as_completed *it, double deadline) {
        char topic[256];
        void *body = NULL;
        size_t body_len;
        msgpack_unpacked ev;
        uint64_t v;
        int r;

        r = event_recv(it->c, deadline, topic, sizeof topic, &body, &body_len);
        if (r == -EBADMSG)
                return 0;
        if (r < 0)
                return r;
        msgpack_unpacked_init(&ev);
        if (msgpack_unpack_next(&ev, body, body_len, NULL) == MSGPACK_UNPACK_SUCCESS &&
            proto_get_uint(proto_map_get(&ev.data, "id"), &v) == 0)
                ac_finish_id(it, v);
        msgpack_unpacked_destroy(&ev);
        free(body);
        /* Events flowing: no need to ask the daemon yet. */
        it->next_reconcile = now_seconds() + RECONCILE_INTERVAL;
        return 0;
}

int futured_as_completed_next(futured_as_completed *it, futured_id *id) {
        for (;;) {
                int r;

                if (it->ready_head < it->ready_tail) {
                        *id = it->ready[it->ready_head++];
                        return 1;
                }
                if (it->ready_tail == it->n)
                        return 0;
                if (now_seconds() >= it->deadline)
                        return -ETIMEDOUT;
                if (now_seconds() >= it->next_reconcile) {
                        r = ac_reconcile(it);
                        if (r < 0)
                                return r;
                        continue;
                }
                r = ac_absorb_event(it, MIN(it->deadline, it->next_reconcile));
                if (r < 0 && r != -ETIMEDOUT)
                        return r;
        }
}

int futured_as_completed_take(futured_as_completed *it, futured_id *ids, size_t max) {
        size_t n = 0;
        int r;

        if (max == 0)
                return -EINVAL;
        r = futured_as_completed_next(it, &ids[n]);
        if (r <= 0)
                return r;
        n++;
        /* Whatever else has finished already: queued IDs, then events that are waiting. */
        while (n < max) {
                if (it->ready_head < it->ready_tail) {
                        ids[n++] = it->ready[it->ready_head++];
                        continue;
                }
                if (it->ready_tail == it->n || ac_absorb_event(it, 0) < 0)
                        break;
        }
        return (int) MIN(n, (size_t) INT_MAX);
}

void futured_as_completed_free(futured_as_completed *it) {
        if (!it)
                return;
        unsubscribe(it->c, completion_topics, ELEMENTSOF(completion_topics));
        free(it->ids);
        free(it->ready);
        free(it->yielded);
        free(it);
}
