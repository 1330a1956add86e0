/* waiter: see waiter.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "macro.h"
#include "principal.h"
#include "waiter.h"

#define IDENTITY_MAX 255

/* A client with deferred replies, known by its ROUTER routing id. */
struct WaiterClient {
        uint32_t n_deferred;
        uint64_t conn;        /* 0: unknown (not in set->by_conn) */
        Waiter *waiters;      /* linked by client_prev/client_next */
        uint8_t len;
        uint8_t identity[IDENTITY_MAX];
};

/* A principal with deferred replies, known by its name (principal.h). */
struct WaiterPrincipal {
        uint32_t n_deferred;
        char name[PRINCIPAL_MAX_NAME];
};

static int principal_cmp(const void *a, const void *b) {
        return strcmp(((const WaiterPrincipal *) a)->name, ((const WaiterPrincipal *) b)->name);
}

static WaiterPrincipal *principal_get(WaiterSet *s, const Peer *peer, bool create) {
        WaiterPrincipal key = {}, *p, **found;

        snprintf(key.name, sizeof(key.name), "%s",
                 peer->principal ? peer->principal : PRINCIPAL_UNKNOWN);
        found = tfind(&key, &s->principals, principal_cmp);
        if (found || !create)
                return found ? *found : NULL;
        p = alloc_calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        *p = key;
        if (!tsearch(p, &s->principals, principal_cmp)) {
                free(p);
                return NULL;
        }
        return p;
}

static void principal_unref(WaiterSet *s, WaiterPrincipal *p) {
        if (--p->n_deferred > 0)
                return;
        tdelete(p, &s->principals, principal_cmp);
        free(p);
}

static int client_cmp(const void *a, const void *b) {
        const WaiterClient *x = a, *y = b;

        if (x->len != y->len)
                return x->len < y->len ? -1 : 1;
        return memcmp(x->identity, y->identity, x->len);
}

static WaiterClient *client_get(WaiterSet *s, const Peer *peer, bool create) {
        WaiterClient key, *c, **found;

        if (peer->identity_len > IDENTITY_MAX)
                return NULL;
        key.len = (uint8_t) peer->identity_len;
        memcpy(key.identity, peer->identity, peer->identity_len);
        found = tfind(&key, &s->clients, client_cmp);
        if (found || !create)
                return found ? *found : NULL;
        c = alloc_calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        *c = key;
        c->n_deferred = 0;
        c->conn = 0;
        c->waiters = NULL;
        if (!tsearch(c, &s->clients, client_cmp)) {
                free(c);
                return NULL;
        }
        return c;
}

static int conn_cmp(const void *a, const void *b) {
        const WaiterClient *x = a, *y = b;

        return x->conn < y->conn ? -1 : x->conn > y->conn;
}

/* Files `c` under connection `conn` (the latest a request of it came on). */
static void client_set_conn(WaiterSet *s, WaiterClient *c, uint64_t conn) {
        if (c->conn == conn)
                return;
        if (c->conn)
                tdelete(c, &s->by_conn, conn_cmp);
        c->conn = conn;
        /* Without memory for the node the client is only not freed early. */
        if (conn && !tsearch(c, &s->by_conn, conn_cmp))
                c->conn = 0;
}

static void client_unref(WaiterSet *s, WaiterClient *c) {
        if (--c->n_deferred > 0)
                return;
        client_set_conn(s, c, 0);
        tdelete(c, &s->clients, client_cmp);
        free(c);
}

void waiter_set_init(WaiterSet *s, const Table *table, TimerHeap *timers) {
        *s = (WaiterSet){ .table = table, .timers = timers };
}

bool waiter_condition(const Table *t, WaitMode mode, const uint64_t *ids, uint32_t n) {
        uint32_t finished = 0;

        for (uint32_t i = 0; i < n; i++) {
                FutureState st = table_state_of(t, ids[i]);
                if (!proto_state_final(st))
                        continue;
                finished++;
                if (mode == WAIT_FIRST_COMPLETED || mode == WAIT_RESULT)
                        return true;
                if (mode == WAIT_FIRST_EXCEPTION && st == STATE_FAILED)
                        return true;
        }
        return finished == n;
}

