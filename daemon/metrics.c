/* metrics: see metrics.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "macro.h"
#include "metrics.h"

/* Scrapers are few; a client that opens more connections, or sits on one, is cut off. */
#define METRICS_MAX_CONNECTIONS 32
#define METRICS_CONNECTION_TIMEOUT_S 10

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct Metrics {
        /* The loop thread's. */
        Executor *executor;
        TimerHeap *timers;
        Timer publish;
        uint64_t generation;       /* executor_generation() at the last publication */
        MetricsSnapshot staging;   /* built here, then copied under `lock` */

        /* Shared: `published` under `lock`. */
        pthread_mutex_t lock;
        MetricsSnapshot published;

        /* Set before the HTTP thread starts, then read-only: any thread. */
        double start_time;
        char address[INET6_ADDRSTRLEN + 8];
        struct MHD_Daemon *mhd;
        int fd;                    /* the listening socket until libmicrohttpd has it */
};

/* The pool labels, by scheduler lane. */
static const char *const lane_names[_LANE_MAX] = {
        [LANE_THREAD] = "thread",
        [LANE_PROCESS] = "process",
        [LANE_TRANSFER] = "transfer",
        [LANE_INLINE] = "inline",
};

static const char *const final_names[COUNTERS_FINAL] = { "done", "failed", "cancelled" };

static int parse_port(const char *s, uint16_t *ret) {
        unsigned long port;
        char *end;

        if (*s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        port = strtoul(s, &end, 10);
        if (errno || *end || port > 65535)
                return -EINVAL;
        *ret = htons((uint16_t) port);
        return 0;
}

int metrics_parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len) {
        struct sockaddr_storage sa = {};
        struct sockaddr_in *in = (struct sockaddr_in *) &sa;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &sa;
        const char *colon = strrchr(s, ':');
        char host[INET6_ADDRSTRLEN + 2];
        size_t host_len = colon ? (size_t) (colon - s) : 0;

        /* ":9464" means every address to some programs and the loopback to others: the address
         * is asked for rather than guessed. */
        if (colon && (host_len == 0 || host_len >= sizeof(host)))
                return -EINVAL;
        memcpy(host, s, host_len);
        host[host_len] = 0;
        if (!colon || strcmp(host, "localhost") == 0) {
                in->sin_family = AF_INET;
                in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        } else if (inet_pton(AF_INET, host, &in->sin_addr) == 1)
                in->sin_family = AF_INET;
        else if (host_len > 2 && host[0] == '[' && host[host_len - 1] == ']') {
                host[host_len - 1] = 0;
                if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1)
                        return -EINVAL;
                in6->sin6_family = AF_INET6;
        } else
                return -EINVAL;
        /* sin_port and sin6_port lie at the same offset. */
        if (parse_port(colon ? colon + 1 : s, &in->sin_port) < 0)
                return -EINVAL;
        *ret_len = sa.ss_family == AF_INET ? sizeof(*in) : sizeof(*in6);
        *ret = sa;
        return 0;
}

/* ---- The process's own figures (any thread). ---- */

/* Seconds since the epoch when this process started: its start in clock ticks after boot
 * (/proc/self/stat, field 22) plus the time of the boot. */
static double process_start_time(void) {
        struct timespec real, boot;
        unsigned long long ticks = 0;
        char buf[1024], *p;
        FILE *f = fopen("/proc/self/stat", "re");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        int field = 2;

        if (f)
                fclose(f);
        buf[n] = 0;
        clock_gettime(CLOCK_REALTIME, &real);
        clock_gettime(CLOCK_BOOTTIME, &boot);
        /* The command name (field 2) may hold spaces and parentheses: count after its last ')'. */
        p = strrchr(buf, ')');
        while (p && field < 22 && (p = strchr(p + 1, ' ')))
                field++;
        if (!p || sscanf(p, " %llu", &ticks) != 1)
                return (double) real.tv_sec; /* no /proc: near enough, taken at start */
        return (double) (real.tv_sec - boot.tv_sec) + (double) (real.tv_nsec - boot.tv_nsec) / 1e9 +
               (double) ticks / (double) sysconf(_SC_CLK_TCK);
}

