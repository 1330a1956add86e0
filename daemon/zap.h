/* zap: futured's ZAP handler (ZeroMQ's authentication protocol, RFC 27) and the allow list of
 * client public keys it admits.
 *
 * ZeroMQ asks the handler about every CURVE handshake on a network endpoint (endpoint.h sets the
 * ZAP domain there) through a REP socket on inproc://zeromq.zap.01 of the daemon's context. The
 * handler runs on the loop, not on a thread of its own: libzmq's I/O thread does not block while
 * it waits for the answer (the handshake just stays pending), the list is read and replaced on
 * the loop thread alone (SIGHUP), so it needs no lock, and one answer is a binary search. A busy
 * loop turn delays a handshake by that turn, never a request.
 *
 * An admitted client's User-Id is its Z85 public key: every message it sends carries it
 * (zmq_msg_gets "User-Id"), and principal.h makes its principal of it. Loop thread only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "keyfile.h"
#include "loop.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
/* An allow list of more keys is refused: it is read whole into memory. */
#define ZAP_MAX_KEYS 100000

typedef struct Zap {
        void *socket;     /* REP, bound to ZAP_ENDPOINT */
        Loop *loop;       /* borrowed */
        LoopFile file;    /* ZMQ_FD of `socket`, edge-triggered */
        char (*keys)[KEYFILE_KEY_LEN + 1]; /* sorted */
        size_t n_keys;
        uint64_t admitted, refused;
} Zap;

/* Reads the allow list `path` (NULL: admit no one) and binds the handler in `zctx`, on `loop`.
 * Returns 0 or -errno, having printed why. */
int zap_init(Zap *z, void *zctx, Loop *loop, const char *path);

/* Reads the allow list `path` again (SIGHUP); a list that cannot be read changes nothing.
 * Returns 0 or -errno, having logged why. */
int zap_reload(Zap *z, const char *path);

/* Whether the Z85 key `key` is on the allow list. */
bool zap_allowed(const Zap *z, const char *key);

/* Closes the socket (before the context is terminated). Accepts a zeroed Zap. */
void zap_deinit(Zap *z);
