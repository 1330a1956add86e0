/* Unit test of the ID set: what is added is found until it is removed, across growths and
 * across removals in the middle of probe runs (a set with few slots forces long runs that wrap
 * around the array); a failed growth leaves the set as it was. */
#include <errno.h>

#include "alloc.h"
#include "idset.h"
#include "test.h"

int main(void) {
        IdSet s = {};

        CHECK(!idset_has(&s, 1) && !idset_remove(&s, 1));
        for (uint64_t id = 1; id <= 5000; id++)
                CHECK(idset_add(&s, id * 7) == 0);
        CHECK(idset_add(&s, 7) == 0 && s.count == 5000);
        /* Every other ID goes: the ones left are still found past the holes. */
        for (uint64_t id = 1; id <= 5000; id += 2)
                CHECK(idset_remove(&s, id * 7));
        for (uint64_t id = 1; id <= 5000; id++)
                CHECK(idset_has(&s, id * 7) == (id % 2 == 0));
        CHECK(!idset_remove(&s, 7) && s.count == 2500);
        idset_deinit(&s);
        /* 100 IDs whose home is one of the last 4 slots of 256 (idset.c's hash): one run
         * that wraps around the end of the array. */
        uint64_t ids[100];
        for (uint64_t id = 1, n = 0; n < 100; id++)
                if (((size_t) (id * 0x9E3779B97F4A7C15u >> 17) & 255) >= 252)
                        ids[n++] = id;
        for (int i = 0; i < 100; i++)
                CHECK(idset_add(&s, ids[i]) == 0);
        CHECK(s.cap == 256);
        for (int i = 0; i < 100; i += 3)
                CHECK(idset_remove(&s, ids[i]));
        for (int i = 0; i < 100; i++)
                CHECK(idset_has(&s, ids[i]) == (i % 3 != 0));
        /* A growth that fails changes nothing. */
        while (2 * (s.count + 1) <= s.cap)
                CHECK(idset_add(&s, 1000000 + s.count) == 0);
        alloc_fail_after(0);
        CHECK(idset_add(&s, 99) == -ENOMEM && !idset_has(&s, 99));
        alloc_fail_after(-1);
        CHECK(idset_add(&s, 99) == 0 && idset_has(&s, 99));
        idset_deinit(&s);
        return 0;
}