/* Lets go of the futures `w` still hangs on. */
static void drop_refs(Waiter *w) {
        for (uint32_t i = 0; i < w->n_refs; i++) {
                WaitRef *r = &w->refs[i];
                if (!r->future)
                        continue; /* its future finished and let go of it already */
                LIST_REMOVE(r->future->waiters, r, prev, next);
                r->future = NULL;
        }
}

void waiter_free(WaiterSet *s, Waiter *w) {
        drop_refs(w);
        timer_deinit(s->timers, &w->timer);
        if (w->due) {
                /* Still on the due list (shutdown): unlink it there. */
                if (w->prev)
                        w->prev->next = w->next;
                else if (s->due == w)
                        s->due = w->next;
                if (w->next)
                        w->next->prev = w->prev;
                else if (s->due_tail == w)
                        s->due_tail = w->prev;
        } else
                LIST_REMOVE(s->waiting, w, prev, next);
        s->n_deferred--;
        s->n_ids -= w->n_ids;
        LIST_REMOVE(w->client->waiters, w, client_prev, client_next);
        client_unref(s, w->client);
        principal_unref(s, w->principal);
        free(w->ids);
        free(w);
}

/* The condition of `w` holds, or its time is up: it goes to the due list. */
static void make_due(WaiterSet *s, Waiter *w) {
        drop_refs(w);
        timer_stop(s->timers, &w->timer);
        LIST_REMOVE(s->waiting, w, prev, next);
        w->due = true;
        w->prev = s->due_tail;
        w->next = NULL;
        if (s->due_tail)
                s->due_tail->next = w;
        else
                s->due = w;
        s->due_tail = w;
}

static void on_timeout(Timer *t, uint64_t now) {
        Waiter *w = container_of(t, Waiter, timer);

        make_due(w->set, w);
}

int waiter_can_defer(WaiterSet *s, const Peer *peer, uint32_t n) {
        WaiterClient *c = client_get(s, peer, false);
        WaiterPrincipal *p;

        if (c && c->n_deferred >= PROTO_MAX_DEFERRED)
                return WAITER_QUOTA;
        p = s->principal_quota ? principal_get(s, peer, false) : NULL;
        if (p && p->n_deferred >= s->principal_quota)
                return WAITER_PRINCIPAL_QUOTA;
        if ((s->max_deferred && s->n_deferred >= s->max_deferred) ||
            (s->max_ids && s->n_ids + n > s->max_ids))
                return WAITER_FULL;
        return 0;
}

/* Frees every waiter of `c`, and so `c`. */
static void drop_client(WaiterSet *s, WaiterClient *c) {
        bool last;

        do {
                last = c->n_deferred == 1;
                waiter_free(s, c->waiters);
        } while (!last);
}

uint64_t waiter_drop_connection(WaiterSet *s, uint64_t conn) {
        WaiterClient key = { .conn = conn }, **found;
        uint64_t n_ids = s->n_ids;

        if (conn == 0)
                /* Every client whose connection is known: a tree's root is a pointer to its
                 * node, whose first member is the item (tsearch(3)). */
                while (s->by_conn)
                        drop_client(s, *(WaiterClient **) s->by_conn);
        else if ((found = tfind(&key, &s->by_conn, conn_cmp)))
                drop_client(s, *found);
        return n_ids - s->n_ids;
}

