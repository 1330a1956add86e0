/* futured: the daemon's command line. Parses the options into a DaemonConfig, blocks the signals
 * the loop reads through signalfd (before any thread exists, so every thread inherits the mask),
 * and runs the loop. Runs in the foreground: systemd, or the shell, supervises it.
 *
 * Settings come from the defaults, then the configuration file (daemon/conffile.c), then the
 * command line, which wins; a reload (SIGHUP) goes through the same steps again. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conffile.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "macro.h"
#include "notify.h"
#include "proto.h"

static void help(void) {
        printf("Usage: futured [OPTIONS]\n\n"
               "concurrent.futures as a system service: runs jobs submitted over ZeroMQ in a\n"
               "thread pool (blocking kinds), a transfer thread (downloads, all on one libcurl\n"
               "multi handle) and a process pool (CPU-bound kinds).\n\n"
               "  --listen ENDPOINT           ZeroMQ endpoint for clients (repeatable; default\n"
               "                              ipc://$XDG_RUNTIME_DIR/futured/futured.sock, or\n"
               "                              ipc:///run/futured/futured.sock as root)\n"
               "  --events ENDPOINT           PUB endpoint for events (default: events.sock\n"
               "                              beside the first ipc:// listen socket)\n"
               "  --threads N                 thread-pool size (default min(32, ncpu + 4))\n"
               "  --prefetch N                thread jobs queued inside the pool beyond its\n"
               "                              threads, for throughput (default 3 per thread;\n"
               "                              0: strict priority order)\n"
               "  --spin-us N                 an idle pool thread, and the loop after a busy\n"
               "                              turn, look for new work this long before they\n"
               "                              sleep (default 200; 0: sleep at once)\n"
               "  --transfers N               downloads run at once by the transfer thread\n"
               "                              (default 1024; fewer if RLIMIT_NOFILE is low)\n"
               "  --processes N               process-pool size (default ncpu)\n"
               "  --max-tasks-per-worker N    replace a worker process after N jobs (default 0:\n"
               "                              never)\n"
               "  --retain SECONDS            keep finished results this long (default 3600)\n"
               "  --max-retained N            finished results kept before a submit is refused\n"
               "                              with retained_full (default 1000000; 0: no limit)\n"
               "  --max-retained-bytes N      ... and the bytes of those results (default\n"
               "                              268435456, 256 MiB; 0: no limit)\n"
               "  --max-deferred N            deferred replies (wait, result, results, submit\n"
               "                              with reply results) of all clients together\n"
               "                              (default 100000; 0: no limit)\n"
               "  --max-deferred-ids N        ... and the IDs they wait on (default 2000000)\n"
               "  --max-reply-bytes N         reply bytes queued for a client that does not read\n"
               "                              them, past which it gets reply_backlog instead\n"
               "                              (default 67108864, 64 MiB; 0: no limit)\n"
               "  --max-queued-requests N     requests of one connection that ZeroMQ queues\n"
               "                              before it stops reading it (default 256)\n"
               "  --max-connections N         client connections at once before every endpoint\n"
               "                              is closed for a while (default 0: as many as the\n"
               "                              open-file limit allows)\n"
               "  --grace SECONDS             at SIGTERM, let running jobs finish this long\n"
               "                              (default 10)\n"
               "  --worker PATH               the futured-worker executable\n"
               "  --download-dir DIR          where download jobs with a 'path' write (default:\n"
               "                              none; such jobs are refused)\n"
               "  --download-allow CIDR       downloads may connect to this network (repeatable;\n"
               "                              lifts a built-in denial, e.g. 127.0.0.0/8)\n"
               "  --download-deny CIDR        downloads may not connect to it (repeatable; built\n"
               "                              in: loopback, link-local, unspecified; the longest\n"
               "                              prefix decides)\n"
               "  --store sqlite|memory|URI   keep every job in an SQLite file in the state\n"
               "                              directory, across restarts (default), in memory\n"
               "                              only, or in PostgreSQL (a postgresql:// URI\n"
               "                              without a password; docs/CLUSTER.md)\n"
"  --cluster[=yes|no]          share the postgresql store with other futured nodes\n"
               "                              (docs/CLUSTER.md)\n"
               "  --lease SECONDS             cluster: a node silent this long loses its running\n"
               "                              jobs to the others (default 10)\n"
               "  --state-dir DIR             where the store lives (default $STATE_DIRECTORY,\n"
               "                              /var/lib/futured as root, else\n"
               "                              $XDG_STATE_HOME/futured or ~/.local/state/futured)\n"
               "  --sync normal|full          normal: a commit survives a crash of futured;\n"
               "                              full: also a power loss (slower)\n"
               "  --socket-mode MODE          octal mode of the ipc:// socket files futured makes\n"
               "                              (default 0660), whatever the umask\n"
               "  --socket-group GROUP        their group (default: futured's own)\n"
               "  --curve-secret-key FILE     the daemon's CURVE key pair (futurectl keygen);\n"
               "                              required to serve tcp:// endpoints\n"
               "  --curve-allow FILE          client public keys admitted over CURVE, one a line\n"
               "                              (reread at SIGHUP; default: none)\n"
               "  --quota-pending N           unfinished jobs one principal (a uid on ipc://, a\n"
               "                              CURVE key on tcp://) may have (default 250000)\n"
               "  --quota-running N           its jobs running at once; more wait (default 0:\n"
               "                              no cap, principals take turns anyway)\n"
               "  --quota-retained N          its finished results retained plus unfinished jobs\n"
               "                              (default 500000)\n"
               "  --quota-deferred N          its deferred replies, all its clients together\n"
               "                              (default 4000); 0 for any quota: none\n"
               "  --quota-download-bytes N    body bytes its running downloads hold at once\n"
               "                              (default 268435456); a download past it fails\n"
               "                              with download_quota; 0: none\n"
               "  --metrics [ADDRESS:]PORT    serve Prometheus metrics at\n"
               "                              http://ADDRESS:PORT/metrics (default: none;\n"
               "                              ADDRESS 127.0.0.1 unless given: an IPv4\n"
               "                              address or [IPv6])\n"
               "  --log-level LEVEL           err, warning, notice, info (default) or debug\n"
               "  --config PATH               the configuration file (default\n"
               "                              " FUTURED_SYSCONFDIR "/futured/futured.conf)\n"
               "  --check-config              print every effective setting and exit\n"
               "  -h, --help                  show this help\n"
               "  --version                   show the version\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v > max)
                return -EINVAL;
        *ret = (uint64_t) v;
        return 0;
}

static int parse_uint(const char *s, unsigned max, unsigned *ret) {
        uint64_t v;
        int r = parse_u64(s, max, &v);

        if (r >= 0)
                *ret = (unsigned) v;
        return r;
}

static int parse_seconds(const char *s, double *ret) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno || end == s || *end || !(v >= 0) || v > 1e9)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* events.sock beside the first ipc:// listen endpoint. Without one there is no good default (a
 * socket in /tmp is invisible under PrivateTmp=): NULL with errno EINVAL, and --events is
 * required. */
