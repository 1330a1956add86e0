/* daemon: see daemon.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <zmq.h>

#include "daemon.h"
#include "log.h"
#include "macro.h"
#include "principal.h"

/* How many requests one loop turn reads before it lets the executor start work. */
#define ROUTER_BATCH 256
/* A connection that has not completed the ZMTP handshake by then is closed (libzmq's default is
 * 30 s): idle connections hold a descriptor each. */
#define ROUTER_HANDSHAKE_MS 10000
/* ZMTP heartbeats: a peer that answers no PING for ROUTER_HEARTBEAT_TIMEOUT_MS is taken as gone
 * (a tcp:// client whose host vanished; an ipc:// client's end is seen at once). */
#define ROUTER_HEARTBEAT_MS 5000
#define ROUTER_HEARTBEAT_TIMEOUT_MS 15000
/* Waits on this many IDs freed at once make the daemon give memory back (malloc_trim). */
#define TRIM_IDS 100000u

void daemon_signals(sigset_t *ret) {
        sigemptyset(ret);
        sigaddset(ret, SIGTERM);
        sigaddset(ret, SIGINT);
        sigaddset(ret, SIGCHLD);
        sigaddset(ret, SIGHUP);
}

/* The grace period is over: whatever still runs is stopped; the loop then exits. */
static void on_grace(Timer *t, uint64_t now) {
        Daemon *d = container_of(t, Daemon, grace);

        executor_abort(d->executor);
        loop_quit(d->loop);
}

static void begin_shutdown(Daemon *d) {
        uint64_t running, pending;

        if (d->stopping)
                return;
        d->stopping = true;
        notify_stopping();
        executor_stop(d->executor, &running, &pending);
        log_info("shutting down; %" PRIu64 " jobs running, %" PRIu64
                 " pending are cancelled",
                 running, pending);
        timer_start(loop_timers(d->loop), &d->grace, timer_now() + (uint64_t) (d->cfg.grace * 1e9));
}

static ExecutorConfig executor_config(const DaemonConfig *cfg) {
        return (ExecutorConfig){
                .worker_path = cfg->worker_path,
                .download_dir = cfg->download_dir,
                .download_net = &cfg->download_net,
                .threads = cfg->threads,
                .prefetch = cfg->prefetch,
                .spin_us = cfg->spin_us,
                .transfers = cfg->transfers,
                .processes = cfg->processes,
                .max_tasks = cfg->max_tasks,
                .retain = cfg->retain,
                .quota_pending = cfg->quota_pending,
                .quota_running = cfg->quota_running,
                .quota_retained = cfg->quota_retained,
                .quota_download_bytes = cfg->quota_download_bytes,
                .max_retained = cfg->max_retained,
                .max_retained_bytes = cfg->max_retained_bytes,
        };
}

/* SIGHUP: reads the configuration again and applies its live settings. Restart-only ones keep
 * their value (the reload function warned about them); a bad file changes nothing. */
