/* reply: packing replies (docs/PROTOCOL.md) and sending them on the ROUTER socket. Each Reply
 * owns its buffer, so packing one reply never disturbs another that is being packed, and a
 * reply is sent whole or not at all.
 *
 * The packers of `wait`, `result` and `results` read the futures' states and outcomes from the
 * table they are given; they change nothing. Loop thread only. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backlog.h"
#include "proto.h"
#include "table.h"

/* Where a reply goes: the client's ROUTER routing id, and whether it sent the empty delimiter
 * frame of a REQ socket. */
typedef struct Peer {
        const uint8_t *identity; /* borrowed */
        size_t identity_len;
        bool envelope;
        const char *principal;   /* who sent it (principal.h), borrowed; NULL: "unknown" */
        int fd;                  /* the connection's descriptor (ZMQ_SRCFD), or -1 */
        uint64_t conn;           /* the connection, once known (waiter.h): 0 unknown */
} Peer;

typedef struct Reply {
        ProtoBuf buf;
        msgpack_packer pk;
        bool has_id;     /* of the reply begun last, for the out-of-memory fallback */
        uint64_t req_id;
} Reply;

void reply_init(Reply *r);
void reply_deinit(Reply *r);

/* Starts a reply map: v, id (nil when !has_id), ok, then `n_fields` more that the caller packs
 * into r->pk. */
void reply_begin(Reply *r, bool has_id, uint64_t req_id, bool ok, uint32_t n_fields);

/* Packs a whole error reply from `e`. */
void reply_pack_error(Reply *r, bool has_id, uint64_t req_id, const ProtoError *e);

/* The reply to `wait`: the done and the not-done sets of `ids` (borrowed). */
void reply_pack_wait(Reply *r, const Table *t, uint64_t req_id, const uint64_t *ids, uint32_t n);

/* The reply to `result`: the outcome of `id`, or the error `not_done`. */
void reply_pack_result(Reply *r, const Table *t, uint64_t req_id, uint64_t id);

/* The reply to `results` (and to `submit` with reply "results"): `ids`, and `results` with each
 * future's id, state and, when finished, its result or failure. */
void reply_pack_results(Reply *r, const Table *t, uint64_t req_id, const uint64_t *ids,
                        uint32_t n);

/* Sends the packed reply to `to` on `router` (borrowed), its bytes counted in `backlog` (NULL:
 * not counted). A client that is gone loses its reply, nothing else; so does one whose reply could
 * not be packed for lack of memory (it then gets the out_of_memory error instead, if that can be
 * sent), and one with more than the backlog's bytes outstanding (reply_backlog instead). */
void reply_send(Reply *r, void *router, Backlog *backlog, const Peer *to);