int waiter_start(WaiterSet *s, const Peer *peer, uint64_t req_id, WaitMode mode,
                 const uint64_t *ids, uint32_t n, int64_t timeout_ns) {
        uint32_t n_open = 0;
        WaiterClient *c = NULL;
        WaiterPrincipal *p;
        Waiter *w;
        int refused;

        if (timeout_ns == 0 || waiter_condition(s->table, mode, ids, n))
                return WAITER_READY;
        if ((refused = waiter_can_defer(s, peer, n)) != 0)
                return refused;

        for (uint32_t i = 0; i < n; i++)
                n_open += !proto_state_final(table_state_of(s->table, ids[i]));
        w = alloc_calloc(1, sizeof(*w) + n_open * sizeof(WaitRef));
        if (!w)
                return -ENOMEM;
        w->ids = alloc_malloc(n * sizeof(*ids));
        if (!w->ids || (timeout_ns > 0 && timer_init(s->timers, &w->timer, on_timeout) < 0) ||
            !(c = client_get(s, peer, true)) || !(p = principal_get(s, peer, true))) {
                if (c && c->n_deferred == 0) { /* made just now: nothing refers to it */
                        tdelete(c, &s->clients, client_cmp);
                        free(c);
                }
                timer_deinit(s->timers, &w->timer);
                free(w->ids);
                free(w);
                return -ENOMEM;
        }
        memcpy(w->ids, ids, n * sizeof(*ids));
        w->set = s;
        w->n_ids = n;
        w->client = c;
        c->n_deferred++;
        w->principal = p;
        p->n_deferred++;
        client_set_conn(s, c, peer->conn);
        LIST_PREPEND(c->waiters, w, client_prev, client_next);
        s->n_ids += n;
        w->req_id = req_id;
        w->mode = mode;
        w->envelope = peer->envelope;
        for (uint32_t i = 0; i < n; i++) {
                Future *f = table_get(s->table, ids[i]);
                if (!f || proto_state_final(future_visible_state(f)))
                        continue;
                WaitRef *r = &w->refs[w->n_refs++];
                r->waiter = w;
                r->future = f;
                LIST_PREPEND(f->waiters, r, prev, next);
        }
        w->n_open = w->n_refs;
        LIST_PREPEND(s->waiting, w, prev, next);
        s->n_deferred++;
        if (timeout_ns > 0)
                timer_start(s->timers, &w->timer, timer_now() + (uint64_t) timeout_ns);
        return 0;
}

/* `w`'s ref on `f` (finished, or gone) is let go of: `w` becomes due when its condition holds
 * now. */
static void ref_done(WaiterSet *s, Waiter *w, const Future *f) {
        /* The condition did not hold when the waiter was made, and only this future
         * changed, so the counter decides without a scan. */
        w->n_open--;
        if (w->mode == WAIT_ALL || w->mode == WAIT_RESULTS ? w->n_open == 0
            : w->mode == WAIT_FIRST_EXCEPTION ? f->state == STATE_FAILED || w->n_open == 0
                                              : true)
                make_due(s, w);
}

void waiter_retarget(WaiterSet *s, Future *from, Future *to) {
        WaitRef *r = from->waiters, *next;

        from->waiters = NULL;
        for (; r; r = next) {
                Waiter *w = r->waiter;
                bool twice = false;
                next = r->next;
                for (uint32_t i = 0; i < w->n_ids; i++)
                        if (w->ids[i] == from->id)
                                w->ids[i] = to->id;
                for (uint32_t i = 0; i < w->n_refs; i++)
                        twice |= w->refs[i].future == to;
                r->prev = r->next = NULL;
                if (!twice && !proto_state_final(future_visible_state(to))) {
                        r->future = to;
                        LIST_PREPEND(to->waiters, r, prev, next);
                        continue;
                }
                /* Finished already, or waited for by another ref of `w`: one ref less. A
                 * waiter holds one ref per future, so `next` is never w's. */
                r->future = NULL;
                ref_done(s, w, to);
        }
}

void waiter_future_finished(WaiterSet *s, Future *f) {
        WaitRef *r = f->waiters, *next;

        /* A finished future never changes again, so it lets go of all its refs now: a waiter that
         * does not fire yet (`all` with others open) must not keep a pointer into a future that a
         * release or the retention timer may free before the waiter fires. */
        f->waiters = NULL;
        for (; r; r = next) {
                Waiter *w = r->waiter;
                /* Take the next ref before make_due() drops w's refs. A waiter holds one ref per
                 * future, so `next` is never w's. */
                next = r->next;
                r->future = NULL;
                r->prev = r->next = NULL;
                ref_done(s, w, f);
        }
}

Waiter *waiter_take_due(WaiterSet *s) {
        Waiter *w = s->due;

        if (!w)
                return NULL;
        s->due = w->next;
        if (s->due)
                s->due->prev = NULL;
        else
                s->due_tail = NULL;
        w->prev = w->next = NULL;
        w->due = false;
        /* Neither list holds it now: waiter_free() must not unlink it again. */
        LIST_PREPEND(s->waiting, w, prev, next);
        return w;
}

Peer waiter_peer(const Waiter *w) {
        return (Peer){ .identity = w->client->identity,
                       .identity_len = w->client->len,
                       .envelope = w->envelope };
}

void waiter_set_deinit(WaiterSet *s) {
        while (s->waiting)
                waiter_free(s, s->waiting);
        while (s->due)
                waiter_free(s, s->due);
}
