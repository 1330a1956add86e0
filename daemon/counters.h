/* counters: what the executor counts of its futures' lives, by job kind and by pool, for the
 * metrics endpoint (metrics.c) or anyone else who wants more than `stats`: futures submitted and
 * finished (by final state) per kind, a histogram of run times per kind, and how many are
 * pending and running per scheduler lane (thread, process, transfer, inline).
 *
 * The executor owns one Counters and moves it at its one door (executor.c: set_state) with
 * counters_change(), nowhere else; the struct is plain data, so a copy of it is a consistent
 * snapshot. It knows nothing of HTTP or of Prometheus. Loop thread only (a copy: any thread). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "future.h"
#include "histogram.h"
#include "scheduler.h"

/* Room for this many job kinds (kind_all()); tests/test-counters.c checks that they fit. */
#define COUNTERS_MAX_KINDS 8

/* The final states a future is counted in, in this order: done, failed, cancelled. */
#define COUNTERS_FINAL 3

typedef struct Counters {
        const JobKind *const *kinds;          /* kind_all(): index k of the arrays is kinds[k] */
        unsigned n_kinds;
        uint64_t submitted[COUNTERS_MAX_KINDS];
        uint64_t finished[COUNTERS_MAX_KINDS][COUNTERS_FINAL]; /* [k][state - STATE_DONE] */
        Histogram run_seconds[COUNTERS_MAX_KINDS]; /* running -> final, for the runs that ended */
        /* As the executor keeps them: a thread job handed to the pool that no thread has taken
         * yet is running here (the executor's reader corrects that, see executor_counters()). */
        uint64_t pending[_LANE_MAX];
        uint64_t running[_LANE_MAX];
        uint64_t changes;                     /* bumped by every counters_change() */
        bool time_runs;                       /* fill run_seconds (two clock reads a job) */
} Counters;

/* The run-time histograms' upper bounds, in seconds. */
extern const double counters_run_bounds[];
extern const unsigned counters_n_run_bounds;

/* Empties `c` for the daemon's kinds. */
void counters_init(Counters *c);

/* `f` went from `from` to its current state (set_state() calls this after the change). With
 * c->time_runs, a future that starts running has the time stamped in f->started_ns, and the
 * run's length is observed when it finishes (a run not stamped is not observed). Without it no
 * clock is read: on this project's VMs a clock read costs 80-100 ns, a noop job 2.5 µs of the
 * loop's time, so nobody pays for run times that no one reads. While the executor is `recovering` the store's futures, nothing is counted
 * as submitted or finished (they were, before the restart), but the gauges move. */
void counters_change(Counters *c, Future *f, FutureState from, bool recovering);

/* The index of `kind` in c->kinds, or -1 if it has none (more kinds than COUNTERS_MAX_KINDS). */
int counters_kind_index(const Counters *c, const JobKind *kind);