static char *default_events(const DaemonConfig *cfg) {
        char *s;

        for (size_t i = 0; i < cfg->n_listen; i++)
                if (strncmp(cfg->listen[i], "ipc://", 6) == 0) {
                        const char *slash = strrchr(cfg->listen[i], '/');
                        if (asprintf(&s, "%.*sevents.sock", (int) (slash - cfg->listen[i] + 1),
                                     cfg->listen[i]) < 0)
                                return NULL;
                        return s;
                }
        errno = EINVAL;
        return NULL;
}

/* futured-worker beside futured when installed, or in ../workers/ in a build tree. */
static char *default_worker(void) {
        char self[PATH_MAX], *slash, *s;
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        if (n > 0) {
                self[n] = 0;
                slash = strrchr(self, '/');
                *slash = 0;
                if (asprintf(&s, "%s/../workers/futured-worker", self) >= 0) {
                        if (access(s, X_OK) == 0)
                                return s;
                        free(s);
                }
                if (asprintf(&s, "%s/futured-worker", self) >= 0) {
                        if (access(s, X_OK) == 0)
                                return s;
                        free(s);
                }
        }
        return strdup(FUTURED_LIBEXECDIR "/futured-worker");
}

enum {
        ARG_LISTEN = 0x100,
        ARG_EVENTS,
        ARG_THREADS,
        ARG_PREFETCH,
        ARG_SPIN,
        ARG_TRANSFERS,
        ARG_PROCESSES,
        ARG_MAX_TASKS,
        ARG_RETAIN,
        ARG_GRACE,
        ARG_MAX_CONNECTIONS,
        ARG_MAX_RETAINED,
        ARG_MAX_QUEUED,
        ARG_MAX_REPLY_BYTES,
        ARG_MAX_DEFERRED,
        ARG_MAX_DEFERRED_IDS,
        ARG_MAX_RETAINED_BYTES,
        ARG_WORKER,
        ARG_DOWNLOAD_DIR,
        ARG_DOWNLOAD_ALLOW,
        ARG_DOWNLOAD_DENY,
        ARG_STORE,
        ARG_STATE_DIR,
        ARG_SYNC,
        ARG_VERSION,
        ARG_LOG_LEVEL,
        ARG_CONFIG,
        ARG_CHECK_CONFIG,
        ARG_SOCKET_MODE,
        ARG_SOCKET_GROUP,
        ARG_CURVE_SECRET_KEY,
        ARG_CURVE_ALLOW,
        ARG_QUOTA_PENDING,
        ARG_QUOTA_RUNNING,
        ARG_QUOTA_RETAINED,
        ARG_QUOTA_DEFERRED,
        ARG_QUOTA_DOWNLOAD_BYTES,
        ARG_METRICS,
        ARG_CLUSTER,
        ARG_LEASE,
};

