/* Unit test of the ring: items come out in the order they went in, across the wrap of the array
 * and across its growth; ring_at() counts from the oldest; a reserve makes pushes infallible, and
 * a failed growth leaves the ring as it was. */
#include <errno.h>

#include "alloc.h"
#include "ring.h"
#include "test.h"

int main(void) {
        Ring r = {};
        uint64_t next_in = 0, next_out = 0;

        CHECK(ring_peek(&r) == NULL);
        CHECK(ring_reserve(&r, 1000) == 0);
        CHECK(r.cap == 1024);
        /* Wrap around: the head moves on while the length stays under the capacity. */
        for (int round = 0; round < 5; round++) {
                for (int i = 0; i < 700; i++, next_in++)
                        ring_push(&r, next_in, next_in * 2);
                for (int i = 0; i < 700; i++, next_out++) {
                        CHECK(ring_peek(&r)->id == next_out && ring_peek(&r)->key == next_out * 2);
                        ring_pop(&r);
                }
        }
        CHECK(r.len == 0 && r.cap == 1024);
        /* Growth from a wrapped state keeps the order. */
        for (int i = 0; i < 1000; i++, next_in++)
                ring_push(&r, next_in, next_in * 2);
        for (int i = 0; i < 600; i++, next_out++)
                ring_pop(&r);
        CHECK(ring_reserve(&r, 2000) == 0);
        CHECK(r.cap == 4096 && r.len == 400);
        for (int i = 0; i < 2000; i++, next_in++)
                ring_push(&r, next_in, next_in * 2);
        CHECK(ring_at(&r, 0)->id == next_out && ring_at(&r, 2399)->id == next_in - 1);
        /* A growth that fails changes nothing. */
        alloc_fail_after(0);
        CHECK(ring_reserve(&r, 5000) == -ENOMEM);
        alloc_fail_after(-1);
        CHECK(r.cap == 4096 && r.len == 2400);
        CHECK(ring_reserve(&r, 1696) == 0 && r.cap == 4096); /* it fits: no growth */
        for (; r.len > 0; next_out++) {
                CHECK(ring_peek(&r)->id == next_out && ring_peek(&r)->key == next_out * 2);
                ring_pop(&r);
        }
        CHECK(next_out == next_in);
        ring_deinit(&r);
        CHECK(r.items == NULL && r.cap == 0);
        return test_end();
}
