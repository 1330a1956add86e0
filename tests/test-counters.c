/* Unit test of the counters: the changes set_state() makes move the gauges of the right pool
 * (the inline lane apart from the thread pool), count submits and final states per kind, put
 * every run that ended (also a failed or cancelled one) in its kind's histogram but no future
 * that never ran, and count nothing as submitted or finished while the store is recovered;
 * without time_runs nothing is timed; and every kind of the daemon has room. */
#include <string.h>
#include <time.h>

#include "counters.h"
#include "test.h"

/* What set_state() does: the state, then the counters. */
static void change(Counters *c, Future *f, FutureState to, bool recovering) {
        FutureState from = f->state;

        f->state = to;
        counters_change(c, f, from, recovering);
}

static Future *mk(const char *kind) {
        Future *f = NULL;

        REQUIRE(future_new(&f, kind_find(kind, strlen(kind)), NULL, 0) == 0);
        REQUIRE(f->kind);
        return f;
}

int main(void) {
        const JobKind *const *all = kind_all();
        Counters c;
        Future *noop = mk("noop"), *sleep1 = mk("sleep"), *sleep2 = mk("sleep"),
               *prime = mk("prime"), *old = mk("prime");
        int k_noop, k_sleep, k_prime;

        counters_init(&c);
        c.time_runs = true;
        for (unsigned i = 0; all[i]; i++)
                CHECK(i < COUNTERS_MAX_KINDS && counters_kind_index(&c, all[i]) == (int) i);
        k_noop = counters_kind_index(&c, noop->kind);
        k_sleep = counters_kind_index(&c, sleep1->kind);
        k_prime = counters_kind_index(&c, prime->kind);
        REQUIRE(k_noop >= 0 && k_sleep >= 0 && k_prime >= 0);

        change(&c, noop, STATE_PENDING, false);
        change(&c, sleep1, STATE_PENDING, false);
        change(&c, sleep2, STATE_PENDING, false);
        change(&c, prime, STATE_PENDING, false);
        CHECK(c.submitted[k_noop] == 1 && c.submitted[k_sleep] == 2 && c.submitted[k_prime] == 1);
        CHECK(c.pending[LANE_INLINE] == 1 && c.pending[LANE_THREAD] == 2);
        CHECK(c.pending[LANE_PROCESS] == 1 && c.pending[LANE_TRANSFER] == 0);

        change(&c, noop, STATE_RUNNING, false);
        change(&c, sleep1, STATE_RUNNING, false);
        change(&c, prime, STATE_RUNNING, false);
        CHECK(noop->started_ns > 0 && sleep1->started_ns > 0 && sleep2->started_ns == 0);
        CHECK(c.running[LANE_INLINE] == 1 && c.running[LANE_THREAD] == 1);
        CHECK(c.pending[LANE_THREAD] == 1 && c.running[LANE_PROCESS] == 1);
        nanosleep(&(struct timespec){ .tv_nsec = 2000000 }, NULL);

        /* A worker died under the prime: pending again, not finished, no run counted. */
        change(&c, prime, STATE_PENDING, false);
        CHECK(c.pending[LANE_PROCESS] == 1 && c.running[LANE_PROCESS] == 0);
        CHECK(c.run_seconds[k_prime].count == 0 && c.submitted[k_prime] == 1);

        change(&c, noop, STATE_DONE, false);
        change(&c, sleep1, STATE_CANCELLED, false); /* cancelled while it ran */
        change(&c, sleep2, STATE_CANCELLED, false); /* ... and before it ran */
        change(&c, prime, STATE_RUNNING, false);
        change(&c, prime, STATE_FAILED, false);
        CHECK(c.finished[k_noop][STATE_DONE - STATE_DONE] == 1);
        CHECK(c.finished[k_sleep][STATE_CANCELLED - STATE_DONE] == 2);
        CHECK(c.finished[k_prime][STATE_FAILED - STATE_DONE] == 1);
        CHECK(c.run_seconds[k_noop].count == 1);
        CHECK(c.run_seconds[k_sleep].count == 1 && c.run_seconds[k_sleep].sum >= 0.002);
        CHECK(c.run_seconds[k_prime].count == 1);
        for (unsigned l = 0; l < _LANE_MAX; l++)
                CHECK(c.pending[l] == 0 && c.running[l] == 0);

        /* Expiry leaves the counts as they are. */
        change(&c, noop, STATE_EXPIRED, false);
        CHECK(c.finished[k_noop][0] == 1 && c.submitted[k_noop] == 1);

        /* Recovery: a future kept by the store counts in the gauges, never as a new submit or
         * finish; once recovered, its end is counted as any other. */
        change(&c, old, STATE_PENDING, true);
        CHECK(c.submitted[k_prime] == 1 && c.pending[LANE_PROCESS] == 1);
        change(&c, old, STATE_FAILED, false);
        CHECK(c.finished[k_prime][STATE_FAILED - STATE_DONE] == 2);
        CHECK(c.run_seconds[k_prime].count == 1); /* it did not run */
        CHECK(c.changes == 16);

        /* Without time_runs no clock is read and nothing is observed, but all else is counted. */
        counters_init(&c);
        change(&c, noop, STATE_PENDING, false);
        change(&c, noop, STATE_RUNNING, false);
        CHECK(noop->started_ns == 0);
        change(&c, noop, STATE_DONE, false);
        CHECK(c.finished[k_noop][0] == 1 && c.run_seconds[k_noop].count == 0);
        /* A run stamped before timing began (none in the daemon: metrics start with it) is not
         * observed when it ends. */
        c.time_runs = true;
        change(&c, sleep1, STATE_PENDING, false);
        change(&c, sleep1, STATE_RUNNING, false);
        sleep1->started_ns = 0;
        change(&c, sleep1, STATE_DONE, false);
        CHECK(c.finished[k_sleep][0] == 1 && c.run_seconds[k_sleep].count == 0);

        future_free(noop);
        future_free(sleep1);
        future_free(sleep2);
        future_free(prime);
        future_free(old);
        return test_end();
}
