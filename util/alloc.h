/* alloc: the allocation seam. The daemon's own allocations on the paths that must leave no trace
 * when memory runs out (a submit, a deferred reply, the heaps and tables they grow) go through
 * these wrappers, so that a unit test can make the Nth allocation from now fail and check that
 * the operation failed cleanly (beanstalkd's `falloc` does the same). In production the seam
 * costs one well-predicted branch per allocation.
 *
 * Any thread may allocate; alloc_fail_after() is for single-threaded tests. */
#pragma once

#include <stddef.h>

void *alloc_malloc(size_t size);
void *alloc_calloc(size_t n, size_t size);
void *alloc_realloc(void *p, size_t size);
char *alloc_strdup(const char *s);

/* Tests: the allocation `n` calls from now (0: the next one) and every one after it fail, until
 * alloc_fail_after(-1) turns failures off again. */
void alloc_fail_after(long n);

/* Tests: how many allocations went through the seam so far (successful or not). */
unsigned long alloc_count(void);
