/* waiter: see waiter.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "waiter.h"

#define IDENTITY_MAX 255

/* A client with deferred replies, known by its ROUTER routing id. */
struct Client {
        uint32_t n_deferred;
        uint8_t len;
        uint8_t identity[IDENTITY_MAX];
};

struct Waiter {
        Timer timer;
        Client *client;
        Waiter *prev, *next; /* in d->waiters */
        uint64_t req_id;
        WaitMode mode;
        bool envelope;
        uint32_t n_ids;
        uint32_t n_refs;
        uint32_t n_open;     /* referenced futures not finished yet */
        uint64_t *ids;
        WaitRef refs[];
};

static int client_cmp(const void *a, const void *b) {
        const Client *x = a, *y = b;

        if (x->len != y->len)
                return x->len < y->len ? -1 : 1;
        return memcmp(x->identity, y->identity, x->len);
}

static Client *client_get(Daemon *d, const uint8_t *identity, size_t len, bool create) {
        Client key, *c, **found;

        if (len > IDENTITY_MAX)
                return NULL;
        key.len = (uint8_t) len;
        memcpy(key.identity, identity, len);
        found = tfind(&key, &d->clients, client_cmp);
        if (found || !create)
                return found ? *found : NULL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        *c = key;
        c->n_deferred = 0;
        if (!tsearch(c, &d->clients, client_cmp)) {
                free(c);
                return NULL;
        }
        return c;
}

static void client_unref(Daemon *d, Client *c) {
        if (--c->n_deferred > 0)
                return;
        tdelete(c, &d->clients, client_cmp);
        free(c);
}

bool waiter_condition(Daemon *d, WaitMode mode, const uint64_t *ids, uint32_t n) {
        uint32_t finished = 0;

        for (uint32_t i = 0; i < n; i++) {
                FutureState s = daemon_state_of(d, ids[i]);
                if (!proto_state_final(s))
                        continue;
                finished++;
                if (mode == WAIT_FIRST_COMPLETED || mode == WAIT_RESULT)
                        return true;
                if (mode == WAIT_FIRST_EXCEPTION && s == STATE_FAILED)
                        return true;
        }
        return finished == n;
}

static void waiter_free(Daemon *d, Waiter *w) {
        for (uint32_t i = 0; i < w->n_refs; i++) {
                WaitRef *r = &w->refs[i];
                if (!r->future)
                        continue; /* its future finished and let go of it already */
                LIST_REMOVE(r->future->waiters, r, prev, next);
        }
        timer_stop(&d->timers, &w->timer);
        LIST_REMOVE(d->waiters, w, prev, next);
        d->n_deferred--;
        client_unref(d, w->client);
        free(w->ids);
        free(w);
}

static void pack_reply(Daemon *d, WaitMode mode, uint64_t req_id, const uint64_t *ids,
                       uint32_t n) {
        if (mode == WAIT_RESULT)
                request_pack_result_reply(d, req_id, ids[0]);
        else if (mode == WAIT_RESULTS)
                request_pack_results_reply(d, req_id, ids, n);
        else
                request_pack_wait_reply(d, req_id, ids, n);
}

static void fire(Daemon *d, Waiter *w) {
        pack_reply(d, w->mode, w->req_id, w->ids, w->n_ids);
        request_send(d, w->client->identity, w->client->len, w->envelope);
        waiter_free(d, w);
}

bool waiter_can_defer(Daemon *d, const uint8_t *identity, size_t identity_len) {
        Client *c = client_get(d, identity, identity_len, false);

        return !c || c->n_deferred < PROTO_MAX_DEFERRED;
}

int waiter_start(Daemon *d, const uint8_t *identity, size_t identity_len, bool envelope,
                 uint64_t req_id, WaitMode mode, const uint64_t *ids, uint32_t n,
                 int64_t timeout_ns) {
        uint32_t n_open = 0;
        Client *c;
        Waiter *w;

        if (timeout_ns == 0 || waiter_condition(d, mode, ids, n)) {
                pack_reply(d, mode, req_id, ids, n);
                request_send(d, identity, identity_len, envelope);
                return 0;
        }
        c = client_get(d, identity, identity_len, false);
        if (c && c->n_deferred >= PROTO_MAX_DEFERRED)
                return -EBUSY;

        for (uint32_t i = 0; i < n; i++)
                n_open += !proto_state_final(daemon_state_of(d, ids[i]));
        w = calloc(1, sizeof(*w) + n_open * sizeof(WaitRef));
        if (!w)
                return -ENOMEM;
        w->ids = malloc(n * sizeof(*ids));
        c = client_get(d, identity, identity_len, true);
        if (!w->ids || !c) {
                free(w->ids);
                free(w);
                return -ENOMEM;
        }
        memcpy(w->ids, ids, n * sizeof(*ids));
        w->n_ids = n;
        w->client = c;
        c->n_deferred++;
        w->req_id = req_id;
        w->mode = mode;
        w->envelope = envelope;
        w->timer.kind = TIMER_WAITER;
        for (uint32_t i = 0; i < n; i++) {
                Future *f = table_get(&d->table, ids[i]);
                if (!f || proto_state_final(f->state))
                        continue;
                WaitRef *r = &w->refs[w->n_refs++];
                r->waiter = w;
                r->future = f;
                LIST_PREPEND(f->waiters, r, prev, next);
        }
        w->n_open = w->n_refs;
        LIST_PREPEND(d->waiters, w, prev, next);
        d->n_deferred++;
        if (timeout_ns > 0 && timer_start(&d->timers, &w->timer, timer_now() + (uint64_t) timeout_ns) < 0) {
                waiter_free(d, w);
                return -ENOMEM;
        }
        return 0;
}

void waiter_future_finished(Daemon *d, Future *f) {
        WaitRef *r = f->waiters, *next;

        /* A finished future never changes again, so it lets go of all its refs now: a waiter that
         * does not fire yet (`all` with others open) must not keep a pointer into a future that a
         * release or the retention timer may free before the waiter fires. */
        f->waiters = NULL;
        for (; r; r = next) {
                Waiter *w = r->waiter;
                /* Take the next ref before firing frees w. A waiter holds one ref per future, so
                 * `next` is never w's. */
                next = r->next;
                r->future = NULL;
                r->prev = r->next = NULL;
                /* The condition did not hold when the waiter was made, and only this future
                 * changed, so the counter decides without a scan. */
                w->n_open--;
                if (w->mode == WAIT_ALL || w->mode == WAIT_RESULTS ? w->n_open == 0
                    : w->mode == WAIT_FIRST_EXCEPTION ? f->state == STATE_FAILED || w->n_open == 0
                                                      : true)
                        fire(d, w);
        }
}

void waiter_timeout(Daemon *d, Timer *t) {
        fire(d, container_of(t, Waiter, timer));
}

void waiter_free_all(Daemon *d) {
        while (d->waiters)
                waiter_free(d, d->waiters);
}
