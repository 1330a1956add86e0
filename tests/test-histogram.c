/* Unit test of the histogram: an observation lands in the first bucket whose bound is >= it (a
 * value equal to a bound is in that bucket, as Prometheus' `le` says), above every bound in +Inf;
 * the cumulative counts never fall and end at the count; the sum adds up. */
#include "histogram.h"
#include "macro.h"
#include "test.h"

static const double bounds[] = { 0.001, 0.01, 0.1, 1 };

int main(void) {
        Histogram h;

        histogram_init(&h, bounds, ELEMENTSOF(bounds));
        CHECK(h.count == 0 && h.sum == 0 && h.n_bounds == 4);
        for (unsigned i = 0; i <= h.n_bounds; i++)
                CHECK(histogram_cumulative(&h, i) == 0);

        histogram_observe(&h, 0);       /* bucket 0 */
        histogram_observe(&h, 0.001);   /* bucket 0: le is inclusive */
        histogram_observe(&h, 0.0011);  /* bucket 1 */
        histogram_observe(&h, 0.5);     /* bucket 3 */
        histogram_observe(&h, 1);       /* bucket 3 */
        histogram_observe(&h, 7);       /* +Inf */
        CHECK(h.buckets[0] == 2 && h.buckets[1] == 1 && h.buckets[2] == 0);
        CHECK(h.buckets[3] == 2 && h.buckets[4] == 1);
        CHECK(histogram_cumulative(&h, 0) == 2);
        CHECK(histogram_cumulative(&h, 1) == 3);
        CHECK(histogram_cumulative(&h, 2) == 3);
        CHECK(histogram_cumulative(&h, 3) == 5);
        CHECK(histogram_cumulative(&h, 4) == 6);
        CHECK(histogram_cumulative(&h, 99) == 6); /* past the end: the count */
        CHECK(h.count == 6);
        CHECK(h.sum > 8.5020 && h.sum < 8.5022);

        histogram_init(&h, bounds, ELEMENTSOF(bounds));
        CHECK(h.count == 0 && h.buckets[3] == 0);
        return test_end();
}
