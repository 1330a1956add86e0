/* Unit test of the generic heap: items come out in `less` order, every move is reported through
 * setpos (so removal from the middle works), a reserve makes pushes infallible, and a failed
 * growth leaves the heap as it was. */
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "heap.h"
#include "test.h"

typedef struct Item {
        int key;
        uint32_t pos;
} Item;

static bool less(const void *a, const void *b) {
        return ((const Item *) a)->key < ((const Item *) b)->key;
}

static void setpos(void *item, uint32_t pos) {
        ((Item *) item)->pos = pos;
}

/* Every item's pos names its slot, and no child comes before its parent. */
static bool valid(const Heap *h) {
        for (uint32_t i = 0; i < h->n; i++) {
                if (((Item *) h->items[i])->pos != i + 1)
                        return false;
                if (i > 0 && less(h->items[i], h->items[(i - 1) / 2]))
                        return false;
        }
        return true;
}

int main(void) {
        static Item items[5000];
        Heap h;
        int last = -1, n = 0;

        heap_init(&h, less, setpos);
        CHECK(heap_peek(&h) == NULL && heap_pop(&h) == NULL);
        srand(11);
        for (int i = 0; i < 5000; i++) {
                items[i].key = rand() % 1000;
                REQUIRE(heap_push(&h, &items[i]) == 0);
        }
        CHECK(heap_size(&h) == 5000 && valid(&h));

        /* Remove a third from the middle, by the position each item was told. */
        for (int i = 0; i < 5000; i += 3)
                CHECK(heap_remove(&h, items[i].pos) == &items[i] && items[i].pos == 0);
        CHECK(valid(&h));
        for (Item *it; (it = heap_pop(&h)); n++) {
                CHECK(it->key >= last);
                CHECK(it->pos == 0);
                CHECK((it - items) % 3 != 0);
                last = it->key;
        }
        CHECK(n == 3333);

        /* After a reserve, pushes up to that size allocate nothing. */
        REQUIRE(heap_reserve(&h, 6000) == 0);
        alloc_fail_after(0);
        for (int i = 0; i < 5000; i++)
                CHECK(heap_push(&h, &items[i]) == 0);
        /* Beyond its capacity, growth fails cleanly: nothing is pushed, the heap stays valid. */
        {
                static Item extra[8000];
                int r = 0, i;
                CHECK(h.cap >= 6000);
                for (i = 0; i < 8000 && r == 0; i++)
                        r = heap_push(&h, &extra[i]);
                CHECK(r == -ENOMEM);
                CHECK(heap_size(&h) == h.cap);
                CHECK(extra[i - 1].pos == 0);
        }
        alloc_fail_after(-1);
        CHECK(valid(&h));
        heap_deinit(&h);
        CHECK(items[0].pos == 0 && items[4999].pos == 0);
        return test_end();
}
