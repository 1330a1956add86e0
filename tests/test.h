/* test: the tiny harness the C unit tests share. CHECK() records a failure and goes on, so one run
 * shows every broken assertion; test_end() turns the count into the exit status meson reads. */
#pragma once

#include <stdio.h>
#include <stdlib.h>

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                test_checks++;                                                                     \
                if (!(cond)) {                                                                     \
                        test_failures++;                                                           \
                        fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
                }                                                                                  \
        } while (0)

/* Like CHECK, but stops the test program: for a condition the rest depends on. */
#define REQUIRE(cond)                                                                              \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
                        exit(EXIT_FAILURE);                                                        \
                }                                                                                  \
        } while (0)

static inline int test_end(void) {
        fprintf(stderr, "%d checks, %d failed\n", test_checks, test_failures);
        return test_failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
