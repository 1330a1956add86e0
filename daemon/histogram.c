/* histogram: see histogram.h. */
#include <assert.h>
#include <string.h>

#include "histogram.h"

void histogram_init(Histogram *h, const double *bounds, unsigned n) {
        assert(n <= HISTOGRAM_MAX_BOUNDS);
        memset(h, 0, sizeof(*h));
        h->bounds = bounds;
        h->n_bounds = n;
}

void histogram_observe(Histogram *h, double v) {
        unsigned i = 0;

        /* A linear scan: a dozen comparisons, fewer for the short jobs that come most often. */
        while (i < h->n_bounds && v > h->bounds[i])
                i++;
        h->buckets[i]++;
        h->count++;
        h->sum += v;
}

uint64_t histogram_cumulative(const Histogram *h, unsigned i) {
        uint64_t n = 0;

        for (unsigned j = 0; j <= i && j <= h->n_bounds; j++)
                n += h->buckets[j];
        return n;
}
