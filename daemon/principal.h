/* principal: who submitted a job, as the daemon tells clients apart for quotas and fair share
 * (docs/SECURITY.md). On ipc:// it is the peer's uid, which the kernel vouches for (SO_PEERCRED,
 * read by libzmq when the connection is accepted: the "Peer-Address" property of each message
 * ends ":UID:GID:PID"); on tcp:// it is the client's CURVE public key, which the ZAP handler
 * (zap.h) gives as the "User-Id" of each message. Names: "uid:1000", "key:<40 Z85 chars>";
 * "unknown" for a message with neither (inproc) and for jobs of a store older than principals.
 *
 * A Principal record lives in the scheduler's table (scheduler.h) while a future or a transfer
 * refers to it; its ready queues are the scheduler's, its counters the executor's. Loop thread
 * only, except `download_bytes`, which the transfer thread moves. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "heap.h"
#include "kind.h"
#include "proto.h"

/* "key:" and 40 characters, and the NUL. */
#define PRINCIPAL_MAX_NAME 48
#define PRINCIPAL_UNKNOWN "unknown"

/* One lane per pool, and the inline lane (scheduler.h: SchedLane). */
#define PRINCIPAL_LANES (_POOL_MAX + 1)

typedef struct Principal {
        char *name;
        uint32_t refs;               /* futures, and transfers in the pool, that refer to it */
        /* The scheduler's: */
        Heap ready[PRINCIPAL_LANES]; /* its pending futures, by priority then ID */
        uint32_t lane_pos[PRINCIPAL_LANES]; /* slot in the lane's heap of principals + 1 */
        uint64_t turn[PRINCIPAL_LANES]; /* when it last had a job started in that lane */
        uint32_t running;            /* popped and not yet stopped */
        bool blocked;                /* at its running quota: out of every lane's heap */
        /* The executor's: its futures by state (expired ones leave), for the quotas. */
        uint32_t n_state[_STATE_MAX];
        uint32_t deferred;           /* deferred replies of its clients (request.c) */
        /* Body bytes its running downloads hold: the transfer thread moves it (download.c, its
         * quota), the loop only reads it. */
        _Atomic uint64_t download_bytes;
} Principal;

/* Writes the principal of the request message `msg` (a zmq_msg_t *, its last frame) into `buf`
 * (PRINCIPAL_MAX_NAME bytes). */
void principal_of_message(void *msg, char buf[PRINCIPAL_MAX_NAME]);

/* Unfinished futures (pending and running) of `p`. */
static inline uint32_t principal_unfinished(const Principal *p) {
        return p->n_state[STATE_PENDING] + p->n_state[STATE_RUNNING];
}

/* Finished futures of `p` still retained. */
static inline uint32_t principal_retained(const Principal *p) {
        return p->n_state[STATE_DONE] + p->n_state[STATE_FAILED] + p->n_state[STATE_CANCELLED];
}
