/* daemon: the futured process. It owns the ZeroMQ context and its two sockets (ROUTER for
 * requests, PUB for events), the signalfd, the event loop, and the shutdown; the futures domain
 * is the executor's (executor.h), requests are request.c's; notify.c beside it speaks to the
 * service manager (sd_notify, the watchdog, socket activation). SIGHUP reloads the configuration
 * through the function main() gives (`reload`) and applies the live settings.
 *
 * One loop turn, in the loop's before-sleep hook: read up to a batch of requests, let the
 * executor start work, send the deferred replies that came due, and look at the ROUTER socket
 * again (its ZMQ_FD is edge-triggered, and this turn's sends may have consumed the edge).
 * Everything here runs on the main thread. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "events.h"
#include "executor.h"
#include "listener.h"
#include "loop.h"
#include "metrics.h"
#include "notify.h"
#include "endpoint.h"
#include "request.h"
#include "zap.h"

#define DEFAULT_TRANSFERS 1024
#define MAX_TRANSFERS 65536
#define DEFAULT_SPIN_US 200
#define DEFAULT_QUOTA_PENDING 250000u  /* a quarter of PROTO_MAX_PENDING */
#define DEFAULT_QUOTA_RUNNING 0u       /* fair share interleaves; no cap by default */
#define DEFAULT_QUOTA_RETAINED 500000u
#define DEFAULT_QUOTA_DEFERRED 4000u   /* four clients' worth of PROTO_MAX_DEFERRED */
/* As much as the daemon retains of all results together (max_retained_bytes). */
#define DEFAULT_QUOTA_DOWNLOAD_BYTES (256ull << 20)

typedef struct DaemonConfig {
        char **listen;        /* ZeroMQ endpoints for the ROUTER socket */
        size_t n_listen;
        char *events;         /* the PUB endpoint */
        char *worker_path;    /* futured-worker */
        char *download_dir;   /* where `download` jobs with a `path` write, or NULL */
        NetPolicy download_net; /* --download-allow/--download-deny, beyond the built-in rules */
        char *state_dir;      /* where the store's file lives (sqlite) */
        StoreKind store;
        char *store_uri;      /* postgresql: the libpq URI */
        bool cluster;         /* --cluster: nodes share the postgresql store */
        double lease;         /* cluster: seconds */
        StoreSync sync;
        unsigned threads;
        unsigned prefetch;    /* thread jobs handed to the pool beyond its thread count */
        bool prefetch_set;    /* --prefetch given; else 3 per thread */
        unsigned spin_us;     /* an idle pool thread looks for work this long before it sleeps */
        unsigned transfers;   /* downloads at once in the transfer pool */
        unsigned processes;
        unsigned max_tasks;   /* per worker process, 0: unlimited */
        double retain;        /* seconds a finished future is kept */
        uint64_t max_retained;       /* finished futures kept before a submit is refused */
        uint64_t max_deferred;       /* deferred replies held for all clients together */
        uint64_t max_deferred_ids;   /* ... and the IDs they wait on */
        uint64_t max_retained_bytes; /* ... and the bytes of their outcomes */
        double grace;         /* seconds running jobs get at shutdown */
        unsigned max_queued;  /* requests one connection may have queued in ZeroMQ (RCVHWM) */
        uint64_t max_reply_bytes; /* reply bytes queued for one client */
        uint64_t max_connections; /* client connections at once; 0: what the open-file limit
                                   * allows (listener.h) */
        int log_level;        /* LOG_ERR .. LOG_DEBUG */
        unsigned socket_mode; /* of the ipc:// socket files futured makes (ENDPOINT_DEFAULT_MODE) */
        char *socket_group;   /* ... and their group, or NULL: the daemon's own */
        char *curve_secret_key; /* the key file of the daemon's CURVE key pair, or NULL */
        char *curve_allow;    /* the allow list of client public keys, or NULL: no one */
        /* Per-principal quotas (docs/PROTOCOL.md, Quotas); 0: none. */
        unsigned quota_pending, quota_running, quota_retained, quota_deferred;
        uint64_t quota_download_bytes; /* body bytes its running downloads hold at once */
        char *metrics;        /* --metrics ADDRESS:PORT, or NULL: no metrics endpoint */
} DaemonConfig;

/* Reads the configuration again (file, then command line) into `ret` for a reload; `old` is the
 * one in effect. Returns 0 or -errno, having logged why. */
typedef int (*DaemonReloadFn)(const DaemonConfig *old, DaemonConfig *ret);

typedef struct Daemon {
        DaemonConfig cfg;
        void *zmq;
        void *router;
        void *pub;
        Loop *loop;
        LoopFile router_file; /* ZMQ_FD of the ROUTER socket, edge-triggered */
        LoopFile pub_file;    /* ZMQ_FD of the events' XPUB socket, edge-triggered */
        LoopFile signal_file; /* the signalfd */
        Listener listener;    /* the ROUTER's endpoints and their connection budget */
        Backlog backlog;      /* reply bytes queued per client */
        Events events;
        Executor *executor;
        Requests requests;
        Timer grace;          /* armed at SIGTERM: running jobs get this long */
        Notify notify;        /* STATUS= and the watchdog */
        EndpointKeys keys;    /* the CURVE key pair, when a network endpoint is served */
        EndpointAccess access; /* of the ipc:// socket files futured makes */
        Zap zap;              /* the ZAP handler: who may connect over CURVE */
        Metrics *metrics;     /* the Prometheus endpoint, or NULL */
        DaemonReloadFn reload; /* set by main(); NULL: SIGHUP changes nothing */
        bool stopping;
} Daemon;

/* The signals the daemon reads through its signalfd: SIGTERM, SIGINT, SIGCHLD, SIGHUP. main()
 * blocks them before any thread exists, so that every thread inherits the mask. */
void daemon_signals(sigset_t *ret);

/* Frees the strings of `cfg` (not `cfg` itself). */
void daemon_config_free(DaemonConfig *cfg);

/* Builds the daemon from `cfg` (the daemon takes ownership of its strings), binds its sockets and
 * starts its pools. Call from the main thread with daemon_signals() blocked. Returns 0 or
 * -errno, having logged why. */
int daemon_new(Daemon **ret, DaemonConfig *cfg);

/* Runs the loop until a shutdown completes. Returns 0 or -errno. */
int daemon_run(Daemon *d);

/* Tears everything down: pools, sockets, futures. Accepts NULL; returns NULL. */
Daemon *daemon_free(Daemon *d);
static inline void daemon_freep(Daemon **d) {
        daemon_free(*d);
}
