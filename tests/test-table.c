/* Unit test of the future table: IDs are issued in order, lookups find them, removal in any
 * order frees slots, and an issued-but-removed ID is told apart from one never issued. */
#include "table.h"
#include "test.h"

static const JobKind dummy = { .name = "dummy" };

static Future *mk(void) {
        Future *f = NULL;

        REQUIRE(future_new(&f, &dummy, NULL, 0) == 0);
        return f;
}

int main(void) {
        Table t;

        table_init(&t, 1);
        for (int i = 0; i < 5000; i++) {
                Future *f = mk();
                REQUIRE(table_add(&t, f) == 0);
                CHECK(f->id == (uint64_t) i + 1);
        }
        CHECK(t.count == 5000);
        CHECK(table_get(&t, 0) == NULL);
        CHECK(table_get(&t, 5001) == NULL);
        CHECK(table_get(&t, 4242)->id == 4242);
        CHECK(!table_issued(&t, 5001));
        CHECK(table_issued(&t, 5000));

        /* Remove the odd IDs, then the even ones: the base only moves over an empty prefix. */
        for (uint64_t id = 1; id <= 5000; id += 2)
                future_free(table_steal(&t, id));
        CHECK(t.base == 2);
        CHECK(table_get(&t, 3) == NULL);
        CHECK(table_get(&t, 4)->id == 4);
        for (uint64_t id = 2; id <= 5000; id += 2)
                future_free(table_steal(&t, id));
        CHECK(t.count == 0);
        CHECK(t.base == 5001);
        CHECK(table_steal(&t, 17) == NULL);

        /* The ring wraps around without losing entries. */
        for (int round = 0; round < 10; round++) {
                for (int i = 0; i < 700; i++)
                        REQUIRE(table_add(&t, mk()) == 0);
                for (uint64_t id = t.base; id < t.next_id; id++) {
                        Future *f = table_get(&t, id);
                        CHECK(f && f->id == id);
                }
                while (t.count > 100)
                        future_free(table_steal(&t, t.base));
        }
        CHECK(t.count == 100);
        table_deinit(&t);
        return test_end();
}