static void reload(Daemon *d) {
        DaemonConfig cfg = {};
        ExecutorConfig xc;
        int r;

        notify_reloading();
        r = d->reload ? d->reload(&d->cfg, &cfg) : 0;
        if (r < 0)
                log_error("reload failed; the settings in effect stay");
        else if (d->reload) {
                xc = executor_config(&cfg);
                r = executor_reconfigure(d->executor, &xc);
                if (r < 0)
                        log_error("reload: cannot use download-dir %s: %s; the settings in effect "
                                  "stay",
                                  cfg.download_dir ? cfg.download_dir : "(none)", strerror(-r));
        }
        if (r >= 0 && d->reload) {
                char *dir = cfg.download_dir;
                NetPolicy net = cfg.download_net;
                if (!netpolicy_equal(&net, &d->cfg.download_net))
                        log_info("reloaded: %zu download-allow/download-deny rules for downloads "
                                 "that start from now on",
                                 net.n_rules);
                cfg.download_dir = d->cfg.download_dir;
                d->cfg.download_dir = dir;
                cfg.download_net = d->cfg.download_net;
                d->cfg.download_net = net;
                d->cfg.prefetch = cfg.prefetch;
                d->cfg.spin_us = cfg.spin_us;
                d->cfg.transfers = d->requests.transfers = cfg.transfers;
                d->cfg.max_tasks = cfg.max_tasks;
                d->cfg.retain = cfg.retain;
                d->cfg.max_retained = d->requests.max_retained = cfg.max_retained;
                d->cfg.max_reply_bytes = d->backlog.max_bytes = cfg.max_reply_bytes;
                d->cfg.max_deferred = executor_waiters(d->executor)->max_deferred =
                        cfg.max_deferred;
                d->cfg.max_deferred_ids = executor_waiters(d->executor)->max_ids =
                        cfg.max_deferred_ids;
                d->cfg.max_retained_bytes = d->requests.max_retained_bytes =
                        cfg.max_retained_bytes;
                d->cfg.grace = cfg.grace;
                d->cfg.log_level = cfg.log_level;
                log_set_max_level(cfg.log_level);
                d->cfg.quota_pending = d->requests.quota_pending = cfg.quota_pending;
                d->cfg.quota_running = d->requests.quota_running = cfg.quota_running;
                d->cfg.quota_retained = d->requests.quota_retained = cfg.quota_retained;
                d->cfg.quota_deferred = d->requests.quota_deferred = cfg.quota_deferred;
                d->cfg.quota_download_bytes = d->requests.quota_download_bytes =
                        cfg.quota_download_bytes;
                executor_waiters(d->executor)->principal_quota = cfg.quota_deferred;
                /* A list that cannot be read keeps the one in effect (zap_reload logged it). */
                if (zap_reload(&d->zap, cfg.curve_allow) >= 0) {
                        char *allow = cfg.curve_allow;
                        cfg.curve_allow = d->cfg.curve_allow;
                        d->cfg.curve_allow = allow;
                }
                loop_set_spin(d->loop, (uint64_t) cfg.spin_us * 1000u);
                log_info("reloaded: retain %g s, grace %g s, %u transfers, log level %s",
                         cfg.retain, cfg.grace, cfg.transfers, log_level_to_string(cfg.log_level));
        }
        daemon_config_free(&cfg);
        notify_ready();
}

static void on_signals(LoopFile *lf, uint32_t events) {
        Daemon *d = container_of(lf, Daemon, signal_file);
        struct signalfd_siginfo si;

        while (read(lf->fd, &si, sizeof(si)) == sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGCHLD:
                        executor_reap(d->executor);
                        break;
                case SIGTERM:
                case SIGINT:
                        begin_shutdown(d);
                        break;
                case SIGHUP:
                        if (!d->stopping)
                                reload(d);
                        break;
                }
        }
}

/* ZMQ_FD of the ROUTER or the XPUB became readable: the hook reads both every turn anyway. */
static void on_zmq_fd(LoopFile *lf, uint32_t events) {
}

static bool router_readable(Daemon *d) {
        uint32_t events = 0;
        size_t len = sizeof(events);

        return zmq_getsockopt(d->router, ZMQ_EVENTS, &events, &len) == 0 &&
               (events & ZMQ_POLLIN);
}