/* The options; those with an argument, but --config, are also the keys of the config file. */
static const struct option options[] = {
        { "listen", required_argument, NULL, ARG_LISTEN },
        { "events", required_argument, NULL, ARG_EVENTS },
        { "threads", required_argument, NULL, ARG_THREADS },
        { "prefetch", required_argument, NULL, ARG_PREFETCH },
        { "spin-us", required_argument, NULL, ARG_SPIN },
        { "transfers", required_argument, NULL, ARG_TRANSFERS },
        { "processes", required_argument, NULL, ARG_PROCESSES },
        { "max-tasks-per-worker", required_argument, NULL, ARG_MAX_TASKS },
        { "retain", required_argument, NULL, ARG_RETAIN },
        { "grace", required_argument, NULL, ARG_GRACE },
        { "max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS },
        { "max-queued-requests", required_argument, NULL, ARG_MAX_QUEUED },
        { "max-reply-bytes", required_argument, NULL, ARG_MAX_REPLY_BYTES },
        { "max-deferred", required_argument, NULL, ARG_MAX_DEFERRED },
        { "max-deferred-ids", required_argument, NULL, ARG_MAX_DEFERRED_IDS },
        { "max-retained", required_argument, NULL, ARG_MAX_RETAINED },
        { "max-retained-bytes", required_argument, NULL, ARG_MAX_RETAINED_BYTES },
        { "worker", required_argument, NULL, ARG_WORKER },
        { "download-dir", required_argument, NULL, ARG_DOWNLOAD_DIR },
        { "download-allow", required_argument, NULL, ARG_DOWNLOAD_ALLOW },
        { "download-deny", required_argument, NULL, ARG_DOWNLOAD_DENY },
        { "store", required_argument, NULL, ARG_STORE },
        { "state-dir", required_argument, NULL, ARG_STATE_DIR },
        { "sync", required_argument, NULL, ARG_SYNC },
        { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
        { "socket-mode", required_argument, NULL, ARG_SOCKET_MODE },
        { "socket-group", required_argument, NULL, ARG_SOCKET_GROUP },
        { "curve-secret-key", required_argument, NULL, ARG_CURVE_SECRET_KEY },
        { "curve-allow", required_argument, NULL, ARG_CURVE_ALLOW },
        { "quota-pending", required_argument, NULL, ARG_QUOTA_PENDING },
        { "quota-running", required_argument, NULL, ARG_QUOTA_RUNNING },
        { "quota-retained", required_argument, NULL, ARG_QUOTA_RETAINED },
        { "quota-deferred", required_argument, NULL, ARG_QUOTA_DEFERRED },
        { "quota-download-bytes", required_argument, NULL, ARG_QUOTA_DOWNLOAD_BYTES },
        { "metrics", required_argument, NULL, ARG_METRICS },
        { "cluster", optional_argument, NULL, ARG_CLUSTER },
        { "lease", required_argument, NULL, ARG_LEASE },
        { "config", required_argument, NULL, ARG_CONFIG },
        { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION },
        {},
};

static const char *arg_config = FUTURED_SYSCONFDIR "/futured/futured.conf";
static bool arg_config_given;
static bool arg_check_config;
static int saved_argc;
static char **saved_argv;

/* The defaults that depend on the machine. */
static void config_defaults(DaemonConfig *cfg) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

        if (ncpu < 1)
                ncpu = 1;
        cfg->threads = (unsigned) MIN(32, ncpu + 4);
        cfg->processes = (unsigned) ncpu;
        cfg->transfers = DEFAULT_TRANSFERS;
        cfg->spin_us = DEFAULT_SPIN_US;
        cfg->retain = 3600;
        cfg->max_queued = PROTO_DEFAULT_MAX_QUEUED;
        cfg->max_reply_bytes = BACKLOG_DEFAULT_MAX_BYTES;
        cfg->max_deferred = PROTO_DEFAULT_MAX_DEFERRED_TOTAL;
        cfg->max_deferred_ids = PROTO_DEFAULT_MAX_DEFERRED_IDS;
        cfg->max_retained = PROTO_DEFAULT_MAX_RETAINED;
        cfg->max_retained_bytes = PROTO_DEFAULT_MAX_RETAINED_BYTES;
        cfg->grace = 10;
        cfg->store = STORE_SQLITE;
        cfg->lease = 10;
        cfg->sync = STORE_SYNC_NORMAL;
        cfg->log_level = LOG_INFO;
        cfg->socket_mode = ENDPOINT_DEFAULT_MODE;
        cfg->quota_pending = DEFAULT_QUOTA_PENDING;
        cfg->quota_running = DEFAULT_QUOTA_RUNNING;
        cfg->quota_retained = DEFAULT_QUOTA_RETAINED;
        cfg->quota_deferred = DEFAULT_QUOTA_DEFERRED;
        cfg->quota_download_bytes = DEFAULT_QUOTA_DOWNLOAD_BYTES;
}

/* The state directory when --state-dir is not given: systemd's $STATE_DIRECTORY (its first
 * entry), else /var/lib/futured as root, else $XDG_STATE_HOME/futured or
 * ~/.local/state/futured. NULL on ENOMEM or without a home. */
static char *default_state_dir(void) {
        const char *s = getenv("STATE_DIRECTORY"), *home;
        char *dir;

        if (s && s[0] == '/')
                return strndup(s, strcspn(s, ":"));
        if (geteuid() == 0)
                return strdup("/var/lib/futured");
        s = getenv("XDG_STATE_HOME");
        if (s && s[0] == '/')
                return asprintf(&dir, "%s/futured", s) < 0 ? NULL : dir;
        home = getenv("HOME");
        if (!home || home[0] != '/')
                return NULL;
        return asprintf(&dir, "%s/.local/state/futured", home) < 0 ? NULL : dir;
}

/* mkdir -p with mode 0700 for what it creates. Returns 0 or -errno. */
static int make_dirs(const char *path) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *slash = p + 1; (slash = strchr(slash, '/')); slash++) {
                *slash = 0;
                if (mkdir(p, 0700) < 0 && errno != EEXIST)
                        return -errno;
                *slash = '/';
        }
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* Replaces the string option `*slot` with a copy of `value`. Returns 0 or -ENOMEM. */
static int set_string(char **slot, const char *value) {
        char *copy = strdup(value);

        if (!copy)
                return -ENOMEM;
        free(*slot);
        *slot = copy;
        return 0;
}

