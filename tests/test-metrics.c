/* Unit test of the metrics module's pure parts: which --metrics values are read as which
 * address (a port alone is the loopback; nothing binds elsewhere unless written out), and the
 * exposition of a snapshot: every family once, cumulative histogram buckets, the store's
 * families only with a durable store. The HTTP server itself is tested against a real daemon in
 * tests/integration/test_metrics.py. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "test.h"

/* The address `s` reads as, "HOST PORT", or "invalid". */
static const char *parse(const char *s) {
        static char out[INET6_ADDRSTRLEN + 8];
        char host[INET6_ADDRSTRLEN];
        struct sockaddr_storage sa;
        socklen_t len;

        if (metrics_parse_address(s, &sa, &len) < 0)
                return "invalid";
        if (sa.ss_family == AF_INET6) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &sa;
                CHECK(len == sizeof(*in6));
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                snprintf(out, sizeof(out), "%s %u", host, ntohs(in6->sin6_port));
        } else {
                struct sockaddr_in *in = (struct sockaddr_in *) &sa;
                CHECK(len == sizeof(*in) && sa.ss_family == AF_INET);
                inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                snprintf(out, sizeof(out), "%s %u", host, ntohs(in->sin_port));
        }
        return out;
}

static char *render(const MetricsSnapshot *s) {
        MetricsProcess p = { .start_time = 1.5, .resident_bytes = 4096, .open_fds = 3 };
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        REQUIRE(f);
        CHECK(metrics_render(s, &p, f) == 0);
        REQUIRE(fclose(f) == 0);
        return text;
}

/* Lines the rendering of main()'s first snapshot holds. */
static const char *const lines[] = {
        "futured_jobs_submitted_total{kind=\"sleep\"} 7\n",
        "futured_jobs_submitted_total{kind=\"prime\"} 0\n",
        "futured_jobs_finished_total{kind=\"sleep\",state=\"failed\"} 2\n",
        "futured_jobs_pending{pool=\"process\"} 3\n",
        "futured_job_duration_seconds_bucket{kind=\"sleep\",le=\"0.001\"} 0\n",
        "futured_job_duration_seconds_bucket{kind=\"sleep\",le=\"0.005\"} 1\n",
        "futured_job_duration_seconds_bucket{kind=\"sleep\",le=\"0.25\"} 2\n",
        "futured_job_duration_seconds_bucket{kind=\"sleep\",le=\"+Inf\"} 2\n",
        "futured_job_duration_seconds_count{kind=\"sleep\"} 2\n",
        "futured_job_duration_seconds_sum{kind=\"sleep\"} 0.203",
        "futured_worker_deaths_total 4\n",
        "process_start_time_seconds 1.500\n",
};

static unsigned count(const char *text, const char *needle) {
        unsigned n = 0;

        for (const char *p = text; (p = strstr(p, needle)); p++)
                n++;
        return n;
}

int main(void) {
        static MetricsSnapshot s;
        MetricsProcess p = {};
        char *text;
        int k;

        CHECK(strcmp(parse("9464"), "127.0.0.1 9464") == 0);
        CHECK(strcmp(parse("0"), "127.0.0.1 0") == 0);
        CHECK(strcmp(parse("localhost:9464"), "127.0.0.1 9464") == 0);
        CHECK(strcmp(parse("0.0.0.0:80"), "0.0.0.0 80") == 0);
        CHECK(strcmp(parse("10.1.2.3:65535"), "10.1.2.3 65535") == 0);
        CHECK(strcmp(parse("[::1]:9464"), "::1 9464") == 0);
        CHECK(strcmp(parse("[::]:9464"), ":: 9464") == 0);
        const char *bad[] = { "", ":9464", "9464:", "65536", "-1", "+80", " 80", "80 ",
                              "127.0.0.1:", "127.0.0.1", "127.0.0.1:99999", "1.2.3:80",
                              "localhost", "example.com:80", "::1:9464", "[::1]", "[::1]:",
                              "[::1:9464", "::1]:9464", "[127.0.0.1]:80", "1.2.3.4:8x0",
                              "[0123456789:0123456789:0123456789:0123456789:0123456789]:1" };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (strcmp(parse(bad[i]), "invalid") != 0) {
                        fprintf(stderr, "'%s' was read as %s\n", bad[i], parse(bad[i]));
                        CHECK(false);
                }

        counters_init(&s.counters);
        k = counters_kind_index(&s.counters, kind_find("sleep", 5));
        REQUIRE(k >= 0);
        s.counters.submitted[k] = 7;
        s.counters.finished[k][1] = 2;
        s.counters.pending[LANE_PROCESS] = 3;
        histogram_observe(&s.counters.run_seconds[k], 0.003);
        histogram_observe(&s.counters.run_seconds[k], 0.2);
        s.stats.workers_died = 4;
        s.stats.store = "memory";
        text = render(&s);
        for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
                if (!strstr(text, lines[i])) {
                        fprintf(stderr, "missing: %s", lines[i]);
                        CHECK(false);
                }
        CHECK(!strstr(text, "futured_store"));
        CHECK(count(text, "# TYPE ") == 17 && count(text, "# HELP ") == 17);
        CHECK(text[strlen(text) - 1] == '\n');
        free(text);

        s.durable = true;
        s.stats.store = "sqlite";
        histogram_init(&s.stats.store_stats.commit_seconds, counters_run_bounds,
                       counters_n_run_bounds);
        histogram_observe(&s.stats.store_stats.commit_seconds, 0.0002);
        text = render(&s);
        CHECK(strstr(text, "# TYPE futured_store_commit_seconds histogram\n"));
        CHECK(strstr(text, "futured_store_commit_seconds_bucket{le=\"0.0005\"} 1\n"));
        CHECK(strstr(text, "futured_store_commit_seconds_count 1\n"));
        CHECK(count(text, "# TYPE ") == 19);
        free(text);

        metrics_process_read(&p);
        CHECK(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        CHECK(p.open_fds >= 3 && p.max_fds >= p.open_fds && p.cpu_seconds >= 0);
        return test_end();
}
