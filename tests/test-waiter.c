/* Unit test of the waiter books, with a real table and timer heap and nothing else: the three
 * wait modes become due exactly when their condition holds, `result` on the first finish, a
 * timeout makes a waiter due with what it has, a condition that holds already is answered at
 * once, the per-client quota holds, and a failed allocation keeps nothing. */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "table.h"
#include "test.h"
#include "waiter.h"

static const JobKind kind = { .name = "k", .pool = POOL_THREAD };

static Table table;
static TimerHeap timers;
static WaiterSet set;

static const Peer alice = { .identity = (const uint8_t *) "alice", .identity_len = 5 };
static const Peer bob = { .identity = (const uint8_t *) "bob", .identity_len = 3,
                          .envelope = true };

static const Peer carol = { .identity = (const uint8_t *) "carol", .identity_len = 5,
                            .principal = "uid:7" };

static uint64_t add_pending(void) {
        Future *f = NULL;

        REQUIRE(future_new(&f, &kind, NULL, 0) == 0);
        REQUIRE(table_add(&table, f) == 0);
        f->state = STATE_PENDING;
        return f->id;
}

/* What the executor does when a future finishes, as far as waiters see it. */
static void finish(uint64_t id, FutureState state) {
        Future *f = table_get(&table, id);

        f->state = state;
        waiter_future_finished(&set, f);
}

/* Takes the one due waiter, checks it is for `req_id` and frees it. */
static void expect_due(uint64_t req_id) {
        Waiter *w = waiter_take_due(&set);

        REQUIRE(w);
        CHECK(w->req_id == req_id);
        CHECK(waiter_take_due(&set) == NULL);
        waiter_free(&set, w);
}

