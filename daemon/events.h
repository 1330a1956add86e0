/* events: the PUB socket, and the only code that sends on it. Every event is two frames, a topic
 * ("STATE/GROUP", "progress/GROUP", "probe/TOKEN") and a msgpack map (docs/PROTOCOL.md, Events).
 * A slow or absent subscriber never blocks the loop: sends are non-blocking and PUB drops at its
 * high-water mark. The socket is an XPUB (subscribers see a PUB): it also tells which topics
 * have subscribers, so that a node of a cluster reads other nodes' finished rows for its events
 * only while someone listens (cluster.c). Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "future.h"
#include "proto.h"

typedef struct Events {
        void *pub;    /* borrowed ZeroMQ XPUB socket */
        ProtoBuf buf; /* this module's own */
        uint64_t topics; /* subscribed by at least one subscriber */
} Events;

/* `pub` is borrowed for the life of `e`. */
void events_init(Events *e, void *pub);
void events_deinit(Events *e);

/* Reads the subscriptions that came (libzmq passes the first subscription to a topic and its
 * last unsubscription, also at a subscriber's disconnect). Returns whether any came. Cheap:
 * once per loop turn, and after the sends of a turn (they may take the edge of its ZMQ_FD). */
bool events_poll(Events *e);

/* Whether any subscriber subscribes to anything. */
bool events_subscribed(const Events *e);

/* Publishes the state change of `f` (its state as it is now). */
void events_state(Events *e, const Future *f);

/* Publishes the state `state` of job `id` as events_state() does, from its parts (`kind`,
 * `group`: "" for none; `outcome`: a failure's map, or NULL), borrowed: a job this node holds
 * no future of (cluster mode: a row another node finished). */
void events_job(Events *e, uint64_t id, FutureState state, const char *kind, const char *group,
                const uint8_t *outcome, size_t outcome_len);

/* Publishes the progress of the running `f`: `done` of `total` bytes (0: unknown). */
void events_progress(Events *e, const Future *f, uint64_t done, uint64_t total);

/* Publishes the empty probe event on topic "probe/TOKEN" (`token`: `len` bytes, borrowed, at most
 * PROTO_MAX_TOKEN). */
void events_probe(Events *e, const char *token, size_t len);
