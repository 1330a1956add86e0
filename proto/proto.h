/* proto: the vocabulary of the futured wire protocol (docs/PROTOCOL.md) shared by the daemon, the
 * worker and the client library: the version, the limits, the future states, the error codes, and
 * small checked readers for msgpack objects. Pure functions, no state: any thread. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_MAX_MESSAGE (1u << 20)       /* request frames over this get `too_large` */
/* ZMQ_MAXMSGSIZE: ZeroMQ closes the connection of a frame over this as soon as its header
 * arrives, before it allocates anything; frames between the two limits get `too_large`. */
#define PROTO_HARD_MAX_MESSAGE (PROTO_MAX_MESSAGE + (64u << 10))
#define PROTO_DEFAULT_MAX_QUEUED 256u      /* ZMQ_RCVHWM: requests queued per connection */
#define PROTO_MAX_BATCH 10000u
#define PROTO_MAX_IDS 10000u
#define PROTO_MAX_PENDING 1000000u
#define PROTO_MAX_DEFERRED 1000u
#define PROTO_DEFAULT_MAX_DEFERRED_TOTAL 100000u     /* deferred replies, all clients */
#define PROTO_DEFAULT_MAX_DEFERRED_IDS 2000000u      /* ... and the IDs they wait on */
#define PROTO_DEFAULT_MAX_RETAINED 1000000u            /* finished futures kept */
#define PROTO_DEFAULT_MAX_RETAINED_BYTES (256u << 20)  /* ... and the bytes of their outcomes */
#define PROTO_MAX_GROUP 64u
#define PROTO_MAX_TOKEN 64u
#define PROTO_MAX_KEY 128u                  /* idempotency_key, bytes */
#define PROTO_MAX_LIST 10000u
#define PROTO_MAX_PRIORITY 1000
#define PROTO_MAX_RETRIES 100u
#define PROTO_MAX_DEPTH 32u           /* msgpack containers nested deeper are bad_message */
#define PROTO_MAX_ARGS 32u            /* entries in a job's `args` map */
#define PROTO_MAX_QUOTE 64u           /* bytes of client text an error message quotes */

typedef enum FutureState {
        STATE_PENDING,
        STATE_RUNNING,
        STATE_DONE,
        STATE_FAILED,
        STATE_CANCELLED,
        STATE_EXPIRED,
        STATE_UNKNOWN,
        _STATE_MAX,
} FutureState;

/* Returns the protocol name of `s` ("pending", ...), a static string. */
const char *proto_state_name(FutureState s);
/* Parses a state name of `len` bytes; returns the state or -EINVAL. */
int proto_state_from_name(const char *name, size_t len);
/* True for the states a future can never leave. */
static inline bool proto_state_final(FutureState s) {
        return s >= STATE_DONE;
}

/* Error codes of replies, as they appear in `error.code`. */
#define PROTO_E_BAD_MESSAGE "bad_message"
#define PROTO_E_BAD_REQUEST "bad_request"
#define PROTO_E_BAD_VERSION "bad_version"
#define PROTO_E_UNKNOWN_OP "unknown_op"
#define PROTO_E_UNKNOWN_FIELD "unknown_field"
#define PROTO_E_UNKNOWN_KIND "unknown_kind"
#define PROTO_E_BAD_ARGS "bad_args"
#define PROTO_E_BAD_URL "bad_url"
#define PROTO_E_TOO_LARGE "too_large"
#define PROTO_E_TOO_MANY "too_many"
#define PROTO_E_QUEUE_FULL "queue_full"
#define PROTO_E_TOO_MANY_DEFERRED "too_many_deferred"
#define PROTO_E_NOT_DONE "not_done"
#define PROTO_E_SHUTTING_DOWN "shutting_down"
#define PROTO_E_OUT_OF_MEMORY "out_of_memory"
#define PROTO_E_STORE_FULL "store_full"
#define PROTO_E_QUOTA_EXCEEDED "quota_exceeded"
#define PROTO_E_STORE_UNAVAILABLE "store_unavailable"
#define PROTO_E_RETAINED_FULL "retained_full"
#define PROTO_E_REPLY_BACKLOG "reply_backlog"

