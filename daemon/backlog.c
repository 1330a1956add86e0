/* backlog: see backlog.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <search.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "backlog.h"
#include "macro.h"

#define IDENTITY_MAX 255
#define SWEEP_MIN 1024

typedef struct Account {
        atomic_uint_fast64_t bytes; /* handed to ZeroMQ and not freed by it yet */
        atomic_uint refs;           /* the tree's, and one per message in flight */
        uint8_t len;
        uint8_t identity[IDENTITY_MAX];
} Account;

/* A reply handed to ZeroMQ: the message's data is `data`, the block the free function's hint. */
typedef struct Block {
        Account *account;
        size_t len;
        uint8_t data[];
} Block;

static int account_cmp(const void *a, const void *b) {
        const Account *x = a, *y = b;

        if (x->len != y->len)
                return x->len < y->len ? -1 : 1;
        return memcmp(x->identity, y->identity, x->len);
}

static void account_unref(Account *a) {
        if (atomic_fetch_sub(&a->refs, 1) == 1)
                free(a);
}

/* libzmq's free function: runs on its I/O thread (or on the loop thread, for a message that was
 * never sent). */
static void block_free(void *data, void *hint) {
        Block *bl = hint;

        atomic_fetch_sub(&bl->account->bytes, bl->len);
        account_unref(bl->account);
        free(bl);
}

void backlog_init(Backlog *b, uint64_t max_bytes) {
        *b = (Backlog){ .max_bytes = max_bytes, .sweep_at = SWEEP_MIN };
}

static void unref_node(void *node) {
        Account *a = node;

        account_unref(a);
}

void backlog_deinit(Backlog *b) {
        tdestroy(b->accounts, unref_node);
        b->accounts = NULL;
        b->n_accounts = 0;
}

typedef struct Sweep {
        Account **idle;
        size_t n;
} Sweep;

static void collect_idle(const void *node, VISIT which, void *userdata) {
        Sweep *s = userdata;
        Account *a = *(Account *const *) node;

        if ((which == postorder || which == leaf) && atomic_load(&a->bytes) == 0)
                s->idle[s->n++] = a;
}

/* Drops the accounts with nothing outstanding: the tree keeps the clients that are behind. */
static void sweep(Backlog *b) {
        Sweep s = { .idle = malloc(b->n_accounts * sizeof(*s.idle)) };

        if (!s.idle)
                return;
        twalk_r(b->accounts, collect_idle, &s);
        for (size_t i = 0; i < s.n; i++) {
                tdelete(s.idle[i], &b->accounts, account_cmp);
                b->n_accounts--;
                unref_node(s.idle[i]);
        }
        free(s.idle);
        b->sweep_at = MAX(SWEEP_MIN, 2 * b->n_accounts);
}

static Account *account_get(Backlog *b, const uint8_t *identity, size_t identity_len,
                            bool create) {
        Account key, *a, **found;

        if (identity_len > IDENTITY_MAX)
                return NULL;
        key.len = (uint8_t) identity_len;
        memcpy(key.identity, identity, identity_len);
        found = tfind(&key, &b->accounts, account_cmp);
        if (found || !create)
                return found ? *found : NULL;
        if (b->n_accounts >= b->sweep_at)
                sweep(b);
        a = calloc(1, sizeof(*a));
        if (!a)
                return NULL;
        atomic_init(&a->bytes, 0);
        atomic_init(&a->refs, 1);
        a->len = key.len;
        memcpy(a->identity, key.identity, key.len);
        if (!tsearch(a, &b->accounts, account_cmp)) {
                free(a);
                return NULL;
        }
        b->n_accounts++;
        return a;
}

uint64_t backlog_bytes(Backlog *b, const uint8_t *identity, size_t identity_len) {
        Account *a = account_get(b, identity, identity_len, false);

        return a ? atomic_load(&a->bytes) : 0;
}

bool backlog_admit(Backlog *b, const uint8_t *identity, size_t identity_len, size_t len) {
        uint64_t queued = backlog_bytes(b, identity, identity_len);

        if (b->max_bytes == 0 || queued == 0 || queued + len <= b->max_bytes)
                return true;
        b->n_refused++;
        return false;
}

int backlog_send(Backlog *b, void *router, const uint8_t *identity, size_t identity_len,
                 const void *data, size_t len) {
        Account *a = account_get(b, identity, identity_len, true);
        Block *bl;
        zmq_msg_t m;

        if (!a)
                return -ENOMEM;
        bl = malloc(sizeof(*bl) + len);
        if (!bl)
                return -ENOMEM;
        *bl = (Block){ .account = a, .len = len };
        memcpy(bl->data, data, len);
        atomic_fetch_add(&a->refs, 1);
        atomic_fetch_add(&a->bytes, len);
        if (zmq_msg_init_data(&m, bl->data, len, block_free, bl) < 0) {
                atomic_fetch_sub(&a->bytes, len);
                account_unref(a);
                free(bl);
                return -ENOMEM;
        }
        if (zmq_msg_send(&m, router, ZMQ_DONTWAIT) < 0) {
                int r = -zmq_errno();
                zmq_msg_close(&m); /* calls block_free() */
                return r;
        }
        return 0;
}
