/* backlog: the reply bytes each client has not taken yet, and their bound.
 *
 * ZeroMQ's high-water mark counts messages, not bytes: a client that stops reading would let the
 * daemon queue any number of large replies for it. So every reply goes out as a zero-copy
 * message whose block names its client's Account: the bytes are added when the reply is handed
 * to ZeroMQ and taken off when libzmq frees the message (its I/O thread calls back once the
 * bytes are in the kernel's socket buffer, or when the connection is gone). Before a reply is
 * sent, the client's bytes outstanding are looked at: past `max_bytes` the reply is replaced by
 * the short `reply_backlog` error (a client that has nothing outstanding always gets its reply,
 * however large). So one client holds at most max_bytes + one reply, plus at most SNDHWM small
 * errors.
 *
 * Accounts live in a tree keyed by routing id, touched by the loop thread only; their byte
 * counters and reference counts are atomic, for libzmq's I/O thread. Idle accounts are swept
 * when the tree has doubled since the last sweep. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


#define BACKLOG_DEFAULT_MAX_BYTES (64u << 20)

typedef struct Backlog {
        void *accounts;     /* tsearch() tree of Account* */
        size_t n_accounts;
        size_t sweep_at;    /* sweep once n_accounts reaches this */
        uint64_t max_bytes; /* 0: no limit */
        uint64_t n_refused; /* replies replaced by reply_backlog */
} Backlog;

void backlog_init(Backlog *b, uint64_t max_bytes);

/* Call after the ZeroMQ context is terminated (no message of the accounts is left). */
void backlog_deinit(Backlog *b);

/* True if a reply of `len` bytes may go now to the client with routing id `identity`. */
bool backlog_admit(Backlog *b, const uint8_t *identity, size_t identity_len, size_t len);

/* Sends the last frame of a reply, `len` bytes of `data` (copied), on the ROUTER `router` (whose
 * earlier frames routed it to `identity`), counted for that client. Returns 0 or -errno
 * (nothing is counted then). */
int backlog_send(Backlog *b, void *router, const uint8_t *identity, size_t identity_len,
                 const void *data, size_t len);

/* The bytes queued for the client `identity` now. */
uint64_t backlog_bytes(Backlog *b, const uint8_t *identity, size_t identity_len);