/* Failure codes of jobs, as they appear in `failure.code`. */
#define PROTO_F_TIMEOUT "timeout"
#define PROTO_F_WORKER_DIED "worker_died"
#define PROTO_F_SHUTDOWN "shutdown"
#define PROTO_F_INTERNAL "internal"
#define PROTO_F_CANCELLED "cancelled"
#define PROTO_F_HTTP_ERROR "http_error"
#define PROTO_F_CONNECTION "connection"
#define PROTO_F_TOO_LARGE "too_large"
#define PROTO_F_TOO_MANY_REDIRECTS "too_many_redirects"
#define PROTO_F_BAD_URL "bad_url"
#define PROTO_F_IO "io"
#define PROTO_F_INTERRUPTED "interrupted"
#define PROTO_F_STORE_FULL "store_full"
#define PROTO_F_DOWNLOAD_DENIED "download_denied"
#define PROTO_F_DOWNLOAD_QUOTA "download_quota"
#define PROTO_F_STORE_UNAVAILABLE "store_unavailable"

/* A request-level error: a static code, an optional field name (static or borrowed from the
 * request, valid while the request is) and a message. `index` is -1 unless one job of a batch is
 * at fault. */
typedef struct ProtoError {
        const char *code;
        const char *field;
        int64_t index;
        uint64_t retry_after_ms;             /* a hint to try again after this long; 0: none */
        char field_buf[PROTO_MAX_QUOTE + 1]; /* holds a field name copied out of a request */
        char message[200];
} ProtoError;

/* Fills `e` and returns -EINVAL, so that decoders can `return proto_error(e, ...)`. The message
 * is always valid UTF-8, since replies carry it as a str: a formatted message cut short by the
 * buffer is cut back to a character boundary, and any byte that is not part of valid UTF-8 (a
 * caller that quoted unchecked client text: a bug) becomes '?'. */
