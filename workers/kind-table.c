/* kind-table: the daemon's registry, the table of every job kind, download included. It is part
 * of the pools library, which only the daemon's side links: futured-worker has its own table of
 * the kinds it may run (worker-main.c), so that it does not pull in libcurl. Constant: any
 * thread. */
#include "config.h"
#include "download.h"
#include "kind.h"
#include "prime.h"
#if FUTURED_TEST_KINDS
#include "wedge.h"
#endif

/* One line per kind. */
static const JobKind *const kinds[] = {
        &prime_kind,
        &sleep_kind,
        &noop_kind,
        &download_kind,
#if FUTURED_TEST_KINDS
        &wedge_kind, /* -Dtest-kinds=true: the test suite's, never a release's */
#endif
        NULL,
};

const JobKind *const *kind_all(void) {
        return kinds;
}

const JobKind *kind_find(const char *name, size_t len) {
        return kind_lookup(kinds, name, len);
}
