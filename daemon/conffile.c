/* conffile: see conffile.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conffile.h"
#include "log.h"
#include "macro.h"

typedef struct Parse {
        const struct option *options;
        ConffileSetFn set;
        DaemonConfig *cfg;
        bool listen_seen;    /* the file's first `listen` replaces the default list */
        int error;           /* the first error: 0, -EINVAL or -ENOMEM */
        char key[64];        /* ... its key */
        char why[256];       /* ... and what was expected */
} Parse;

static void parse_fail(Parse *p, int error, const char *key, const char *why, const char *value) {
        if (p->error)
                return;
        p->error = error;
        snprintf(p->key, sizeof(p->key), "%s", key);
        if (value)
                snprintf(p->why, sizeof(p->why), "%s, not '%s'", why, value);
        else
                snprintf(p->why, sizeof(p->why), "%s", why);
}

/* inih's handler: returns 0 to have ini_parse() report this line as its first error. */
static int on_key(void *userdata, const char *section, const char *name, const char *value) {
        Parse *p = userdata;
        const char *why = NULL;
        int r;

        if (p->error)
                return 1; /* the first error is the one reported */
        if (strcmp(section, "futured") != 0) {
                parse_fail(p, -EINVAL, name, "expected the one section [futured]", NULL);
                return 0;
        }
        for (const struct option *o = p->options; o->name; o++) {
                if (strcmp(o->name, name) != 0 || o->has_arg == no_argument ||
                    strcmp(name, "config") == 0)
                        continue;
                if (strcmp(name, "listen") == 0 && !p->listen_seen) {
                        p->listen_seen = true;
                        for (size_t i = 0; i < p->cfg->n_listen; i++)
                                free(p->cfg->listen[i]);
                        p->cfg->n_listen = 0;
                }
                r = p->set(o->val, value, p->cfg, &why);
                if (r < 0) {
                        parse_fail(p, r, name, why ? why : strerror(-r), value);
                        return 0;
                }
                return 1;
        }
        parse_fail(p, -EINVAL, name,
                   "expected one of futured's long options (see futured.conf(5))", NULL);
        return 0;
}

int conffile_load(const char *path, bool must_exist, const struct option *options, ConffileSetFn set,
                DaemonConfig *cfg) {
        Parse p = { .options = options, .set = set, .cfg = cfg };
        int line;

        if (!must_exist && access(path, F_OK) < 0 && errno == ENOENT)
                return 0;
        line = ini_parse(path, on_key, &p);
        if (line < 0) {
                log_error("cannot read %s: %s", path,
                          line == -1 ? strerror(errno) : "out of memory");
                return line == -1 ? (errno ? -errno : -EIO) : -ENOMEM;
        }
        if (line == 0 && !p.error)
                return 0;
        if (!p.error) /* a line that is neither a section, a key = value nor a comment */
                log_error("%s:%d: expected 'key = value', '[futured]' or a comment", path, line);
        else
                log_error("%s:%d: %s: %s", path, line, p.key, p.why);
        return p.error == -ENOMEM ? -ENOMEM : -EINVAL;
}

