/* libfutured: the C client of futured (protocol v1, docs/PROTOCOL.md).
 *
 * A `futured` handle is one connection: a ZeroMQ DEALER socket to the daemon and, once events are
 * used, a SUB socket to its events endpoint. Every call is synchronous: it sends one request and
 * waits for the reply that carries its request id (stale replies of earlier, timed-out calls are
 * dropped).
 *
 * Thread safety: a handle, and every object made from it (as_completed iterators), belongs to
 * one thread at a time, like the ZeroMQ sockets inside it. Distinct handles are independent and
 * may be used from different threads at once. futured_endpoint_default(), futured_state_name()
 * and futured_args_pack() touch no handle state and are safe from any thread.
 *
 * Errors: every call returns 0 (or a count) on success and a negative errno value on failure:
 *   -EHOSTUNREACH  the daemon did not answer (not running, wrong endpoint)
 *   -EACCES        futured_connect(): the ipc:// socket exists but this user may not open it
 *   -EPERM, -ENOKEY futured_connect_curve(): a client key file readable by others, or lacking
 *                  a key (docs/SECURITY.md has the format)
 *   -EPROTO        the daemon answered with an error reply; futured_error_code() and
 *                  futured_error_message() tell which (e.g. "bad_args", "too_many")
 *   -ETIMEDOUT     a wait ran out of time (wait, result, as_completed)
 *   -EINVAL, -ENOMEM, -EBADMSG (a reply that is not protocol v1)
 * Pointers passed in are borrowed for the duration of the call; memory handed out is the
 * caller's, freed as each function says. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t futured_id;
typedef struct futured futured;
typedef struct futured_as_completed futured_as_completed;

typedef enum futured_state {
        FUTURED_PENDING,
        FUTURED_RUNNING,
        FUTURED_DONE,
        FUTURED_FAILED,
        FUTURED_CANCELLED,
        FUTURED_EXPIRED,
        FUTURED_UNKNOWN,
} futured_state;

typedef enum futured_wait_mode {
        FUTURED_ALL_COMPLETED,
        FUTURED_FIRST_COMPLETED,
        FUTURED_FIRST_EXCEPTION,
} futured_wait_mode;

/* One job to submit. `args` is a msgpack-encoded map (see futured_args_pack()), or NULL for none. */
typedef struct futured_job {
        const char *kind;
        const void *args;
        size_t args_len;
        int priority;         /* -1000..1000, higher first */
        double timeout;       /* seconds the job may run; 0 = no limit */
        const char *group;    /* NULL = none */
        unsigned group_limit; /* 0 = unlimited */
        unsigned retries;     /* reruns after its worker process died */
        /* NULL, or up to 128 bytes: while a future submitted with the same key is retained, a
         * submit returns its ID instead of queueing the job again (also after a restart of a
         * durable daemon), so a submit whose reply was lost can be sent again safely. */
        const char *idempotency_key;
} futured_job;

/* How a future ended, as `result` reports it. */
typedef struct futured_outcome {
        futured_state state;
        void *result;          /* done: the result map, msgpack-encoded (owned; see _clear) */
        size_t result_len;
        char failure_code[32]; /* failed: e.g. "timeout", "worker_died", "http_error" */
        char failure_message[256];
        int signal;      /* worker_died: the signal, or 0 */
        int http_status; /* http_error: the status, or 0 */
} futured_outcome;

/* The endpoint used when none is given: $FUTURED_ENDPOINT if set, else the daemon's default.
 * Returns a new string (free() it) or NULL on ENOMEM. */
char *futured_endpoint_default(void);

/* Connects to `endpoint` (NULL: futured_endpoint_default()) and says hello. `timeout` is how long
 * to wait for the daemon to answer (seconds; <= 0: 5). Returns 0 and a handle in *ret, or
 * -EHOSTUNREACH when the daemon does not answer. */
int futured_connect(futured **ret, const char *endpoint, double timeout);

/* futured_connect() with CurveZMQ for a network endpoint (tcp://; ipc:// ignores the keys):
 * `server_key` is the daemon's public key, as its 40 Z85 characters or a key file holding it
 * (`futurectl keygen` writes PREFIX.pub); `client_key` is the client's key file (PREFIX.key,
 * mode 0600) whose public key must be on the daemon's allow list. Both NULL: no CURVE, as
 * futured_connect(); one alone: -EINVAL. futured_connect() itself takes them from
 * $FUTURED_SERVER_KEY and $FUTURED_CLIENT_KEY. A client the daemon does not admit gets no
 * answer: -EHOSTUNREACH after `timeout`. Since FUTURED_0.2. */
int futured_connect_curve(futured **ret, const char *endpoint, double timeout,
                          const char *server_key, const char *client_key);

/* Closes the handle; drops replies still in flight. Accepts NULL. */
void futured_free(futured *c);

/* The endpoint this handle is connected to, and the daemon's server string and pool sizes from
 * its hello; borrowed from the handle. */
const char *futured_endpoint(futured *c);
const char *futured_server(futured *c);
unsigned futured_processes(futured *c);
unsigned futured_threads(futured *c);

