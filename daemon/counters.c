/* counters: see counters.h. */
#include "counters.h"
#include "macro.h"
#include "timer.h"

/* From the noop that runs inline (microseconds) through a prime check (milliseconds to seconds)
 * to a slow download (up to its timeout): roughly three buckets a decade. */
const double counters_run_bounds[] = {
        0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300,
};
const unsigned counters_n_run_bounds = ELEMENTSOF(counters_run_bounds);

void counters_init(Counters *c) {
        *c = (Counters){ .kinds = kind_all() };
        while (c->kinds[c->n_kinds] && c->n_kinds < COUNTERS_MAX_KINDS)
                c->n_kinds++;
        for (unsigned k = 0; k < COUNTERS_MAX_KINDS; k++)
                histogram_init(&c->run_seconds[k], counters_run_bounds, counters_n_run_bounds);
}

int counters_kind_index(const Counters *c, const JobKind *kind) {
        for (unsigned k = 0; k < c->n_kinds; k++)
                if (c->kinds[k] == kind)
                        return (int) k;
        return -1;
}

static uint64_t *gauge(Counters *c, FutureState s, SchedLane lane) {
        if (s == STATE_PENDING)
                return &c->pending[lane];
        if (s == STATE_RUNNING)
                return &c->running[lane];
        return NULL;
}

void counters_change(Counters *c, Future *f, FutureState from, bool recovering) {
        FutureState to = f->state;
        SchedLane lane = scheduler_lane(f->kind);
        int k = counters_kind_index(c, f->kind);
        uint64_t *g;

        c->changes++;
        if ((g = gauge(c, from, lane)))
                (*g)--;
        if ((g = gauge(c, to, lane)))
                (*g)++;
        if (to == STATE_RUNNING)
                f->started_ns = c->time_runs ? timer_now() : 0;
        if (recovering || k < 0)
                return;
        if (from == STATE_UNKNOWN && to == STATE_PENDING)
                c->submitted[k]++;
        if (to == STATE_EXPIRED || !proto_state_final(to))
                return;
        c->finished[k][to - STATE_DONE]++;
        if (from == STATE_RUNNING && f->started_ns && c->time_runs)
                histogram_observe(&c->run_seconds[k], (double) (timer_now() - f->started_ns) / 1e9);
}
