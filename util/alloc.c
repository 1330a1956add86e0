/* alloc: see alloc.h. */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static long fail_countdown = -1; /* < 0: never fail */
static _Atomic unsigned long calls;

static bool should_fail(void) {
        atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
        if (__builtin_expect(fail_countdown < 0, 1))
                return false;
        if (fail_countdown > 0) {
                fail_countdown--;
                return false;
        }
        errno = ENOMEM;
        return true;
}

void *alloc_malloc(size_t size) {
        return should_fail() ? NULL : malloc(size);
}

void *alloc_calloc(size_t n, size_t size) {
        return should_fail() ? NULL : calloc(n, size);
}

void *alloc_realloc(void *p, size_t size) {
        return should_fail() ? NULL : realloc(p, size);
}

char *alloc_strdup(const char *s) {
        return should_fail() ? NULL : strdup(s);
}

void alloc_fail_after(long n) {
        fail_countdown = n;
}

unsigned long alloc_count(void) {
        return atomic_load_explicit(&calls, memory_order_relaxed);
}