int main(void) {
        uint64_t id[8];

        table_init(&table, 1);
        timer_heap_init(&timers);
        waiter_set_init(&set, &table, &timers);
        for (int i = 0; i < 8; i++)
                id[i] = add_pending();

        /* all: due only when both are finished. */
        REQUIRE(waiter_start(&set, &alice, 10, WAIT_ALL, (uint64_t[]){ id[0], id[1] }, 2, -1) == 0);
        CHECK(set.n_deferred == 1);
        finish(id[0], STATE_DONE);
        CHECK(waiter_take_due(&set) == NULL);
        finish(id[1], STATE_FAILED);
        expect_due(10);
        CHECK(set.n_deferred == 0);

        /* first_completed: the first finish, whatever its state. */
        REQUIRE(waiter_start(&set, &alice, 11, WAIT_FIRST_COMPLETED,
                             (uint64_t[]){ id[2], id[3] }, 2, -1) == 0);
        finish(id[3], STATE_CANCELLED);
        expect_due(11);

        /* first_exception: a done one is not enough, a failed one is. */
        REQUIRE(waiter_start(&set, &bob, 12, WAIT_FIRST_EXCEPTION,
                             (uint64_t[]){ id[2], id[4] }, 2, -1) == 0);
        finish(id[2], STATE_DONE);
        CHECK(waiter_take_due(&set) == NULL);
        finish(id[4], STATE_FAILED);
        {
                Waiter *w = waiter_take_due(&set);
                REQUIRE(w);
                Peer p = waiter_peer(w);
                CHECK(p.identity_len == 3 && memcmp(p.identity, "bob", 3) == 0 && p.envelope);
                CHECK(w->mode == WAIT_FIRST_EXCEPTION && w->n_ids == 2);
                waiter_free(&set, w);
        }

        /* A condition that holds already, or a zero timeout: answer now, keep nothing. */
        CHECK(waiter_start(&set, &alice, 13, WAIT_ALL, (uint64_t[]){ id[0], id[1] }, 2, -1) ==
              WAITER_READY);
        CHECK(waiter_start(&set, &alice, 14, WAIT_RESULT, &id[5], 1, 0) == WAITER_READY);
        CHECK(waiter_start(&set, &alice, 15, WAIT_RESULT, (uint64_t[]){ 999 }, 1, -1) ==
              WAITER_READY); /* unknown is final */
        CHECK(set.n_deferred == 0);

        /* result: one ID; the future may be released before the reply is packed. */
        REQUIRE(waiter_start(&set, &alice, 16, WAIT_RESULT, &id[5], 1, -1) == 0);
        finish(id[5], STATE_DONE);
        future_free(table_steal(&table, id[5]));
        expect_due(16);

        /* all, with one finished and released while the other is still open. */
        REQUIRE(waiter_start(&set, &alice, 17, WAIT_RESULTS, (uint64_t[]){ id[6], id[7] }, 2,
                             -1) == 0);
        finish(id[6], STATE_DONE);
        future_free(table_steal(&table, id[6]));
        CHECK(waiter_take_due(&set) == NULL);
        finish(id[7], STATE_DONE);
        expect_due(17);

        /* A timeout: the timer makes the waiter due with what it has. */
        uint64_t open = add_pending();
        REQUIRE(waiter_start(&set, &alice, 18, WAIT_ALL, &open, 1, 1000) == 0);
        CHECK(waiter_take_due(&set) == NULL);
        {
                Timer *t = timer_pop_due(&timers, UINT64_MAX);
                REQUIRE(t);
                t->fn(t, UINT64_MAX);
        }
        expect_due(18);
        CHECK(table_get(&table, open)->waiters == NULL); /* the waiter let go of the future */
        CHECK(timers.n_reserved == 0);

        /* The quota: PROTO_MAX_DEFERRED per client, others unaffected. */
        for (unsigned i = 0; i < PROTO_MAX_DEFERRED; i++)
                REQUIRE(waiter_start(&set, &alice, 100 + i, WAIT_ALL, &open, 1, -1) == 0);
        CHECK(waiter_can_defer(&set, &alice, 1) == WAITER_QUOTA &&
              waiter_can_defer(&set, &bob, 1) == 0);
        CHECK(waiter_start(&set, &alice, 99, WAIT_ALL, &open, 1, -1) == WAITER_QUOTA);
        CHECK(waiter_start(&set, &bob, 98, WAIT_ALL, &open, 1, 5000) == 0);
        CHECK(set.n_deferred == PROTO_MAX_DEFERRED + 1);

        /* Out of memory at each allocation in turn: -ENOMEM, and nothing kept. */
        for (long k = 0; k < 4; k++) {
                uint64_t before = set.n_deferred;
                uint32_t reserved = timers.n_reserved;
                int r;
                alloc_fail_after(k);
                r = waiter_start(&set, &bob, 97, WAIT_ALL, &open, 1, 5000);
                alloc_fail_after(-1);
                if (r == 0) {
                        CHECK(set.n_deferred == before + 1);
                        break;
                }
                CHECK(r == -ENOMEM);
                CHECK(set.n_deferred == before && timers.n_reserved == reserved);
        }

        /* Per principal: alice and bob have none ("unknown"), so they share one quota; carol is
         * another principal. */
        set.principal_quota = (uint32_t) set.n_deferred;
        CHECK(waiter_can_defer(&set, &bob, 1) == WAITER_PRINCIPAL_QUOTA);
        CHECK(waiter_start(&set, &bob, 96, WAIT_ALL, &open, 1, -1) == WAITER_PRINCIPAL_QUOTA);
        CHECK(waiter_start(&set, &carol, 95, WAIT_ALL, &open, 1, -1) == 0);
        set.principal_quota = 0;

        /* One finish makes every waiter on it due, oldest first. */
        finish(open, STATE_DONE);
        {
                unsigned n = 0;
                for (Waiter *w; (w = waiter_take_due(&set)); n++)
                        waiter_free(&set, w);
                CHECK(n == PROTO_MAX_DEFERRED + 3);
        }
        CHECK(set.n_deferred == 0 && set.clients == NULL && set.principals == NULL);
        CHECK(timers.n_reserved == 0);

        /* The global limits: waiters, then IDs; WAITER_FULL for any client. */
        open = add_pending();
        set.max_deferred = 3;
        set.max_ids = 4;
        {
                Peer erin = { .identity = (const uint8_t *) "erin", .identity_len = 5,
                               .conn = 7 };
                Peer dave = { .identity = (const uint8_t *) "dave", .identity_len = 4,
                              .conn = 8 };
                uint64_t two[2] = { open, id[0] };
                REQUIRE(waiter_start(&set, &erin, 1, WAIT_ALL, &open, 1, -1) == 0);
                REQUIRE(waiter_start(&set, &erin, 2, WAIT_ALL, &open, 1, 5000) == 0);
                CHECK(waiter_start(&set, &dave, 3, WAIT_ALL, two, 2, -1) == 0);
                CHECK(set.n_ids == 4);
                CHECK(waiter_start(&set, &dave, 4, WAIT_ALL, &open, 1, -1) == WAITER_FULL);
                set.max_deferred = 10;
                CHECK(waiter_start(&set, &dave, 5, WAIT_ALL, &open, 1, -1) == WAITER_FULL);
                set.max_ids = 10;
                CHECK(waiter_start(&set, &dave, 6, WAIT_ALL, &open, 1, -1) == 0);
                /* A closed connection frees its client's waiters at once, and only those. */
                CHECK(waiter_drop_connection(&set, 7) == 2);
                CHECK(set.n_deferred == 2 && set.n_ids == 3);
                CHECK(waiter_drop_connection(&set, 7) == 0);
                CHECK(timers.n_reserved == 0);
                CHECK(table_get(&table, open)->waiters != NULL);
                CHECK(waiter_drop_connection(&set, 0) == 3);
                CHECK(set.n_deferred == 0 && set.clients == NULL && set.by_conn == NULL);
                CHECK(table_get(&table, open)->waiters == NULL);
        }

        waiter_set_deinit(&set);
        table_deinit(&table);
        timer_heap_deinit(&timers);
        return test_end();
}
