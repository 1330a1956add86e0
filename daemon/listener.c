/* listener: see listener.h. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "listener.h"
#include "log.h"
#include "macro.h"
#include "notify.h"

#define MONITOR_ENDPOINT "inproc://futured-router-monitor"
/* Monitor events one turn reads at most, so that requests are read too during a flood. */
#define EVENTS_PER_TURN 4096
/* The listen() backlog of the sockets the daemon makes: libzmq's default (ZMQ_BACKLOG). */
#define BACKLOG 100
#define RESUME_CHECK_NS 1000000000u

void listener_make_ipc_dir(const char *endpoint) {
        if (strncmp(endpoint, "ipc://", 6) != 0)
                return;
        _cleanup_free_ char *dir = strdup(endpoint + 6);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash && slash != dir) {
                *slash = 0;
                (void) mkdir(dir, 0755);
        }
}

int64_t listener_count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        int64_t n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1; /* the directory's own descriptor */
}

/* Makes the listening socket of an ipc:// endpoint as libzmq would (a stale socket file is
 * replaced; "@name" is abstract), with the file's access (endpoint.h). Returns the fd, -ENOTSUP
 * for what ZeroMQ must make itself (the wildcard, an asterisk for a path), or -errno. */
static int make_ipc_socket(const char *endpoint, const EndpointAccess *access) {
        const char *path = endpoint + 6;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = strlen(path);
        socklen_t sa_len;
        mode_t old;
        int fd, r;

        if (strcmp(path, "*") == 0)
                return -ENOTSUP;
        if (len == 0 || len >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, len);
        if (path[0] == '@')
                sa.sun_path[0] = 0;
        else {
                listener_make_ipc_dir(endpoint);
                (void) unlink(path);
        }
        sa_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len +
                              (path[0] == '@' ? 0 : 1));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* No other thread makes files yet: the pools start after the sockets are bound. */
        old = umask(ENDPOINT_UMASK);
        r = bind(fd, (struct sockaddr *) &sa, sa_len) < 0 || listen(fd, BACKLOG) < 0 ? -errno : 0;
        umask(old);
        if (r >= 0)
                r = endpoint_own_ipc(endpoint, access);
        if (r < 0) {
                close(fd);
                return r;
        }
        return fd;
}

/* Binds one endpoint: through a duplicate of its fd when the daemon owns one (ZMQ_USE_FD holds
 * for every later bind of the socket, so it is cleared again), else by name; remembers the name
 * libzmq registered, which zmq_unbind() wants. Returns 0 or -errno. */
static int bind_one(Listener *l, ListenEndpoint *e) {
        int none = -1, copy = -1, r = 0;
        char last[1024];
        size_t len = sizeof(last);

        r = endpoint_secure(l->router, e->endpoint, l->keys);
        if (r < 0)
                return r;
        if (e->fd >= 0) {
                copy = fcntl(e->fd, F_DUPFD_CLOEXEC, 3);
                if (copy < 0)
                        return -errno;
                if (zmq_setsockopt(l->router, ZMQ_USE_FD, &copy, sizeof(copy)) < 0)
                        r = -zmq_errno();
        }
        if (r >= 0 && zmq_bind(l->router, e->endpoint) < 0)
                r = -zmq_errno();
        if (e->fd >= 0) {
                zmq_setsockopt(l->router, ZMQ_USE_FD, &none, sizeof(none));
                if (r < 0)
                        close(copy);
        }
        if (r < 0)
                return r;
        e->bound = true;
        free(e->bound_name);
        e->bound_name = zmq_getsockopt(l->router, ZMQ_LAST_ENDPOINT, last, &len) == 0
                                ? strndup(last, len)
                                : NULL;
        return 0;
}

/* Unbinds every endpoint, which closes every connection accepted on it; the count starts again
 * at the resume. */
/* Grows the per-descriptor generations to hold `fd`. Returns false without memory. */
static bool generation_fit(Listener *l, int fd) {
        size_t n = l->n_generation ? l->n_generation : 1024;
        uint32_t *g;

        if ((size_t) fd < l->n_generation)
                return true;
        while (n <= (size_t) fd)
                n *= 2;
        g = realloc(l->generation, n * sizeof(*g));
        if (!g)
                return false;
        memset(g + l->n_generation, 0, (n - l->n_generation) * sizeof(*g));
        l->generation = g;
        l->n_generation = n;
        return true;
}

static uint64_t conn_id(const Listener *l, int fd) {
        return (uint64_t) l->generation[fd] << 32 | (uint32_t) fd;
}

/* The monitor told of an accept (opened) or a close of descriptor `fd`. */
static void track(Listener *l, int fd, bool opened) {
        if (fd < 0 || !generation_fit(l, fd))
                return;
        if (opened) {
                /* Odd: open. A close whose event was lost is taken as done. */
                l->generation[fd] += (l->generation[fd] & 1) ? 2 : 1;
                return;
        }
        if (!(l->generation[fd] & 1))
                return;
        if (l->on_closed)
                l->on_closed(l->closed_data, conn_id(l, fd));
        l->generation[fd]++;
}

