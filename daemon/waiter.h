/* waiter: the books of deferred replies. A `wait`, `result` or `results` request whose condition
 * does not hold yet becomes a Waiter: it hangs a WaitRef on every unfinished future it waits for,
 * and optionally a timer. When a future finishes, waiter_future_finished() walks that future's
 * WaitRefs and moves each waiter whose condition now holds to the set's due list; when its timer
 * fires first, the waiter moves there too, to answer with what it has. The waiter never sends:
 * its owner takes the due waiters (waiter_take_due), packs and sends their replies, and frees
 * them (dbus-broker's reply slots keep books the same way).
 *
 * Each client may have at most PROTO_MAX_DEFERRED waiters, each principal (all its clients
 * together: principal.h) at most the set's `principal_quota`, and the set as a whole at most
 * `max_deferred` waiters referencing at most `max_ids` IDs (0: no limit). A client is known by its
 * routing id and, when the daemon told (Peer.conn), by its connection: when the connection closes
 * the daemon calls waiter_drop_connection() and the client's waiters are freed at once, rather
 * than when their futures end. Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "future.h"
#include "reply.h"
#include "table.h"
#include "timer.h"

typedef enum WaitMode {
        WAIT_ALL,
        WAIT_FIRST_COMPLETED,
        WAIT_FIRST_EXCEPTION,
        WAIT_RESULT,  /* the `result` operation: one ID */
        WAIT_RESULTS, /* `results`, and `submit` with reply "results": all, with their outcomes */
} WaitMode;

/* waiter_start()'s expected outcomes besides 0 (deferred). */
enum {
        WAITER_READY = 1, /* the condition holds already (or the timeout is 0): reply now */
        WAITER_QUOTA,     /* the client has PROTO_MAX_DEFERRED deferred replies already */
        WAITER_PRINCIPAL_QUOTA, /* its principal has `principal_quota` of them already */
        WAITER_FULL,      /* the set holds max_deferred waiters, or max_ids IDs, already */
};

typedef struct Waiter Waiter;
typedef struct WaiterClient WaiterClient;
typedef struct WaiterPrincipal WaiterPrincipal;
typedef struct WaiterSet WaiterSet;

struct WaitRef {
        Waiter *waiter;
        Future *future;
        WaitRef *prev, *next;
};

struct Waiter {
        Timer timer;          /* reserved only when the waiter has a timeout */
        WaiterSet *set;
        WaiterClient *client;
        WaiterPrincipal *principal;
        Waiter *prev, *next;  /* in set->waiting, or set->due once it fired */
        Waiter *client_prev, *client_next; /* the client's waiters */
        uint64_t req_id;
        WaitMode mode;
        bool envelope;
        bool due;
        uint32_t n_ids;
        uint32_t n_refs;
        uint32_t n_open;      /* referenced futures not finished yet */
        uint64_t *ids;
        WaitRef refs[];
};

struct WaiterSet {
        const Table *table;   /* borrowed: where states are read */
        TimerHeap *timers;    /* borrowed */
        void *clients;        /* tsearch() tree of WaiterClient*, those with deferred replies */
        void *by_conn;        /* ... of those whose connection is known, by connection */
        void *principals;     /* tsearch() tree of WaiterPrincipal*, those with deferred replies */
        uint32_t principal_quota; /* deferred replies per principal; 0: no limit */
        Waiter *waiting;      /* doubly linked */
        Waiter *due, *due_tail; /* fired, oldest first, until taken */
        uint64_t n_deferred;  /* waiting and due */
        uint64_t n_ids;       /* the IDs they reference */
        uint64_t max_deferred, max_ids; /* the global limits; 0: none */
};

/* `table` and `timers` are borrowed for the life of the set. */
void waiter_set_init(WaiterSet *s, const Table *table, TimerHeap *timers);

/* Frees every waiter without answering (shutdown). */
void waiter_set_deinit(WaiterSet *s);

/* Defers the reply to a wait/result/results request for `ids` (borrowed; unique) from `peer`
 * (copied), unless its condition holds already or `timeout_ns` is 0. `timeout_ns` < 0: no
 * timeout. Returns 0 (deferred: the reply comes through waiter_take_due()), WAITER_READY (the
 * caller replies now; nothing was kept), WAITER_QUOTA, WAITER_PRINCIPAL_QUOTA or WAITER_FULL
 * (nothing was kept), or -ENOMEM. */
int waiter_start(WaiterSet *s, const Peer *peer, uint64_t req_id, WaitMode mode,
                 const uint64_t *ids, uint32_t n, int64_t timeout_ns);

/* Whether the client `peer` may have one more deferred reply on `n` IDs: 0, WAITER_QUOTA,
 * WAITER_PRINCIPAL_QUOTA or WAITER_FULL. */
int waiter_can_defer(WaiterSet *s, const Peer *peer, uint32_t n);

/* The connection `conn` (0: every known connection) closed: frees the waiters of its client
 * without answering. Returns the number of IDs they referenced. */
uint64_t waiter_drop_connection(WaiterSet *s, uint64_t conn);

/* The waiters of `from` wait for `to` instead (`from`'s ID becomes `to`'s in their IDs): a
 * job whose idempotency key another job had already (cluster mode). Those it satisfies
 * (`to` finished) move to the due list. */
void waiter_retarget(WaiterSet *s, Future *from, Future *to);

/* `f` just finished: moves the waiters it satisfies to the due list. */
void waiter_future_finished(WaiterSet *s, Future *f);

/* Takes the oldest due waiter off the due list, or NULL. The caller answers it (waiter_peer()
 * tells where) and then frees it with waiter_free(). */
Waiter *waiter_take_due(WaiterSet *s);

/* Where `w`'s reply goes; borrowed from `w`. */
Peer waiter_peer(const Waiter *w);

/* Frees `w` (waiting, or taken from the due list). */
void waiter_free(WaiterSet *s, Waiter *w);

/* True if the wait condition of `mode` holds for these futures (by their current states). */
bool waiter_condition(const Table *t, WaitMode mode, const uint64_t *ids, uint32_t n);