/* set_string(), or unset for an empty `value`. */
static int set_optional(char **slot, const char *value) {
        if (!value[0]) {
                *slot = mfree(*slot);
                return 0;
        }
        return set_string(slot, value);
}

/* Applies one option `c` with `arg` to `cfg`: a ConffileSetFn. Returns 0; -EINVAL with *ret_why
 * saying what the value should be; or -ENOMEM. */
static int parse_option(int c, const char *arg, DaemonConfig *cfg, const char **ret_why) {
        const char *bad = NULL;
        int level;

        switch (c) {
        case ARG_LISTEN: {
                char **l = realloc(cfg->listen, (cfg->n_listen + 1) * sizeof(char *));
                if (!l)
                        return -ENOMEM;
                cfg->listen = l;
                if (!(cfg->listen[cfg->n_listen] = strdup(arg)))
                        return -ENOMEM;
                cfg->n_listen++;
                return 0;
        }
        case ARG_EVENTS:
                return set_string(&cfg->events, arg);
        case ARG_WORKER:
                return set_string(&cfg->worker_path, arg);
        case ARG_DOWNLOAD_DIR:
                return set_string(&cfg->download_dir, arg);
        case ARG_DOWNLOAD_ALLOW:
        case ARG_DOWNLOAD_DENY:
                return netpolicy_add(&cfg->download_net, arg, c == ARG_DOWNLOAD_ALLOW, ret_why);
        case ARG_STATE_DIR:
                return set_string(&cfg->state_dir, arg);
        /* These three may be empty (as --check-config prints them unset): not given. */
        case ARG_SOCKET_GROUP:
                return set_optional(&cfg->socket_group, arg);
        case ARG_CURVE_SECRET_KEY:
                return set_optional(&cfg->curve_secret_key, arg);
        case ARG_CURVE_ALLOW:
                return set_optional(&cfg->curve_allow, arg);
        case ARG_QUOTA_PENDING:
        case ARG_QUOTA_RUNNING:
        case ARG_QUOTA_RETAINED:
        case ARG_QUOTA_DEFERRED: {
                unsigned *slot = c == ARG_QUOTA_PENDING    ? &cfg->quota_pending
                                 : c == ARG_QUOTA_RUNNING  ? &cfg->quota_running
                                 : c == ARG_QUOTA_RETAINED ? &cfg->quota_retained
                                                           : &cfg->quota_deferred;
                if (parse_uint(arg, PROTO_MAX_PENDING, slot) < 0)
                        bad = "a quota is a number from 0 (none) to 1000000";
                break;
        }
        case ARG_SOCKET_MODE: {
                char *end;
                unsigned long v;
                errno = 0;
                v = strtoul(arg, &end, 8);
                if (errno || end == arg || *end || arg[0] == '-' || v > 0777)
                        bad = "--socket-mode takes an octal mode from 0 to 0777";
                else
                        cfg->socket_mode = (unsigned) v;
                break;
        }
        case ARG_STORE:
                if (strcmp(arg, "sqlite") == 0)
                        cfg->store = STORE_SQLITE;
                else if (strcmp(arg, "memory") == 0)
                        cfg->store = STORE_MEMORY;
                else if (strncmp(arg, "postgresql://", 13) == 0 ||
                         strncmp(arg, "postgres://", 11) == 0) {
                        cfg->store = STORE_POSTGRESQL;
                        return set_string(&cfg->store_uri, arg);
                } else
                        bad = "--store takes sqlite, memory or a postgresql:// URI";
                break;
        case ARG_CLUSTER:
                if (!arg || strcmp(arg, "yes") == 0 || strcmp(arg, "true") == 0)
                        cfg->cluster = true;
                else if (strcmp(arg, "no") == 0 || strcmp(arg, "false") == 0)
                        cfg->cluster = false;
                else
                        bad = "--cluster takes yes or no";
                break;
        case ARG_LEASE:
                if (parse_seconds(arg, &cfg->lease) < 0 || cfg->lease < 0.3 || cfg->lease > 3600)
                        bad = "--lease takes a number of seconds from 0.3 to 3600";
                break;
        case ARG_SYNC:
                if (strcmp(arg, "normal") == 0)
                        cfg->sync = STORE_SYNC_NORMAL;
                else if (strcmp(arg, "full") == 0)
                        cfg->sync = STORE_SYNC_FULL;
                else
                        bad = "--sync takes normal or full";
                break;
        case ARG_THREADS:
                if (parse_uint(arg, 1024, &cfg->threads) < 0 || cfg->threads == 0)
                        bad = "--threads takes a number from 1 to 1024";
                break;
        case ARG_PREFETCH:
                if (parse_uint(arg, 65536, &cfg->prefetch) < 0)
                        bad = "--prefetch takes a number from 0 to 65536";
                cfg->prefetch_set = true;
                break;
        case ARG_SPIN:
                if (parse_uint(arg, 1000000, &cfg->spin_us) < 0)
                        bad = "--spin-us takes a number of microseconds from 0 to 1000000";
                break;
        case ARG_TRANSFERS:
                if (parse_uint(arg, MAX_TRANSFERS, &cfg->transfers) < 0 || cfg->transfers == 0)
                        bad = "--transfers takes a number from 1 to 65536";
                break;
        case ARG_PROCESSES:
                /* 0 is for a node of a cluster that leaves CPU-bound kinds to others. */
                if (parse_uint(arg, 1024, &cfg->processes) < 0)
                        bad = "--processes takes a number from 1 to 1024";
                break;
        case ARG_MAX_TASKS:
                if (parse_uint(arg, UINT_MAX, &cfg->max_tasks) < 0)
                        bad = "--max-tasks-per-worker takes a number (0: no limit)";
                break;
        case ARG_RETAIN:
                if (parse_seconds(arg, &cfg->retain) < 0)
                        bad = "--retain takes a number of seconds";
                break;
        case ARG_GRACE:
                if (parse_seconds(arg, &cfg->grace) < 0)
                        bad = "--grace takes a number of seconds";
                break;
        case ARG_METRICS: {
                struct sockaddr_storage sa;
                socklen_t len;
                if (!*arg) { /* none: an empty value turns off what the file asked for */
                        cfg->metrics = mfree(cfg->metrics);
                        return 0;
                }
                if (metrics_parse_address(arg, &sa, &len) < 0) {
                        bad = "--metrics takes PORT or ADDRESS:PORT (ADDRESS: localhost, an IPv4 "
                              "address or [an IPv6 address]; PORT: 0 to 65535)";
                        break;
                }
                return set_string(&cfg->metrics, arg);
        }
        case ARG_MAX_CONNECTIONS:
                if (parse_u64(arg, 1u << 30, &cfg->max_connections) < 0)
                        bad = "--max-connections takes a number (0: what the open-file limit "
                              "allows)";
                break;
        case ARG_MAX_QUEUED:
                if (parse_uint(arg, 1000000, &cfg->max_queued) < 0 || cfg->max_queued == 0)
                        bad = "--max-queued-requests takes a number from 1 to 1000000";
                break;
        case ARG_MAX_REPLY_BYTES:
                if (parse_u64(arg, UINT64_MAX, &cfg->max_reply_bytes) < 0)
                        bad = "--max-reply-bytes takes a number of bytes (0: no limit)";
                break;
        case ARG_MAX_DEFERRED:
                if (parse_u64(arg, UINT64_MAX, &cfg->max_deferred) < 0)
                        bad = "--max-deferred takes a number of replies (0: no limit)";
                break;
        case ARG_MAX_DEFERRED_IDS:
                if (parse_u64(arg, UINT64_MAX, &cfg->max_deferred_ids) < 0)
                        bad = "--max-deferred-ids takes a number of IDs (0: no limit)";
                break;
        case ARG_MAX_RETAINED:
                if (parse_u64(arg, UINT64_MAX, &cfg->max_retained) < 0)
                        bad = "--max-retained takes a number of results (0: no limit)";
                break;
        case ARG_QUOTA_DOWNLOAD_BYTES:
                if (parse_u64(arg, UINT64_MAX, &cfg->quota_download_bytes) < 0)
                        bad = "--quota-download-bytes takes a number of bytes (0: no quota)";
                break;
        case ARG_MAX_RETAINED_BYTES:
                if (parse_u64(arg, UINT64_MAX, &cfg->max_retained_bytes) < 0)
                        bad = "--max-retained-bytes takes a number of bytes (0: no limit)";
                break;
        case ARG_LOG_LEVEL:
                level = log_level_from_string(arg);
                if (level < 0)
                        bad = "--log-level takes err, warning, notice, info or debug";
                else
                        cfg->log_level = level;
                break;
        }
        if (bad) {
                *ret_why = bad;
                return -EINVAL;
        }
        return 0;
}