void metrics_process_read(MetricsProcess *p) {
        unsigned long long vsz = 0, rss = 0;
        long page = sysconf(_SC_PAGESIZE);
        struct rusage ru;
        struct rlimit rl;
        DIR *dir;
        FILE *f;

        if (getrusage(RUSAGE_SELF, &ru) == 0)
                p->cpu_seconds = (double) ru.ru_utime.tv_sec + (double) ru.ru_stime.tv_sec +
                                 (double) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
        f = fopen("/proc/self/statm", "re");
        if (f) {
                if (fscanf(f, "%llu %llu", &vsz, &rss) != 2)
                        vsz = rss = 0;
                fclose(f);
        }
        p->virtual_bytes = vsz * (uint64_t) page;
        p->resident_bytes = rss * (uint64_t) page;
        p->open_fds = 0;
        dir = opendir("/proc/self/fd");
        if (dir) {
                for (struct dirent *de; (de = readdir(dir));)
                        p->open_fds += de->d_name[0] != '.';
                p->open_fds--; /* the directory's own */
                closedir(dir);
        }
        p->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t) rl.rlim_cur : 0;
}

/* ---- Rendering (any thread). ---- */

static void family(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's samples; `labels` is "" or `key="value",` (kind names and the like are plain
 * identifiers of our own: nothing to escape). */
static void histogram(FILE *f, const char *name, const char *labels, const Histogram *h) {
        size_t len = strlen(labels);
        int inner = (int) (len ? len - 1 : 0); /* without the trailing comma */

        for (unsigned i = 0; i <= h->n_bounds; i++) {
                fprintf(f, "%s_bucket{%s", name, labels);
                if (i < h->n_bounds)
                        fprintf(f, "le=\"%g\"}", h->bounds[i]);
                else
                        fprintf(f, "le=\"+Inf\"}");
                fprintf(f, " %" PRIu64 "\n", histogram_cumulative(h, i));
        }
        fprintf(f, "%s_sum%s%.*s%s %.17g\n", name, len ? "{" : "", inner, labels, len ? "}" : "",
                h->sum);
        fprintf(f, "%s_count%s%.*s%s %" PRIu64 "\n", name, len ? "{" : "", inner, labels,
                len ? "}" : "", h->count);
}

static void by_lane(FILE *f, const char *name, const uint64_t *v) {
        for (unsigned l = 0; l < _LANE_MAX; l++)
                fprintf(f, "%s{pool=\"%s\"} %" PRIu64 "\n", name, lane_names[l], v[l]);
}