/* The code and message of the last error reply (-EPROTO), or of the last failure this library
 * detected; borrowed, valid until the next call on the handle. */
const char *futured_error_code(futured *c);
const char *futured_error_message(futured *c);

/* The protocol name of a state ("pending", ...). Static. */
const char *futured_state_name(futured_state s);

/* Builds a kind's args map from command-line style strings: "name=value" pairs, or bare values
 * taken in the order of the kind's parameters (from the daemon's hello), each converted to the
 * parameter's type. On success *ret is a msgpack map (free() it). Returns -EINVAL with the reason
 * in futured_error_message() on an unknown kind, an unknown name, or a value that does not parse. */
int futured_args_pack(futured *c, const char *kind, char *const *argv, size_t argc, void **ret,
                      size_t *ret_len);

/* Submits `n` jobs in one message (all or none); fills ids[0..n). */
int futured_submit(futured *c, const futured_job *jobs, size_t n, futured_id *ids);

/* Fills states[i] with the state of ids[i]; never blocks in the daemon. */
int futured_status(futured *c, const futured_id *ids, size_t n, futured_state *states);

/* Waits until `mode` holds for ids[0..n) or `timeout` seconds pass (< 0: forever). Sets done[i]
 * for each ID that is done. Returns the number of done IDs (a timeout is not an error). */
int futured_wait(futured *c, const futured_id *ids, size_t n, futured_wait_mode mode,
                 double timeout, bool *done);

/* Waits up to `timeout` seconds (< 0: forever) for `id` to finish and fills *out (clear it with
 * futured_outcome_clear()). Returns -ETIMEDOUT if it did not finish in time. */
int futured_result(futured *c, futured_id id, double timeout, futured_outcome *out);
void futured_outcome_clear(futured_outcome *o);

/* Waits up to `timeout` seconds (< 0: forever) for all of ids[0..n) to finish and fills outs[i]
 * for each (clear each with futured_outcome_clear()); a future still unfinished at the timeout
 * gets its state (pending or running) and nothing else. One request for the whole batch.
 * Returns the number of finished futures. */
int futured_results(futured *c, const futured_id *ids, size_t n, double timeout,
                    futured_outcome *outs);

/* Submits `n` jobs and waits for all of them in one round trip: fills ids[0..n) and outs[0..n)
 * (clear each). The classic `executor.submit(f).result()`, or `map` for a batch. */
int futured_run(futured *c, const futured_job *jobs, size_t n, futured_id *ids,
                futured_outcome *outs);

/* Cancels ids[0..n); cancelled[i] (may be NULL) tells which are now cancelled. Running work is
 * stopped. Returns the number cancelled. */
int futured_cancel(futured *c, const futured_id *ids, size_t n, bool *cancelled);

/* Drops the retained results of ids[0..n); released[i] (may be NULL) as for cancel. Returns the
 * number released. */
int futured_release(futured *c, const futured_id *ids, size_t n, bool *released);

/* Sends any request: `op` with the extra fields in the msgpack map `fields` (NULL: none), and
 * hands back the whole reply map in *reply (free() it). For stats, list and hello. */
int futured_call(futured *c, const char *op, const void *fields, size_t fields_len, void **reply,
                 size_t *reply_len);

/* Subscribes the handle's event socket to topics starting with `prefix` ("" for all), and makes
 * sure the subscription is live before returning, so no later event is missed. */
int futured_subscribe(futured *c, const char *prefix);

/* Receives the next event within `timeout` seconds (< 0: forever): its topic (NUL-terminated)
 * into topic[topic_size] and its msgpack body into *body (free() it). Returns -ETIMEDOUT when
 * none came. */
int futured_event_next(futured *c, double timeout, char *topic, size_t topic_size, void **body,
                       size_t *body_len);

/* An iterator over ids[0..n) that yields each ID once, as it finishes, in completion order (as
 * Python's as_completed). It subscribes to completion events before it asks for the states of
 * the IDs, so a completion between the two is never lost, and reconciles with `status` when
 * events are quiet, so a dropped event only delays a yield. `timeout` (< 0: none) bounds the
 * whole iteration. The handle's event socket is borrowed for the iterator's life. */
int futured_as_completed_new(futured *c, const futured_id *ids, size_t n, double timeout,
                             futured_as_completed **ret);
/* Returns 1 and the next finished ID in *id, 0 when every ID has been yielded, -ETIMEDOUT when
 * the timeout passed first. */
int futured_as_completed_next(futured_as_completed *it, futured_id *id);
/* Like futured_as_completed_next(), then also takes every further ID that has finished by now
 * (without waiting), up to `max` in all, into ids[0..): one `results` call can then fetch them
 * all. Returns how many (at least 1), 0 when every ID has been yielded, or -ETIMEDOUT. */
int futured_as_completed_take(futured_as_completed *it, futured_id *ids, size_t max);
void futured_as_completed_free(futured_as_completed *it);

#ifdef __cplusplus
}
#endif
