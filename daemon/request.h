/* request: decodes client requests (docs/PROTOCOL.md), carries them out through the executor,
 * and answers: at once, or later through the waiter books, whose due replies it sends
 * (request_answer_due) once per loop turn. Every way a request can be malformed ends in an error
 * reply with a code; nothing a client sends changes state unless the whole request is valid.
 * Loop thread only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "executor.h"
#include "reply.h"

typedef struct HeldReply HeldReply;
typedef struct Parked Parked;

#define REQUEST_CONN_GONE UINT64_MAX

/* What a request handler may use; every pointer borrowed for the life of the daemon. */
typedef struct Requests {
        Executor *executor;
        Events *events;
        void *router;             /* the ROUTER socket replies go out on */
        Backlog *backlog;         /* the reply bytes per client; NULL: not counted */
        const char *events_endpoint; /* for `hello` */
        unsigned threads, transfers, processes;
        const char *store;        /* the store backend's name, for `hello` */
        uint64_t max_retained, max_retained_bytes; /* for `hello` and retained_full */
        uint64_t started_ns;      /* for `stats` uptime */
        /* Per-principal quotas, for hello and the quota_exceeded messages (0: none). */
        unsigned quota_pending, quota_running, quota_retained, quota_deferred;
        uint64_t quota_download_bytes;
        /* The connection a request came on, from its descriptor (Peer.fd), for the waiter books;
         * REQUEST_CONN_GONE when it is closed already. NULL: connections are not known. */
        uint64_t (*connection)(void *userdata, int fd);
        void *connection_data;
        /* Submit replies waiting for their store batch to be committed, oldest first. */
        HeldReply *held, *held_tail;
        /* Cluster mode: requests on IDs this node does not hold, waiting for their rows to be
         * read from the database, oldest first; handled again then. */
        Parked *parked, *parked_tail;
} Requests;

/* Frees the replies still held (shutdown: their batch was never committed). */
void request_deinit(Requests *rq);

/* Handles one request frame `body` (borrowed) from `from`. Replies at once or defers the reply. */
void request_handle(Requests *rq, const Peer *from, const uint8_t *body, size_t body_len);

/* Sends the replies of the deferred requests that came due (their futures finished, or their
 * time ran out), and the submit replies whose store batch is committed. */
void request_answer_due(Requests *rq);