int metrics_render(const MetricsSnapshot *s, const MetricsProcess *p, FILE *f) {
        const Counters *c = &s->counters;
        const ExecutorStats *st = &s->stats;
        char labels[128];

        family(f, "futured_build_info", "gauge", "futured's version, in its label; always 1.");
        fprintf(f, "futured_build_info{version=\"%s\"} 1\n", FUTURED_VERSION);

        family(f, "futured_jobs_submitted_total", "counter",
               "Jobs submitted since futured started, by job kind.");
        for (unsigned k = 0; k < c->n_kinds; k++)
                fprintf(f, "futured_jobs_submitted_total{kind=\"%s\"} %" PRIu64 "\n",
                        c->kinds[k]->name, c->submitted[k]);
        family(f, "futured_jobs_finished_total", "counter",
               "Jobs that reached a final state since futured started, by job kind and state.");
        for (unsigned k = 0; k < c->n_kinds; k++)
                for (unsigned i = 0; i < COUNTERS_FINAL; i++)
                        fprintf(f,
                                "futured_jobs_finished_total{kind=\"%s\",state=\"%s\"} %" PRIu64
                                "\n",
                                c->kinds[k]->name, final_names[i], c->finished[k][i]);
        family(f, "futured_jobs_pending", "gauge", "Jobs waiting to start, by pool.");
        by_lane(f, "futured_jobs_pending", c->pending);
        family(f, "futured_jobs_running", "gauge", "Jobs running now, by pool.");
        by_lane(f, "futured_jobs_running", c->running);
        family(f, "futured_job_duration_seconds", "histogram",
               "Run time of the jobs that finished after they started running, by job kind.");
        for (unsigned k = 0; k < c->n_kinds; k++) {
                snprintf(labels, sizeof(labels), "kind=\"%s\",", c->kinds[k]->name);
                histogram(f, "futured_job_duration_seconds", labels, &c->run_seconds[k]);
        }
        family(f, "futured_results_retained", "gauge",
               "Finished jobs whose result is kept until it is released or expires.");
        fprintf(f, "futured_results_retained %" PRIu64 "\n",
                st->n_state[STATE_DONE] + st->n_state[STATE_FAILED] +
                        st->n_state[STATE_CANCELLED]);
        family(f, "futured_worker_deaths_total", "counter",
               "Worker processes that died (killed to cancel or time out a job, or crashed).");
        fprintf(f, "futured_worker_deaths_total %" PRIu64 "\n", st->workers_died);
        family(f, "futured_worker_processes", "gauge", "Worker processes alive now.");
        fprintf(f, "futured_worker_processes %u\n", st->processes_alive);
        family(f, "futured_transfers_in_flight", "gauge",
               "Downloads inside the transfer pool now.");
        fprintf(f, "futured_transfers_in_flight %u\n", st->transfers_running);
        family(f, "futured_deferred_replies", "gauge",
               "Requests (wait, result) waiting for their condition or their timeout.");
        fprintf(f, "futured_deferred_replies %" PRIu64 "\n", st->deferred);
        if (s->durable) {
                family(f, "futured_store_commit_seconds", "histogram",
                       "Time the store thread took to commit one batch of changes.");
                histogram(f, "futured_store_commit_seconds", "", &st->store_stats.commit_seconds);
                family(f, "futured_store_size_bytes", "gauge",
                       "Size of the store's files (database and write-ahead log).");
                fprintf(f, "futured_store_size_bytes %" PRIu64 "\n", st->store_stats.file_bytes);
        }

        family(f, "process_cpu_seconds_total", "counter",
               "User and system CPU time of futured (not of its worker processes).");
        fprintf(f, "process_cpu_seconds_total %.6f\n", p->cpu_seconds);
        family(f, "process_start_time_seconds", "gauge",
               "Start time of the process since the Unix epoch, in seconds.");
        fprintf(f, "process_start_time_seconds %.3f\n", p->start_time);
        family(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        fprintf(f, "process_resident_memory_bytes %" PRIu64 "\n", p->resident_bytes);
        family(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        fprintf(f, "process_virtual_memory_bytes %" PRIu64 "\n", p->virtual_bytes);
        family(f, "process_open_fds", "gauge", "Open file descriptors.");
        fprintf(f, "process_open_fds %" PRIu64 "\n", p->open_fds);
        family(f, "process_max_fds", "gauge", "The limit on open file descriptors.");
        fprintf(f, "process_max_fds %" PRIu64 "\n", p->max_fds);
        return ferror(f) ? -EIO : 0;
}

/* ---- The HTTP thread. ---- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               char *body, size_t len) {
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        enum MHD_Result r;

        if (!resp) {
                free(body);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        r = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
        return r;
}

static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned status, const char *text) {
        char *body = strdup(text);

        return body ? respond(c, status, "text/plain; charset=utf-8", body, strlen(body)) : MHD_NO;
}

/* libmicrohttpd's request handler, on its one thread: copies the published snapshot and renders
 * it; never touches the executor. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
        Metrics *m = cls;
        MetricsSnapshot *s;
        MetricsProcess p = { .start_time = m->start_time };
        char *body = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        /* The answer waits for the whole request (headers, then any body, which is dropped): an
         * answer queued earlier makes libmicrohttpd close the connection instead of keeping it
         * alive for the next scrape. */
        if (!*req_cls) {
                *req_cls = m;
                return MHD_YES;
        }
        if (*upload_data_size) {
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
                return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        if (strcmp(url, "/metrics") != 0)
                return respond_text(c, MHD_HTTP_NOT_FOUND, "not found: the metrics are at "
                                                           "/metrics\n");
        /* On the heap: a snapshot is a few KiB, and this thread's stack is not ours to size. */
        s = malloc(sizeof(*s));
        if (!s)
                return respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        pthread_mutex_lock(&m->lock);
        *s = m->published;
        pthread_mutex_unlock(&m->lock);
        metrics_process_read(&p);
        f = open_memstream(&body, &len);
        r = f ? metrics_render(s, &p, f) : -ENOMEM;
        if (f && fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        free(s);
        if (r < 0) {
                free(body);
                return respond_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        }
        return respond(c, MHD_HTTP_OK, CONTENT_TYPE, body, len);
}

/* A request is answered: the next one on the connection starts afresh. */
static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
        *req_cls = NULL;
}

/* libmicrohttpd's complaints are about clients (resets, bad requests): debug lines. */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt,
                                                              va_list ap) {
        char line[256];

        vsnprintf(line, sizeof(line), fmt, ap);
        line[strcspn(line, "\n")] = 0;
        log_debug("metrics: %s", line);
}

/* ---- The loop thread. ---- */

/* Builds a snapshot of the executor and publishes it. */
static void publish(Metrics *m) {
        m->generation = executor_generation(m->executor);
        executor_counters(m->executor, &m->staging.counters);
        executor_stats(m->executor, &m->staging.stats);
        m->staging.durable = strcmp(m->staging.stats.store, "memory") != 0;
        pthread_mutex_lock(&m->lock);
        m->published = m->staging;
        pthread_mutex_unlock(&m->lock);
}

static void on_publish(Timer *t, uint64_t now) {
        publish(container_of(t, Metrics, publish));
}

void metrics_turn(Metrics *m) {
        if (!m || timer_armed(&m->publish) || executor_generation(m->executor) == m->generation)
                return;
        timer_start(m->timers, &m->publish, timer_now() + METRICS_PUBLISH_MS * 1000000ull);
}

/* Makes the listening socket for `sa`. Returns it or -errno. */
static int listen_on(const struct sockaddr_storage *sa, socklen_t len) {
        int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;

        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        /* [::]:PORT means IPv6 only: an IPv4 address is given as one. */
        if (sa->ss_family == AF_INET6)
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *) sa, len) < 0 || listen(fd, 64) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* "ADDRESS:PORT" of the bound socket `fd` into m->address. */
static void name_address(Metrics *m, int fd) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        char host[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (getsockname(fd, (struct sockaddr *) &sa, &len) == 0) {
                if (sa.ss_family == AF_INET6) {
                        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &sa;
                        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                        port = ntohs(in6->sin6_port);
                } else {
                        struct sockaddr_in *in = (struct sockaddr_in *) &sa;
                        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                        port = ntohs(in->sin_port);
                }
        }
        snprintf(m->address, sizeof(m->address), sa.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
                 host, port);
}