int proto_error(ProtoError *e, const char *code, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Returns the value stored under `key` in the msgpack map `map`, or NULL if `map` is not a map or
 * has no such key. The result borrows from `map`. */
const msgpack_object *proto_map_get(const msgpack_object *map, const char *key);

/* True if `o` is a str equal to the NUL-terminated `s`. */
bool proto_str_eq(const msgpack_object *o, const char *s);

/* Checked conversions; each returns 0 and sets *ret, or -EINVAL when `o` has another type or is
 * out of range. Numbers accept integers and floats. */
int proto_get_uint(const msgpack_object *o, uint64_t *ret);
int proto_get_int(const msgpack_object *o, int64_t *ret);
int proto_get_number(const msgpack_object *o, double *ret);
int proto_get_bool(const msgpack_object *o, bool *ret);

/* Copies a str object into a new NUL-terminated string (caller frees), or returns NULL when `o`
 * is not a str, is longer than `max`, or holds a NUL byte. */
char *proto_strdup(const msgpack_object *o, size_t max);

/* Checks that every key of the map `map` is one of the NULL-terminated `allowed` names (at most
 * 32 of them), each at most once; on a stray key returns -EINVAL and fills `e` with
 * `unknown_field` (or `bad_request` for a key that is not text, and for a key given twice). */
int proto_check_fields(const msgpack_object *map, const char *const *allowed, ProtoError *e);

/* The checks that run on untrusted msgpack bytes before msgpack_unpack_next() sees them.
 *
 * msgpack-c allocates a container's declared length before it reads the elements, so a 5-byte
 * frame declaring an array of 2^32 elements asks for 64+ GiB. proto_msgpack_check() walks one
 * value at the start of `buf` without allocating and refuses it (-EBADMSG) when it is cut short,
 * holds the never-used byte 0xc1, declares a str, bin or ext longer than the bytes left, or
 * declares containers whose elements, counted together with every element still owed by the
 * enclosing containers, outnumber the bytes left (each element needs at least one byte); and
 * (-ELOOP) when containers nest deeper than `max_depth`. Only then is the value safe to decode:
 * msgpack-c then allocates at most one object per byte of input. On success *ret_end (may be
 * NULL) is the offset just past the value: a frame is exactly one value when it equals `len`.
 * Returns 0, -EBADMSG or -ELOOP. Pure: any thread. */
int proto_msgpack_check(const void *buf, size_t len, unsigned max_depth, size_t *ret_end);

/* Looks for the uint stored under the str key `key` in the map that starts `buf`, reading at most
 * the first `len` bytes (callers pass a small prefix of a frame they will not decode). Allocates
 * nothing. Returns 0 and sets *ret, or -ENOENT when the bytes are not such a map or the key is not
 * found (or not a uint) within them. */
int proto_msgpack_peek_uint(const void *buf, size_t len, const char *key, uint64_t *ret);

/* UTF-8 (RFC 3629): true if the `len` bytes at `s` are valid UTF-8: no stray continuation byte,
 * no truncated sequence, no overlong form, no surrogate, nothing above U+10FFFF. NUL is valid
 * UTF-8; callers that cannot carry it refuse it themselves. The one validator of the project. */
bool proto_utf8_valid(const char *s, size_t len);

/* The length of the longest prefix of the valid UTF-8 text `s` (`len` bytes) that is at most
 * `max` bytes and ends on a character boundary: how much of client text a message may quote. */
size_t proto_utf8_prefix(const char *s, size_t len, size_t max);

/* Makes the NUL-terminated text that vsnprintf(buf, size, ...) just wrote (returning `n`) valid
 * UTF-8: when it was cut short, a character the cut split is dropped; any other byte that is not
 * part of a valid character becomes '?'. For messages that quote text from outside (a client, an
 * HTTP server) and go out as a msgpack str. */
void proto_utf8_repair(char *buf, size_t size, int n);

/* True if `o` is a str holding valid UTF-8: "text" in docs/PROTOCOL.md. */
bool proto_is_text(const msgpack_object *o);

/* Returns a malloc'd copy of the `sbuf`'s bytes, exactly sized, and destroys `sbuf`; NULL on
 * ENOMEM (sbuf destroyed all the same). msgpack buffers grow from 8 KiB: what is kept for long
 * (a retained result) must not keep that slack. */
uint8_t *proto_sbuffer_take(msgpack_sbuffer *sbuf);

/* A msgpack output buffer that starts in its own `small` array and moves to the heap only when it
 * outgrows it, so a typical reply or event costs no allocation. Each user owns one (nothing shares
 * a buffer). Pack into it with a packer from proto_buf_packer(). */
typedef struct ProtoBuf {
        char *data;   /* `small` or a malloc'ed block */
        size_t size, cap;
        bool failed;  /* a write ran out of memory: the content is incomplete */
        char small[480];
} ProtoBuf;

static inline void proto_buf_init(ProtoBuf *b) {
        b->data = b->small;
        b->size = 0;
        b->cap = sizeof(b->small);
        b->failed = false;
}

/* Frees the heap block, if any, and empties the buffer. */
void proto_buf_deinit(ProtoBuf *b);

/* Empties the buffer, keeping its memory. */
static inline void proto_buf_reset(ProtoBuf *b) {
        b->size = 0;
        b->failed = false;
}

/* The msgpack write callback (`data` is the ProtoBuf). */
int proto_buf_write(void *data, const char *buf, size_t len);

static inline void proto_buf_packer(ProtoBuf *b, msgpack_packer *pk) {
        msgpack_packer_init(pk, b, proto_buf_write);
}

/* A malloc'ed copy of exactly the content (at least 1 byte allocated), or NULL on ENOMEM. */
uint8_t *proto_buf_dup(const ProtoBuf *b);

/* Packers that take C strings. */
void proto_pack_str(msgpack_packer *pk, const char *s);
void proto_pack_strn(msgpack_packer *pk, const char *s, size_t len);

/* The endpoint futured listens on by default and clients connect to by default:
 * ipc://$XDG_RUNTIME_DIR/futured/futured.sock for a user with a runtime directory, else
 * ipc:///run/futured/futured.sock. Returns a new string (caller frees) or NULL on ENOMEM. */
char *proto_default_endpoint(void);

/* Where a client looks when told nothing: the per-user socket of proto_default_endpoint() if it
 * exists, else the system service's /run/futured/futured.sock (a user in group futured with
 * XDG_RUNTIME_DIR set reaches the system service). Returns a malloc'ed string or NULL. */
char *proto_client_endpoint(void);