/* Fills in what no option gave: the endpoints and the worker. Returns 0 or -ENOMEM. */
static int config_complete(DaemonConfig *cfg) {
        if (cfg->n_listen == 0) {
                cfg->listen = calloc(1, sizeof(char *));
                if (!cfg->listen || !(cfg->listen[0] = proto_default_endpoint()))
                        return -ENOMEM;
                cfg->n_listen = 1;
        }
        if (!cfg->events && !(cfg->events = default_events(cfg))) {
                if (errno == EINVAL)
                        fprintf(stderr, "futured: no --listen endpoint is ipc://: --events is "
                                        "required\n");
                return -errno;
        }
        const char *endpoints[] = { cfg->events };
        if (endpoint_check_keys((const char *const *) cfg->listen, cfg->n_listen,
                                cfg->curve_secret_key) < 0 ||
            endpoint_check_keys(endpoints, 1, cfg->curve_secret_key) < 0)
                return -EINVAL;
        if (!cfg->worker_path && !(cfg->worker_path = default_worker()))
                return -ENOMEM;
        if (!cfg->prefetch_set)
                cfg->prefetch = 3 * cfg->threads;
        if (cfg->cluster && cfg->store != STORE_POSTGRESQL) {
                fprintf(stderr, "futured: --cluster needs --store postgresql://... (the nodes "
                                "share that database)\n");
                return -EINVAL;
        }
        if (cfg->processes == 0 && !cfg->cluster) {
                fprintf(stderr, "futured: --processes 0 is for a node of a cluster (--cluster): "
                                "alone, CPU-bound jobs would never run\n");
                return -EINVAL;
        }
        if (cfg->store == STORE_SQLITE) {
                int r;
                if (!cfg->state_dir && !(cfg->state_dir = default_state_dir())) {
                        fprintf(stderr, "futured: no state directory: give --state-dir, or "
                                        "--store memory\n");
                        return -EINVAL;
                }
                r = make_dirs(cfg->state_dir);
                if (r < 0) {
                        fprintf(stderr, "futured: cannot make the state directory %s: %s\n",
                                cfg->state_dir, strerror(-r));
                        return -EINVAL;
                }
        }
        return 0;
}

