/* metrics: the Prometheus endpoint, `futured --metrics ADDRESS:PORT`: GET /metrics answers in the
 * text exposition format (version 0.0.4) with the executor's counters (counters.h, by kind and
 * pool), its stats (worker deaths, transfers in flight, deferred replies, the store's commit
 * latencies) and the process's own figures (resident memory, CPU time, open files). Every
 * metric is listed in docs/METRICS.md.
 *
 * Two threads, and nothing of the loop's crosses between them but a copy. The loop thread owns
 * the executor: once per loop turn metrics_turn() asks it cheaply whether anything changed
 * (executor_generation()), and if so arms a Timer that, at most every METRICS_PUBLISH_MS,
 * copies the counters and stats into a snapshot and publishes it under a mutex held only for a
 * memcpy. libmicrohttpd's one thread answers the requests: it copies the published snapshot
 * under the same mutex, reads /proc/self for the process's figures, and renders the text; it
 * never touches the executor. So a scrape costs the loop nothing, and what it shows is at most
 * METRICS_PUBLISH_MS old. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "counters.h"
#include "executor.h"
#include "timer.h"

/* A published snapshot is at most this old when something changed. */
#define METRICS_PUBLISH_MS 100

/* What a scrape shows of the executor: copied whole, any thread may read a copy. */
typedef struct MetricsSnapshot {
        Counters counters;
        ExecutorStats stats;
        bool durable;      /* the store keeps a file: its commit latency and size are shown */
} MetricsSnapshot;

/* What a scrape shows of the process (read by metrics_process_read()). */
typedef struct MetricsProcess {
        double cpu_seconds;     /* user + system, every thread of futured (not its workers) */
        double start_time;      /* seconds since the epoch */
        uint64_t resident_bytes;
        uint64_t virtual_bytes;
        uint64_t open_fds;
        uint64_t max_fds;
} MetricsProcess;

typedef struct Metrics Metrics;

/* Parses --metrics' value: PORT or localhost:PORT (127.0.0.1), IPV4:PORT, or [IPV6]:PORT; port
 * 0 takes a free one. Only an address given in full binds elsewhere than the loopback. Any
 * thread. Returns 0 with the address in *ret (its length in *ret_len), or -EINVAL. */
int metrics_parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len);

/* Binds `address` (as metrics_parse_address() reads it) and starts serving, with a first
 * snapshot of `executor`. Both are borrowed: `executor` and `timers` (the loop's) must outlive
 * the Metrics. Main thread, before the loop runs. Logs why when it fails; an address that
 * cannot be bound gives its -errno (-EADDRINUSE, -EADDRNOTAVAIL, -EACCES). Returns 0 or -errno. */
int metrics_new(Metrics **ret, const char *address, Executor *executor, TimerHeap *timers);

/* Stops serving (waiting for the HTTP thread) and frees everything. Accepts NULL; returns NULL.
 * Main thread. */
Metrics *metrics_free(Metrics *m);
static inline void metrics_freep(Metrics **m) {
        metrics_free(*m);
}

/* The address served, as "127.0.0.1:9464" or "[::1]:9464" (the port chosen when 0 was asked).
 * Any thread. */
const char *metrics_address(const Metrics *m);

/* Once per loop turn, on the loop thread: schedules a publication if the executor changed. Cheap.
 * Accepts NULL (no --metrics). */
void metrics_turn(Metrics *m);

/* Reads the process's figures from /proc/self and getrusage(); `start_time` is left as it is.
 * Any thread. */
void metrics_process_read(MetricsProcess *p);

/* Writes the exposition of `s` and `p` to `f`. Any thread. Returns 0 or -errno (a write error). */
int metrics_render(const MetricsSnapshot *s, const MetricsProcess *p, FILE *f);
