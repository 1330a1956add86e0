/* histogram: a Prometheus-style histogram of observations (seconds, say) in fixed buckets: a
 * count per bucket, the number of observations and their sum. Plain data, copied whole: the
 * owner observes on its thread; a copy (a metrics snapshot) can be read anywhere. The bucket
 * bounds are static constants of the owner; the histogram points at them. */
#pragma once

#include <stdint.h>

/* At most this many finite bounds; an implicit +Inf bucket follows them. */
#define HISTOGRAM_MAX_BOUNDS 15

typedef struct Histogram {
        const double *bounds;   /* ascending upper bounds (inclusive), static; NULL: unused */
        unsigned n_bounds;
        uint64_t buckets[HISTOGRAM_MAX_BOUNDS + 1]; /* NOT cumulative; the last is +Inf */
        uint64_t count;
        double sum;
} Histogram;

/* Empties `h` and gives it `n` bounds (<= HISTOGRAM_MAX_BOUNDS, ascending, static). */
void histogram_init(Histogram *h, const double *bounds, unsigned n);

/* Counts one observation `v` in the first bucket whose bound is >= v. */
void histogram_observe(Histogram *h, double v);

/* The cumulative count of bucket `i` (0..n_bounds; n_bounds is +Inf): what Prometheus' `le`
 * buckets hold. */
uint64_t histogram_cumulative(const Histogram *h, unsigned i);