void conffile_dump(const DaemonConfig *cfg, FILE *f) {
        fprintf(f, "[futured]\n");
        for (size_t i = 0; i < cfg->n_listen; i++)
                fprintf(f, "listen = %s\n", cfg->listen[i]);
        fprintf(f, "events = %s\n", cfg->events ? cfg->events : "");
        fprintf(f, "threads = %u\n", cfg->threads);
        fprintf(f, "prefetch = %u\n", cfg->prefetch);
        fprintf(f, "spin-us = %u\n", cfg->spin_us);
        fprintf(f, "transfers = %u\n", cfg->transfers);
        fprintf(f, "processes = %u\n", cfg->processes);
        fprintf(f, "max-tasks-per-worker = %u\n", cfg->max_tasks);
        fprintf(f, "retain = %g\n", cfg->retain);
        fprintf(f, "grace = %g\n", cfg->grace);
        fprintf(f, "max-queued-requests = %u\n", cfg->max_queued);
        fprintf(f, "max-reply-bytes = %" PRIu64 "\n", cfg->max_reply_bytes);
        fprintf(f, "max-deferred = %" PRIu64 "\n", cfg->max_deferred);
        fprintf(f, "max-deferred-ids = %" PRIu64 "\n", cfg->max_deferred_ids);
        fprintf(f, "max-connections = %" PRIu64 "\n", cfg->max_connections);
        fprintf(f, "max-retained = %" PRIu64 "\n", cfg->max_retained);
        fprintf(f, "max-retained-bytes = %" PRIu64 "\n", cfg->max_retained_bytes);
        fprintf(f, "worker = %s\n", cfg->worker_path ? cfg->worker_path : "");
        fprintf(f, "download-dir = %s\n", cfg->download_dir ? cfg->download_dir : "");
        for (size_t i = 0; i < cfg->download_net.n_rules; i++) {
                const NetRule *rule = &cfg->download_net.rules[i];
                fprintf(f, "download-%s = %s\n", rule->allow ? "allow" : "deny", rule->text);
        }
        fprintf(f, "store = %s\n", cfg->store == STORE_POSTGRESQL ? cfg->store_uri
                                                                 : store_kind_to_string(cfg->store));
        fprintf(f, "cluster = %s\n", cfg->cluster ? "yes" : "no");
        fprintf(f, "lease = %g\n", cfg->lease);
        fprintf(f, "state-dir = %s\n", cfg->state_dir ? cfg->state_dir : "");
        fprintf(f, "sync = %s\n", cfg->sync == STORE_SYNC_FULL ? "full" : "normal");
        fprintf(f, "log-level = %s\n", log_level_to_string(cfg->log_level));
        fprintf(f, "socket-mode = %04o\n", cfg->socket_mode);
        fprintf(f, "socket-group = %s\n", cfg->socket_group ? cfg->socket_group : "");
        fprintf(f, "curve-secret-key = %s\n", cfg->curve_secret_key ? cfg->curve_secret_key : "");
        fprintf(f, "curve-allow = %s\n", cfg->curve_allow ? cfg->curve_allow : "");
        fprintf(f, "quota-pending = %u\n", cfg->quota_pending);
        fprintf(f, "quota-running = %u\n", cfg->quota_running);
        fprintf(f, "quota-retained = %u\n", cfg->quota_retained);
        fprintf(f, "quota-deferred = %u\n", cfg->quota_deferred);
        fprintf(f, "quota-download-bytes = %" PRIu64 "\n", cfg->quota_download_bytes);
        fprintf(f, "metrics = %s\n", cfg->metrics ? cfg->metrics : "");
}

static bool str_differ(const char *a, const char *b) {
        return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

void conffile_warn_restart_only(const DaemonConfig *old, const DaemonConfig *cfg) {
        bool listen = old->n_listen != cfg->n_listen;

        for (size_t i = 0; !listen && i < cfg->n_listen; i++)
                listen = strcmp(old->listen[i], cfg->listen[i]) != 0;
        if (listen)
                log_warning("reload: 'listen' changed; it takes effect at the next restart");
        if (str_differ(old->events, cfg->events))
                log_warning("reload: 'events' changed; it takes effect at the next restart");
        if (old->threads != cfg->threads)
                log_warning("reload: 'threads' changed; it takes effect at the next restart");
        if (old->processes != cfg->processes)
                log_warning("reload: 'processes' changed; it takes effect at the next restart");
        if (str_differ(old->worker_path, cfg->worker_path))
                log_warning("reload: 'worker' changed; it takes effect at the next restart");
        if (old->store != cfg->store || str_differ(old->store_uri, cfg->store_uri))
                log_warning("reload: 'store' changed; it takes effect at the next restart");
        if (str_differ(old->state_dir, cfg->state_dir))
                log_warning("reload: 'state-dir' changed; it takes effect at the next restart");
        if (old->socket_mode != cfg->socket_mode ||
            str_differ(old->socket_group, cfg->socket_group))
                log_warning("reload: 'socket-mode' or 'socket-group' changed; it takes effect at "
                            "the next restart");
        if (str_differ(old->curve_secret_key, cfg->curve_secret_key))
                log_warning("reload: 'curve-secret-key' changed; it takes effect at the next "
                            "restart");
        if (str_differ(old->metrics, cfg->metrics))
                log_warning("reload: 'metrics' changed; it takes effect at the next restart");
        if (old->max_queued != cfg->max_queued)
                log_warning("reload: 'max-queued-requests' changed; it takes effect at the next "
                            "restart");
        if (old->max_connections != cfg->max_connections)
                log_warning("reload: 'max-connections' changed; it takes effect at the next "
                            "restart");
        if (old->cluster != cfg->cluster || old->lease != cfg->lease)
                log_warning("reload: 'cluster' or 'lease' changed; it takes effect at the next "
                            "restart");
        if (old->sync != cfg->sync)
                log_warning("reload: 'sync' changed; it takes effect at the next restart");
}

int conffile_check_paths(const DaemonConfig *cfg) {
        if (cfg->download_dir && access(cfg->download_dir, W_OK) < 0) {
                log_error("download-dir %s is not writable: %m (under systemd, list it in "
                          "ReadWritePaths= of futured.service)",
                          cfg->download_dir);
                return -EINVAL;
        }
        return 0;
}