/* Reads the configuration: the defaults, the file, then the command line (which wins; its
 * first --listen replaces the file's). Returns 0, or -EINVAL / -ENOENT / -ENOMEM after printing
 * why. Exits for --help and --version. Runs at start and at every reload. */
static int parse_argv(int argc, char **argv, DaemonConfig *cfg) {
        bool listen_given = false;
        const char *why;
        int c, r;

        config_defaults(cfg);
        /* First the options that say which file to read, or that end at once. */
        optind = 0;
        opterr = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        exit(EXIT_SUCCESS);
                case ARG_VERSION:
                        printf("futured %s\n", FUTURED_VERSION);
                        exit(EXIT_SUCCESS);
                case ARG_CONFIG:
                        arg_config = optarg;
                        arg_config_given = true;
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = true;
                        break;
                case '?':
                        fprintf(stderr, "Try 'futured --help'.\n");
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "futured: unexpected argument '%s'\nTry 'futured --help'.\n",
                        argv[optind]);
                return -EINVAL;
        }
        r = conffile_load(arg_config, arg_config_given, options, parse_option, cfg);
        if (r < 0)
                return r;
        optind = 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                if (c == ARG_CONFIG || c == ARG_CHECK_CONFIG)
                        continue;
                if (c == ARG_LISTEN && !listen_given) {
                        listen_given = true;
                        for (size_t i = 0; i < cfg->n_listen; i++)
                                free(cfg->listen[i]);
                        cfg->n_listen = 0;
                }
                r = parse_option(c, optarg, cfg, &why);
                if (r == -EINVAL)
                        fprintf(stderr, "futured: %s, not '%s'\n", why, optarg);
                if (r < 0)
                        return r;
        }
        r = config_complete(cfg);
        if (r >= 0)
                r = conffile_check_paths(cfg);
        return r;
}