/* Reads up to ROUTER_BATCH requests. Returns true if more may be waiting. */
static bool read_requests(Daemon *d) {
        for (int i = 0; i < ROUTER_BATCH; i++) {
                zmq_msg_t parts[3];
                int n = 0, more = 1;

                if (!router_readable(d))
                        return false;
                /* [identity, body] from DEALER, [identity, "", body] from REQ; anything with more
                 * frames is malformed and drained. */
                while (more) {
                        zmq_msg_t *m = &parts[n < 3 ? n : 2];
                        if (n >= 3)
                                zmq_msg_close(m);
                        zmq_msg_init(m);
                        if (zmq_msg_recv(m, d->router, ZMQ_DONTWAIT) < 0) {
                                zmq_msg_close(m);
                                break;
                        }
                        more = zmq_msg_more(m);
                        n++;
                }
                int kept = MIN(n, 3);
                char principal[PRINCIPAL_MAX_NAME];
                if (n > 0)
                        principal_of_message(&parts[kept - 1], principal);
                Peer from = { .identity = n > 0 ? zmq_msg_data(&parts[0]) : NULL,
                              .identity_len = n > 0 ? zmq_msg_size(&parts[0]) : 0,
                              .envelope = n == 3,
                              .principal = n > 0 ? principal : NULL,
                              .fd = n > 0 ? zmq_msg_get(&parts[kept - 1], ZMQ_SRCFD) : -1 };
                if (n == 2 || (n == 3 && zmq_msg_size(&parts[1]) == 0))
                        request_handle(&d->requests, &from, zmq_msg_data(&parts[kept - 1]),
                                       zmq_msg_size(&parts[kept - 1]));
                else if (n >= 2) {
                        /* Reply so that the client learns what is wrong. */
                        static const uint8_t junk[] = { 0xc1 }; /* never valid msgpack */
                        from.envelope = false;
                        request_handle(&d->requests, &from, junk, sizeof(junk));
                }
                for (int j = 0; j < kept; j++)
                        zmq_msg_close(&parts[j]);
        }
        return true;
}

/* Requests.connection: which connection a request's descriptor carries. */
static uint64_t connection_of(void *userdata, int fd) {
        Daemon *d = userdata;

        return listener_connection(&d->listener, fd);
}

/* The listener saw connection `conn` close (0: all of them): the waits of its client go now, not
 * when their futures end. Freeing many IDs' worth gives the memory back to the system. */
static void on_connection_closed(void *userdata, uint64_t conn) {
        Daemon *d = userdata;

        if (waiter_drop_connection(executor_waiters(d->executor), conn) >= TRIM_IDS)
                (void) malloc_trim(0);
}

/* The loop's before-sleep hook: see daemon.h. */
static bool before_sleep(void *userdata) {
        Daemon *d = userdata;
        bool more = listener_before_sleep(&d->listener);

        (void) events_poll(&d->events);
        more |= read_requests(d);

        more |= executor_before_sleep(d->executor);
        request_answer_due(&d->requests);
        metrics_turn(d->metrics);
        if (d->stopping && executor_settled(d->executor))
                loop_quit(d->loop);
        /* This turn's sends may have consumed the edge of ZMQ_FD: look again before sleeping. */
        more |= events_poll(&d->events);
        return more || router_readable(d);
}

static int bind_endpoint(Daemon *d, void *socket, const char *endpoint) {
        int fd = notify_listen_fd(endpoint), none = -1;
        int sr = endpoint_secure(socket, endpoint, &d->keys);

        if (sr < 0) {
                fprintf(stderr, "futured: cannot set up %s: %s\n", endpoint,
                        zmq_strerror(-sr));
                return sr;
        }

        /* Socket activation: ZeroMQ takes the passed socket instead of making one. ZMQ_USE_FD
         * holds for every later bind of this socket, so it is cleared after this one. */
        if (fd >= 0) {
                int r = zmq_setsockopt(socket, ZMQ_USE_FD, &fd, sizeof(fd)) < 0 ||
                                        zmq_bind(socket, endpoint) < 0
                                ? -zmq_errno()
                                : 0;
                zmq_setsockopt(socket, ZMQ_USE_FD, &none, sizeof(none));
                if (r < 0)
                        log_error("cannot serve %s on the passed socket %d: %s", endpoint, fd,
                                  zmq_strerror(-r));
                return r;
        }
        if (fd != -ENOENT)
                return fd;
        if (strncmp(endpoint, "ipc://", 6) == 0) {
                listener_make_ipc_dir(endpoint);
                return endpoint_bind_ipc(socket, endpoint, &d->access);
        }
        if (zmq_bind(socket, endpoint) < 0) {
                int r = -zmq_errno();
                log_error("cannot bind %s: %s", endpoint, zmq_strerror(-r));
                return r;
        }
        return 0;
}