uint64_t listener_connection(Listener *l, int fd) {
        while (listener_before_sleep(l))
                ;
        if (fd < 0 || (size_t) fd >= l->n_generation)
                return 0;
        return l->generation[fd] & 1 ? conn_id(l, fd) : UINT64_MAX;
}

static void shed(Listener *l) {
        for (size_t i = 0; i < l->n_endpoints; i++) {
                ListenEndpoint *e = &l->endpoints[i];
                if (!e->bound)
                        continue;
                if (zmq_unbind(l->router, e->bound_name ? e->bound_name : e->endpoint) < 0)
                        log_error("cannot unbind %s: %s", e->endpoint, zmq_strerror(zmq_errno()));
                e->bound = false;
        }
        /* Every connection goes with its listener, and libzmq tells of none of them. */
        for (size_t fd = 0; fd < l->n_generation; fd++)
                if (l->generation[fd] & 1)
                        l->generation[fd]++;
        if (l->on_closed)
                l->on_closed(l->closed_data, 0);
        l->shedding = true;
        l->n_sheds++;
        log_warning("%" PRIu64 " connections reach the budget of %" PRIu64 " (%" PRId64
                    " descriptors open, the limit is %" PRIu64 "): every listening endpoint is "
                    "closed, with its connections, until the descriptors are back",
                    l->n_connections, l->max_connections, listener_count_fds(), l->limit);
        timer_start(loop_timers(l->loop), &l->resume, timer_now() + RESUME_CHECK_NS);
}

/* While shedding, every second: binds again once half the budget is free (the unbind closes the
 * connections in libzmq's I/O thread, some time after it returned). */
static void on_resume(Timer *t, uint64_t now) {
        Listener *l = container_of(t, Listener, resume);
        int64_t open = listener_count_fds();
        int r;

        if (open < 0 || (uint64_t) open + l->max_connections / 2 + LISTENER_MONITOR_LAG >
                                l->limit) {
                timer_start(loop_timers(l->loop), &l->resume, now + RESUME_CHECK_NS);
                return;
        }
        /* Events still queued are of connections that are closed now. */
        while (listener_before_sleep(l))
                ;
        l->n_connections = 0;
        l->shedding = false;
        for (size_t i = 0; i < l->n_endpoints; i++) {
                ListenEndpoint *e = &l->endpoints[i];
                if (!e->bound && (r = bind_one(l, e)) < 0) {
                        log_error("cannot bind %s again: %s; retrying in a second", e->endpoint,
                                  zmq_strerror(-r));
                        l->shedding = true;
                }
        }
        if (l->shedding)
                timer_start(loop_timers(l->loop), &l->resume, now + RESUME_CHECK_NS);
        else
                log_notice("listening again on every endpoint (%" PRId64 " descriptors open)",
                           open);
}

/* ZMQ_FD of the monitor became readable: before_sleep reads it every turn anyway. */
static void on_monitor_fd(LoopFile *lf, uint32_t events) {
}

static bool monitor_readable(Listener *l) {
        uint32_t events = 0;
        size_t len = sizeof(events);

        return zmq_getsockopt(l->monitor, ZMQ_EVENTS, &events, &len) == 0 &&
               (events & ZMQ_POLLIN);
}

bool listener_before_sleep(Listener *l) {
        for (int i = 0; i < EVENTS_PER_TURN; i++) {
                zmq_msg_t m;
                uint16_t event = 0;
                uint32_t value = 0;
                int more;

                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, l->monitor, ZMQ_DONTWAIT) < 0) {
                        zmq_msg_close(&m);
                        return false;
                }
                /* Frame 1: the event (16 bits) and its value (32); frame 2: the endpoint. */
                if (zmq_msg_size(&m) >= sizeof(event) + sizeof(value)) {
                        memcpy(&event, zmq_msg_data(&m), sizeof(event));
                        memcpy(&value, (const uint8_t *) zmq_msg_data(&m) + sizeof(event),
                               sizeof(value));
                }
                more = zmq_msg_more(&m);
                zmq_msg_close(&m);
                while (more) {
                        zmq_msg_init(&m);
                        if (zmq_msg_recv(&m, l->monitor, 0) < 0)
                                more = 0;
                        else
                                more = zmq_msg_more(&m);
                        zmq_msg_close(&m);
                }
                if (l->shedding)
                        continue;
                if (event == ZMQ_EVENT_ACCEPTED) {
                        l->n_connections++;
                        l->n_peak = MAX(l->n_peak, l->n_connections);
                        track(l, (int) value, true);
                } else if (event == ZMQ_EVENT_DISCONNECTED) {
                        if (l->n_connections > 0)
                                l->n_connections--;
                        track(l, (int) value, false);
                }
                if (l->n_connections >= l->max_connections)
                        shed(l);
        }
        return monitor_readable(l);
}