int metrics_new(Metrics **ret, const char *address, Executor *executor, TimerHeap *timers) {
        _cleanup_(metrics_freep) Metrics *m = calloc(1, sizeof(*m));
        struct sockaddr_storage sa;
        socklen_t len;
        int r;

        if (!m)
                return -ENOMEM;
        m->fd = -1;
        m->executor = executor;
        m->timers = timers;
        pthread_mutex_init(&m->lock, NULL);
        r = timer_init(timers, &m->publish, on_publish);
        if (r < 0)
                return r;
        if (metrics_parse_address(address, &sa, &len) < 0) {
                log_error("--metrics: cannot read the address '%s'", address);
                return -EINVAL;
        }
        m->fd = listen_on(&sa, len);
        if (m->fd < 0) {
                r = m->fd;
                log_error("--metrics: cannot listen on %s: %s", address, strerror(-r));
                return r;
        }
        name_address(m, m->fd);
        m->start_time = process_start_time();
        executor_time_runs(executor);
        publish(m);
        m->mhd = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                        (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                0, NULL, NULL, on_request, m, MHD_OPTION_LISTEN_SOCKET, m->fd,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned) METRICS_MAX_CONNECTIONS,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) METRICS_CONNECTION_TIMEOUT_S,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_EXTERNAL_LOGGER,
                on_mhd_log, NULL, MHD_OPTION_END);
        if (!m->mhd) {
                log_error("--metrics: cannot start the HTTP server on %s", m->address);
                return -EIO;
        }
        m->fd = -1; /* libmicrohttpd's now: it closes it when it stops */
        log_info("metrics: serving http://%s/metrics", m->address);
        *ret = TAKE_PTR(m);
        return 0;
}

const char *metrics_address(const Metrics *m) {
        return m->address;
}

Metrics *metrics_free(Metrics *m) {
        if (!m)
                return NULL;
        if (m->mhd)
                MHD_stop_daemon(m->mhd);
        if (m->fd >= 0)
                close(m->fd);
        timer_deinit(m->timers, &m->publish);
        pthread_mutex_destroy(&m->lock);
        free(m);
        return NULL;
}
