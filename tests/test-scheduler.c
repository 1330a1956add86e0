/* Unit test of the scheduler: priority then FIFO order, removal of cancelled jobs, group
 * concurrency limits that park and release jobs, and principals taking turns under a running
 * quota. */
#include "scheduler.h"
#include "test.h"

static const JobKind thread_kind = { .name = "t", .pool = POOL_THREAD };
static const JobKind process_kind = { .name = "p", .pool = POOL_PROCESS };

static Future *mk(uint64_t id, const JobKind *k, int prio) {
        Future *f = NULL;

        REQUIRE(future_new(&f, k, NULL, 0) == 0);
        f->id = id;
        f->state = STATE_PENDING; /* the executor's job; here the scheduler alone is tested */
        f->priority = (int16_t) prio;
        return f;
}

int main(void) {
        Scheduler s;
        Future *f[10];

        scheduler_init(&s);
        /* Priority first, then submission order; pools are separate. */
        f[0] = mk(1, &thread_kind, 0);
        f[1] = mk(2, &thread_kind, 5);
        f[2] = mk(3, &thread_kind, 0);
        f[3] = mk(4, &process_kind, -3);
        f[4] = mk(5, &thread_kind, 5);
        for (int i = 0; i < 5; i++)
                REQUIRE(scheduler_push(&s, f[i]) == 0);
        scheduler_remove(&s, f[2]);
        CHECK(f[2]->heap_pos == 0);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[1]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[4]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[0]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == NULL);
        CHECK(scheduler_pop(&s, LANE_PROCESS) == f[3]);
        for (int i = 0; i < 5; i++)
                future_free(f[i]);

        /* A group with limit 2: the third job waits until one of the first two stops. */
        Group *g;
        for (int i = 0; i < 4; i++) {
                f[i] = mk((uint64_t) (10 + i), &thread_kind, 0);
                REQUIRE(scheduler_group_ref(&s, "flags", &f[i]->group) == 0);
                scheduler_group_limit(&s, f[i]->group, 2);
                REQUIRE(scheduler_push(&s, f[i]) == 0);
        }
        g = f[0]->group;
        CHECK(g->refs == 4);
        f[4] = mk(20, &thread_kind, -1); /* not in the group, lower priority */
        REQUIRE(scheduler_push(&s, f[4]) == 0);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[0]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[1]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[4]); /* the group is full: others go first */
        CHECK(scheduler_pop(&s, LANE_THREAD) == NULL);
        CHECK(g->running == 2 && g->parked.n == 2);
        scheduler_stopped(&s, f[0]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[2]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == NULL);
        /* A cancelled parked job leaves its group's heap. */
        scheduler_remove(&s, f[3]);
        scheduler_stopped(&s, f[1]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == NULL);
        /* Raising the limit releases parked jobs at once. */
        f[5] = mk(30, &thread_kind, 0);
        f[6] = mk(31, &thread_kind, 0);
        Group *g2;
        REQUIRE(scheduler_group_ref(&s, "flags", &f[5]->group) == 0);
        scheduler_group_limit(&s, f[5]->group, 1);
        REQUIRE(scheduler_group_ref(&s, "flags", &f[6]->group) == 0);
        scheduler_group_limit(&s, f[6]->group, 0); /* 0 leaves the limit as it is */
        CHECK(f[5]->group == g && g->limit == 1);
        REQUIRE(scheduler_push(&s, f[5]) == 0);
        REQUIRE(scheduler_push(&s, f[6]) == 0);
        CHECK(scheduler_pop(&s, LANE_THREAD) == NULL); /* f[2] runs; limit 1 */
        REQUIRE(scheduler_group_ref(&s, "flags", &g2) == 0);
        scheduler_group_limit(&s, g2, 3);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[5]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[6]);
        scheduler_group_unref(&s, g2);
        for (int i = 0; i < 7; i++) {
                if (i == 4) {
                        future_free(f[i]);
                        continue;
                }
                scheduler_group_unref(&s, f[i]->group);
                f[i]->group = NULL;
                future_free(f[i]);
        }
        CHECK(s.n_groups == 0);

        /* Principals take turns within a priority: a's three jobs, then b's one, queued after
         * them, goes second; a higher priority still goes first, whoever it is. */
        Principal *a, *b;
        REQUIRE(scheduler_principal_ref(&s, "uid:1", &a) == 0);
        REQUIRE(scheduler_principal_ref(&s, "uid:2", &b) == 0);
        for (int i = 0; i < 5; i++) {
                f[i] = mk((uint64_t) (40 + i), &thread_kind, i == 4 ? 7 : 0);
                f[i]->principal = i == 3 ? b : a;
                REQUIRE(scheduler_principal_ref(&s, f[i]->principal->name, &f[i]->principal) ==
                        0);
        }
        REQUIRE(scheduler_reserve(&s, a, LANE_THREAD, 4) == 0);
        for (int i = 0; i < 4; i++)
                REQUIRE(scheduler_push(&s, f[i]) == 0);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[0]);
        REQUIRE(scheduler_push(&s, f[4]) == 0);         /* a's priority 7 */
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[4]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[3]);  /* b's turn: a had two */
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[1]);
        /* A running quota of 1: a has three running, so b's next job goes before a's last. */
        scheduler_set_max_running(&s, 1);
        CHECK(a->blocked && scheduler_ready(&s, LANE_THREAD) == 0);
        CHECK(scheduler_pop(&s, LANE_THREAD) == NULL);
        f[5] = mk(50, &thread_kind, 0);
        REQUIRE(scheduler_principal_ref(&s, "uid:2", &f[5]->principal) == 0);
        scheduler_stopped(&s, f[3]); /* b is under its quota again */
        REQUIRE(scheduler_push(&s, f[5]) == 0);
        CHECK(scheduler_pop(&s, LANE_THREAD) == f[5]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == NULL); /* both at the quota */
        scheduler_stopped(&s, f[0]);
        scheduler_stopped(&s, f[4]);
        CHECK(scheduler_pop(&s, LANE_THREAD) == NULL); /* a still has one running */
        scheduler_stopped(&s, f[1]);
        CHECK(!a->blocked && scheduler_pop(&s, LANE_THREAD) == f[2]);
        scheduler_stopped(&s, f[2]);
        scheduler_stopped(&s, f[5]);
        for (int i = 0; i < 6; i++) {
                scheduler_principal_unref(&s, f[i]->principal);
                future_free(f[i]);
        }
        scheduler_principal_unref(&s, a);
        scheduler_principal_unref(&s, b);
        CHECK(s.n_principals == 0);
        scheduler_deinit(&s);
        return test_end();
}