/* Makes the ROUTER and PUB sockets and binds them (the ROUTER through the listener, which
 * counts its connections). Logs why when it fails. */
static int open_sockets(Daemon *d) {
        int r, one = 1, zero = 0, hwm = 100000, handshake_ms = ROUTER_HANDSHAKE_MS;
        int heartbeat_ms = ROUTER_HEARTBEAT_MS, heartbeat_timeout_ms = ROUTER_HEARTBEAT_TIMEOUT_MS;
        int rcvhwm = (int) d->cfg.max_queued;
        int64_t maxmsg = PROTO_HARD_MAX_MESSAGE;

        d->zmq = zmq_ctx_new();
        d->router = d->zmq ? zmq_socket(d->zmq, ZMQ_ROUTER) : NULL;
        d->pub = d->zmq ? zmq_socket(d->zmq, ZMQ_XPUB) : NULL; /* events.h */
        if (!d->router || !d->pub) {
                log_error("cannot create ZeroMQ sockets: %s",
                          zmq_strerror(zmq_errno()));
                return -ENOMEM;
        }
        zmq_setsockopt(d->router, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
        zmq_setsockopt(d->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
        zmq_setsockopt(d->router, ZMQ_SNDHWM, &hwm, sizeof(hwm));
        zmq_setsockopt(d->router, ZMQ_RCVHWM, &rcvhwm, sizeof(rcvhwm));
        zmq_setsockopt(d->router, ZMQ_LINGER, &zero, sizeof(zero));
        zmq_setsockopt(d->router, ZMQ_HANDSHAKE_IVL, &handshake_ms, sizeof(handshake_ms));
        zmq_setsockopt(d->router, ZMQ_HEARTBEAT_IVL, &heartbeat_ms, sizeof(heartbeat_ms));
        zmq_setsockopt(d->router, ZMQ_HEARTBEAT_TIMEOUT, &heartbeat_timeout_ms,
                       sizeof(heartbeat_timeout_ms));
        zmq_setsockopt(d->pub, ZMQ_SNDHWM, &hwm, sizeof(hwm));
        zmq_setsockopt(d->pub, ZMQ_LINGER, &zero, sizeof(zero));
        /* The ZAP handler first: a CURVE endpoint bound without one would admit every client
         * that knows the server's public key. */
        r = endpoint_keys_load(&d->keys, d->cfg.curve_secret_key);
        if (r >= 0)
                r = zap_init(&d->zap, d->zmq, d->loop, d->cfg.curve_allow);
        if (r < 0)
                return r == -ENOENT || r == -EACCES || r == -EBADMSG || r == -E2BIG ? -EINVAL : r;
        d->access = (EndpointAccess){ .mode = d->cfg.socket_mode, .group = d->cfg.socket_group };
        r = listener_init(&d->listener, d->zmq, d->router, d->loop, d->cfg.listen,
                          d->cfg.n_listen, &d->keys, &d->access);
        if (r < 0)
                return r;
        r = bind_endpoint(d, d->pub, d->cfg.events);
        if (r < 0)
                return r;
        return notify_listen_check_all_used();
}

/* STATUS=: the counters an operator looks at first; the running jobs by pool, each against its
 * size ("threads 2/4": two of four threads run a job). */
static void status_line(void *userdata, char *buf, size_t size) {
        Daemon *d = userdata;
        ExecutorStats st;

        executor_stats(d->executor, &st);
        snprintf(buf, size,
                 "pending %" PRIu64 ", running %" PRIu64 " (threads %u/%u, transfers %u/%u, "
                 "processes %u/%u), done %" PRIu64 ", failed %" PRIu64,
                 st.n_state[STATE_PENDING], st.n_state[STATE_RUNNING], st.threads_running,
                 d->cfg.threads, st.transfers_running, d->cfg.transfers, st.processes_running,
                 d->cfg.processes, st.n_state[STATE_DONE], st.n_state[STATE_FAILED]);
}

void daemon_config_free(DaemonConfig *cfg) {
        for (size_t i = 0; i < cfg->n_listen; i++)
                free(cfg->listen[i]);
        free(cfg->listen);
        free(cfg->events);
        free(cfg->worker_path);
        free(cfg->download_dir);
        free(cfg->state_dir);
        free(cfg->socket_group);
        free(cfg->curve_secret_key);
        free(cfg->curve_allow);
        netpolicy_deinit(&cfg->download_net);
        free(cfg->metrics);
        free(cfg->store_uri);
}

int daemon_new(Daemon **ret, DaemonConfig *cfg) {
        _cleanup_(daemon_freep) Daemon *d = calloc(1, sizeof(*d));
        int r, router_fd, pub_fd, signal_fd;
        size_t len = sizeof(router_fd);
        sigset_t mask;

        if (!d) {
                daemon_config_free(cfg);
                return -ENOMEM;
        }
        d->cfg = *cfg;
        *cfg = (DaemonConfig){};
        backlog_init(&d->backlog, d->cfg.max_reply_bytes);
        loop_file_init(&d->router_file);
        loop_file_init(&d->pub_file);
        loop_file_init(&d->signal_file);
        r = loop_new(&d->loop);
        if (r >= 0)
                r = timer_init(loop_timers(d->loop), &d->grace, on_grace);
        if (r < 0) {
                log_error("cannot create the event loop: %s", strerror(-r));
                return r;
        }
        daemon_signals(&mask);
        signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (signal_fd < 0 ||
            (r = loop_add(d->loop, &d->signal_file, signal_fd, EPOLLIN, on_signals)) < 0) {
                r = signal_fd < 0 ? -errno : r;
                if (signal_fd >= 0)
                        close(signal_fd);
                log_error("cannot read signals: %s", strerror(-r));
                return r;
        }

        r = open_sockets(d);
        if (r < 0)
                return r;
        events_init(&d->events, d->pub);

        _cleanup_free_ char *store_path = NULL;
        if (d->cfg.store == STORE_SQLITE &&
            asprintf(&store_path, "%s/futured.db", d->cfg.state_dir) < 0)
                return -ENOMEM;
        ExecutorConfig xc = executor_config(&d->cfg);
        xc.store = (StoreConfig){ .kind = d->cfg.store, .sync = d->cfg.sync, .clock_ids = true,
                                  .cluster = d->cfg.cluster,
                                  .lease_ms = (unsigned) (d->cfg.lease * 1000),
                                  .path = d->cfg.store == STORE_POSTGRESQL ? d->cfg.store_uri
                                                                           : store_path };
        /* Recovering a large store takes seconds (about 3 s per million futures): ask a service
         * manager for time before it starts. READY=1 comes once the endpoints answer. */
        if (d->cfg.store != STORE_MEMORY)
                notify_extend_timeout(60 * 1000000u);
        r = executor_new(&d->executor, d->loop, &d->events, &xc);
        if (r < 0)
                return r;
        /* A transfer holds a socket and may hold a file; a worker's start takes a few pipes. */
        listener_set_budget(&d->listener, 2 * (uint64_t) d->cfg.transfers +
                                                  4 * (uint64_t) d->cfg.processes,
                            d->cfg.max_connections);
        d->listener.on_closed = on_connection_closed;
        d->listener.closed_data = d;
        executor_waiters(d->executor)->max_deferred = d->cfg.max_deferred;
        executor_waiters(d->executor)->max_ids = d->cfg.max_deferred_ids;
        d->requests = (Requests){
                .executor = d->executor,
                .events = &d->events,
                .router = d->router,
                .backlog = &d->backlog,
                .events_endpoint = d->cfg.events,
                .threads = d->cfg.threads,
                .transfers = d->cfg.transfers,
                .processes = d->cfg.processes,
                .store = store_kind_to_string(d->cfg.store),
                .max_retained = d->cfg.max_retained,
                .max_retained_bytes = d->cfg.max_retained_bytes,
                .connection = connection_of,
                .connection_data = d,
                .started_ns = timer_now(),
                .quota_pending = d->cfg.quota_pending,
                .quota_running = d->cfg.quota_running,
                .quota_retained = d->cfg.quota_retained,
                .quota_deferred = d->cfg.quota_deferred,
                .quota_download_bytes = d->cfg.quota_download_bytes,
        };
        executor_waiters(d->executor)->principal_quota = d->cfg.quota_deferred;

        if (zmq_getsockopt(d->router, ZMQ_FD, &router_fd, &len) < 0)
                return -zmq_errno();
        r = loop_add(d->loop, &d->router_file, router_fd, EPOLLIN | EPOLLET, on_zmq_fd);
        if (r < 0)
                return r;
        /* A subscription wakes the loop: a node of a cluster reads other nodes' finished rows
         * for its events only while someone subscribes (events.h). */
        if (zmq_getsockopt(d->pub, ZMQ_FD, &pub_fd, &len) < 0)
                return -zmq_errno();
        r = loop_add(d->loop, &d->pub_file, pub_fd, EPOLLIN | EPOLLET, on_zmq_fd);
        if (r < 0)
                return r;
        /* An address futured cannot serve is a mistake of the configuration (exit 2). */
        if (d->cfg.metrics &&
            (r = metrics_new(&d->metrics, d->cfg.metrics, d->executor, loop_timers(d->loop))) < 0)
                return r == -EADDRINUSE || r == -EADDRNOTAVAIL || r == -EACCES ? -EINVAL : r;
        loop_set_hook(d->loop, before_sleep, d);
        loop_set_spin(d->loop, (uint64_t) d->cfg.spin_us * 1000u);
        r = notify_init(&d->notify, loop_timers(d->loop), status_line, d);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(d);
        return 0;
}

int daemon_run(Daemon *d) {
        return loop_run(d->loop);
}

Daemon *daemon_free(Daemon *d) {
        if (!d)
                return NULL;
        int signal_fd = d->signal_file.fd;

        d->metrics = metrics_free(d->metrics);
        d->executor = executor_free(d->executor);
        request_deinit(&d->requests);
        if (d->loop) {
                loop_remove(d->loop, &d->router_file);
                loop_remove(d->loop, &d->pub_file);
                loop_remove(d->loop, &d->signal_file);
        }
        if (signal_fd >= 0)
                close(signal_fd);
        listener_deinit(&d->listener);
        if (d->router) {
                /* Let the last replies (of the shutdown's cancellations) reach their clients. */
                int linger = 1000;
                zmq_setsockopt(d->router, ZMQ_LINGER, &linger, sizeof(linger));
                zmq_close(d->router);
        }
        if (d->pub)
                zmq_close(d->pub);
        zap_deinit(&d->zap);
        events_deinit(&d->events);
        if (d->zmq)
                zmq_ctx_term(d->zmq);
        backlog_deinit(&d->backlog); /* every message is freed now */
        for (const char *const *e = (const char *const *) d->cfg.listen;
             e && e < (const char *const *) d->cfg.listen + d->cfg.n_listen; e++)
                if (strncmp(*e, "ipc://", 6) == 0 && !notify_listen_adopted(*e))
                        (void) unlink(*e + 6);
        /* A passed socket's path is the socket unit's: it stays for the next activation. */
        if (d->cfg.events && strncmp(d->cfg.events, "ipc://", 6) == 0 &&
            !notify_listen_adopted(d->cfg.events))
                (void) unlink(d->cfg.events + 6);
        notify_deinit(&d->notify);
        if (d->loop)
                timer_deinit(loop_timers(d->loop), &d->grace);
        d->loop = loop_free(d->loop);
        daemon_config_free(&d->cfg);
        free(d);
        return NULL;
}