/* Opens the monitor: a PAIR socket on the ROUTER's accepts and disconnects. Returns 0 or -errno. */
static int open_monitor(Listener *l, void *zmq) {
        int one = 1, zero = 0, fd;
        size_t len = sizeof(fd);

        if (zmq_socket_monitor(l->router, MONITOR_ENDPOINT,
                               ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) < 0)
                return -zmq_errno();
        l->monitor = zmq_socket(zmq, ZMQ_PAIR);
        if (!l->monitor)
                return -zmq_errno();
        /* The smallest pipe: the I/O thread blocks on it, so it cannot run far ahead. */
        zmq_setsockopt(l->monitor, ZMQ_RCVHWM, &one, sizeof(one));
        zmq_setsockopt(l->monitor, ZMQ_LINGER, &zero, sizeof(zero));
        if (zmq_connect(l->monitor, MONITOR_ENDPOINT) < 0 ||
            zmq_getsockopt(l->monitor, ZMQ_FD, &fd, &len) < 0)
                return -zmq_errno();
        return loop_add(l->loop, &l->monitor_file, fd, EPOLLIN | EPOLLET, on_monitor_fd);
}

/* Orders local endpoints before network ones (qsort is not stable: the order within each is
 * free, as the order of binds is). */
static int network_last(const void *a, const void *b) {
        return (int) endpoint_is_network(((const ListenEndpoint *) a)->endpoint) -
               (int) endpoint_is_network(((const ListenEndpoint *) b)->endpoint);
}

int listener_init(Listener *l, void *zmq, void *router, Loop *loop, char *const *endpoints,
                  size_t n, const EndpointKeys *keys, const EndpointAccess *access) {
        int r;

        *l = (Listener){ .router = router, .keys = keys, .access = *access, .loop = loop,
                         .max_connections = UINT64_MAX };
        loop_file_init(&l->monitor_file);
        r = timer_init(loop_timers(loop), &l->resume, on_resume);
        if (r < 0)
                return r;
        l->endpoints = calloc(n, sizeof(*l->endpoints));
        if (!l->endpoints)
                return -ENOMEM;
        l->n_endpoints = n;
        for (size_t i = 0; i < n; i++)
                l->endpoints[i] = (ListenEndpoint){ .endpoint = endpoints[i], .fd = -1 };
        r = open_monitor(l, zmq);
        if (r < 0) {
                log_error("cannot monitor the connections: %s", zmq_strerror(-r));
                return r;
        }
        /* Local endpoints first, then network ones (see endpoint_secure); a resume binds them
         * again in this order. */
        qsort(l->endpoints, n, sizeof(*l->endpoints), network_last);
        for (size_t i = 0; i < n; i++) {
                ListenEndpoint *e = &l->endpoints[i];
                int fd = notify_listen_fd(e->endpoint);
                if (fd == -ENOENT && strncmp(e->endpoint, "ipc://", 6) == 0) {
                        fd = make_ipc_socket(e->endpoint, &l->access);
                        if (fd < 0 && fd != -ENOTSUP) {
                                log_error("cannot bind %s: %s", e->endpoint, strerror(-fd));
                                return fd;
                        }
                } else if (fd < 0 && fd != -ENOENT)
                        return fd;
                e->fd = fd >= 0 ? fd : -1;
                r = bind_one(l, e);
                if (r < 0) {
                        log_error("cannot bind %s: %s", e->endpoint, zmq_strerror(-r));
                        return r;
                }
        }
        return 0;
}

void listener_set_budget(Listener *l, uint64_t reserve, uint64_t max_connections) {
        struct rlimit rl;
        int64_t open = listener_count_fds();
        uint64_t keep, budget = 0;

        l->limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                           ? (uint64_t) rl.rlim_cur
                           : 1u << 20;
        keep = (uint64_t) MAX(open, 0) + reserve + LISTENER_SPARE_FDS + LISTENER_MONITOR_LAG;
        if (l->limit > keep)
                budget = l->limit - keep;
        if (budget < 16) {
                log_warning("the open-file limit %" PRIu64 " leaves no room for connections "
                            "beside the %" PRIu64 " descriptors the daemon keeps: at most 16 "
                            "connections, and a flood of them may still exhaust it (raise "
                            "LimitNOFILE=)",
                            l->limit, keep);
                budget = 16;
        }
        if (max_connections > 0 && max_connections < budget)
                budget = max_connections;
        else if (max_connections > budget)
                log_warning("max-connections %" PRIu64 " does not fit the open-file limit %" PRIu64
                            ": at most %" PRIu64,
                            max_connections, l->limit, budget);
        l->reserve = keep - LISTENER_MONITOR_LAG;
        l->max_connections = budget;
}

void listener_deinit(Listener *l) {
        if (l->loop) {
                loop_remove(l->loop, &l->monitor_file);
                timer_deinit(loop_timers(l->loop), &l->resume);
        }
        if (l->monitor)
                zmq_close(l->monitor);
        if (l->router)
                zmq_socket_monitor(l->router, NULL, 0);
        for (size_t i = 0; i < l->n_endpoints; i++) {
                if (l->endpoints[i].fd >= 0)
                        close(l->endpoints[i].fd);
                free(l->endpoints[i].bound_name);
        }
        free(l->endpoints);
        free(l->generation);
        *l = (Listener){};
        loop_file_init(&l->monitor_file);
}
