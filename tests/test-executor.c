/* Unit test of the executor's submit through the allocation seam: a batch whose Nth allocation
 * fails, for every N until it succeeds, is refused with -ENOMEM and leaves no trace (no future,
 * no ID issued, no counter moved, no group, no timer slot); then the same batch succeeds whole,
 * runs inline kinds in the before-sleep hook, and a queue_full refusal also leaves nothing.
 * Real pools are started (argv[1] is futured-worker), but no job runs in them. */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "executor.h"
#include "test.h"

static void specs_init(JobSpec *specs, uint32_t n, const msgpack_object *args) {
        const JobKind *sleeps = &sleep_kind, *noop = &noop_kind;

        REQUIRE(sleeps->run && noop->inline_run);
        for (uint32_t i = 0; i < n; i++)
                specs[i] = (JobSpec){
                        .kind = i % 2 ? noop : sleeps,
                        .args = args,
                        .group = i % 3 ? "g" : NULL,
                        .group_limit = 2,
                        .priority = (int16_t) i,
                        .timeout_ms = i % 2 ? 0 : 60000,
                };
}

static uint32_t base_timers; /* the slots the executor and its pools hold for themselves */

static void check_empty(Executor *x, Loop *loop, uint64_t next_id) {
        const Table *t = executor_table(x);
        ExecutorStats st;

        executor_stats(x, &st);
        CHECK(t->count == 0);
        CHECK(t->next_id == next_id);
        CHECK(st.submitted == 0);
        for (int s = 0; s < _STATE_MAX; s++)
                CHECK(st.n_state[s] == 0);
        CHECK(loop_timers(loop)->n_reserved == base_timers);
}

int main(int argc, char **argv) {
        msgpack_object args = { .type = MSGPACK_OBJECT_MAP };
        ExecutorConfig cfg = { .threads = 1, .transfers = 1, .processes = 1, .retain = 60 };
        JobSpec specs[12];
        Executor *x = NULL;
        Loop *loop = NULL;
        Events events;
        uint64_t ids[12] = {}, seq = 1;
        long k;
        int r = -1;

        REQUIRE(argc > 1);
        cfg.worker_path = argv[1];
        REQUIRE(loop_new(&loop) == 0);
        events_init(&events, NULL); /* no PUB socket: events go nowhere */
        REQUIRE(executor_new(&x, loop, &events, &cfg) == 0);
        specs_init(specs, 12, &args);
        base_timers = loop_timers(loop)->n_reserved;
        check_empty(x, loop, 1);

        for (k = 0; k < 1000; k++) {
                alloc_fail_after(k);
                r = executor_submit(x, specs, 12, ids, &seq);
                alloc_fail_after(-1);
                if (r != -ENOMEM)
                        break;
                check_empty(x, loop, 1);
        }
        fprintf(stderr, "the batch needs %ld allocations through the seam\n", k);
        CHECK(k > 12); /* every future, its group and its timer went through the seam */
        REQUIRE(r == 0);
        CHECK(seq == 0); /* the memory store: nothing to wait for */
        for (int i = 0; i < 12; i++)
                CHECK(ids[i] == (uint64_t) i + 1);
        {
                ExecutorStats st;
                executor_stats(x, &st);
                CHECK(st.submitted == 12 && st.n_state[STATE_PENDING] == 12);
                CHECK(executor_table(x)->count == 12);
                CHECK(loop_timers(loop)->n_reserved == base_timers + 6); /* six timeouts */
        }

        /* The hook runs the six inline noops at once (the group lets two of them run at a time,
         * and each finishes before the next starts) and hands the sleeps to the thread pool. */
        executor_before_sleep(x);
        {
                ExecutorStats st;
                executor_stats(x, &st);
                CHECK(st.n_state[STATE_DONE] == 6);

                CHECK(table_state_of(executor_table(x), 2) == STATE_DONE);
                CHECK(executor_release(x, 2));
                CHECK(table_state_of(executor_table(x), 2) == STATE_EXPIRED);
        }
        for (uint64_t id = 1; id <= 12; id++)
                executor_cancel(x, id);
        {
                ExecutorStats st;
                executor_stats(x, &st);
                CHECK(st.n_state[STATE_CANCELLED] == 6 && st.n_state[STATE_PENDING] == 0);
                CHECK(st.n_state[STATE_RUNNING] == 0);
                /* Finished futures gave their timeout slots back. */
                CHECK(loop_timers(loop)->n_reserved == base_timers);
        }
        /* Idempotency keys: a key repeated in a batch, or sent again while its future is
         * retained, gives the first future's ID and queues nothing; once released it is new. */
        {
                JobSpec keyed[3] = { specs[1], specs[1], specs[1] };
                uint64_t got[3], again, fresh, before = executor_table(x)->next_id;
                keyed[0].key = keyed[2].key = "alpha";
                keyed[0].key_len = keyed[2].key_len = 5;
                keyed[1].key = "beta";
                keyed[1].key_len = 4;
                REQUIRE(executor_submit(x, keyed, 3, got, &seq) == 0);
                CHECK(got[0] == before && got[1] == before + 1 && got[2] == got[0]);
                CHECK(executor_table(x)->next_id == before + 2);
                REQUIRE(executor_submit(x, &keyed[1], 1, &again, &seq) == 0);
                CHECK(again == got[1]);
                executor_before_sleep(x); /* the noops run inline */
                CHECK(executor_release(x, got[1]));
                REQUIRE(executor_submit(x, &keyed[1], 1, &fresh, &seq) == 0);
                CHECK(fresh == before + 2);
        }
        x = executor_free(x);
        loop = loop_free(loop);
        events_deinit(&events);
        return test_end();
}