/* A transfer holds a socket and, for a file download, the file, and every client connection a
 * socket: raise the soft limit on open files to the hard one (select() is never used here, so a
 * high limit is safe; the connection budget, listener.h, is what is left), and run fewer
 * transfers at once if even that is short. */
static void fit_open_files(DaemonConfig *cfg) {
        struct rlimit rl;
        rlim_t want;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        want = (rlim_t) cfg->transfers * 2 + 256;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
                (void) getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur < want) {
                unsigned fit = rl.rlim_cur > 512 ? (unsigned) ((rl.rlim_cur - 256) / 2) : 128;
                if (fit < cfg->transfers) {
                        fprintf(stderr, "futured: the open-file limit is %llu: running at most %u "
                                        "transfers at once instead of %u\n",
                                (unsigned long long) rl.rlim_cur, fit, cfg->transfers);
                        cfg->transfers = fit;
                }
        }
}

/* SIGHUP: the file and the command line again. Runs on the loop thread. */
static int reload_config(const DaemonConfig *old, DaemonConfig *ret) {
        DaemonConfig cfg = {};
        int r = parse_argv(saved_argc, saved_argv, &cfg);

        if (r < 0) {
                daemon_config_free(&cfg);
                return r;
        }
        fit_open_files(&cfg);
        conffile_warn_restart_only(old, &cfg);
        *ret = cfg;
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        DaemonConfig cfg = {};
        sigset_t mask;
        int r;

        setvbuf(stderr, NULL, _IOLBF, 0);
        log_open();
        saved_argc = argc;
        saved_argv = argv;
        r = parse_argv(argc, argv, &cfg);
        if (r < 0) {
                if (r == -ENOMEM)
                        fprintf(stderr, "futured: out of memory\n");
                daemon_config_free(&cfg);
                return 2;
        }
        fit_open_files(&cfg);
        if (arg_check_config) {
                conffile_dump(&cfg, stdout);
                daemon_config_free(&cfg);
                return 0;
        }
        log_set_max_level(cfg.log_level);
        /* Before any thread or worker exists: none may inherit NOTIFY_SOCKET or LISTEN_FDS. */
        if (notify_take_environment() < 0) {
                daemon_config_free(&cfg);
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        daemon_signals(&mask);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = daemon_new(&d, &cfg);
        if (r < 0)
                /* EINVAL: the configuration is wrong; a store that must not be used
                 * (damaged, newer, taken) too: exit 2, which a service manager does not
                 * restart. */
                return r == -EINVAL || r == -EBADMSG || r == -EPROTO || r == -EBUSY ||
                                       r == -EACCES
                               ? 2
                               : 1;
        d->reload = reload_config;
        log_info("%s: listening on %s, events on %s, %u threads, %u transfers, %u processes",
                 FUTURED_VERSION, d->cfg.listen[0], d->cfg.events, d->cfg.threads,
                 d->cfg.transfers, d->cfg.processes);
        notify_ready();
        r = daemon_run(d);
        if (r < 0) {
                log_error("the event loop failed: %s", strerror(-r));
                return 1;
        }
        log_info("stopped");
        return 0;
}
