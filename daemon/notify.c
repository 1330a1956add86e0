/* notify: see notify.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "macro.h"
#include "notify.h"
#include "transferpool.h"

/* At most this many sockets can be passed: one per endpoint, and a few endpoints are plenty. */
#define MAX_PASSED_FDS 16

static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;        /* 0: no service manager listens */
static uint64_t watchdog_usec;
static int n_passed;                     /* fds SD_LISTEN_FDS_START .. + n_passed */
static char *adopted[MAX_PASSED_FDS];    /* the endpoint each passed fd serves, or NULL */

int notify_take_environment(void) {
        const char *e = getenv("NOTIFY_SOCKET");
        int r;

        if (e && (e[0] == '/' || e[0] == '@') && strlen(e) < sizeof(notify_addr.sun_path)) {
                notify_addr.sun_family = AF_UNIX;
                memcpy(notify_addr.sun_path, e, strlen(e));
                if (e[0] == '@')
                        notify_addr.sun_path[0] = 0; /* abstract namespace */
                notify_addr_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(e));
        }
        unsetenv("NOTIFY_SOCKET");
        /* Both calls remove their variables (unset_environment = 1). */
        if (sd_watchdog_enabled(1, &watchdog_usec) <= 0)
                watchdog_usec = 0;
        r = sd_listen_fds(1);
        if (r < 0) {
                log_error("cannot take the sockets passed by the service manager: %s",
                          strerror(-r));
                return r;
        }
        if (r > MAX_PASSED_FDS) {
                log_error("%d sockets passed; at most %d endpoints can use them", r,
                          MAX_PASSED_FDS);
                return -EINVAL;
        }
        n_passed = r;
        return 0;
}

int notify_send(const char *text) {
        _cleanup_(closep) int fd = -1;

        if (notify_addr_len == 0)
                return 0;
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (sendto(fd, text, strlen(text), MSG_NOSIGNAL, (struct sockaddr *) &notify_addr,
                   notify_addr_len) < 0)
                return -errno;
        return 0;
}

void notify_ready(void) {
        (void) notify_send("READY=1");
}

void notify_reloading(void) {
        char text[64];

        snprintf(text, sizeof(text), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long) (timer_now() / 1000u));
        (void) notify_send(text);
}

void notify_stopping(void) {
        (void) notify_send("STOPPING=1");
}

void notify_extend_timeout(uint64_t usec) {
        char text[64];

        snprintf(text, sizeof(text), "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long) usec);
        (void) notify_send(text);
}

void notify_status(Notify *n) {
        char text[sizeof(n->last_status)], msg[sizeof(text) + 8];

        n->status_fn(n->userdata, text, sizeof(text));
        if (strcmp(text, n->last_status) == 0)
                return;
        snprintf(msg, sizeof(msg), "STATUS=%s", text);
        if (notify_send(msg) >= 0)
                memcpy(n->last_status, text, sizeof(text));
}

static void on_status(Timer *t, uint64_t now) {
        Notify *n = container_of(t, Notify, status);

        notify_status(n);
        timer_start(n->timers, t, now + 1000000000u);
}

/* WATCHDOG=1 only when the transfer thread answered the previous ping. A missed beat is not
 * final: the service manager acts only after WATCHDOG_USEC without one, twice this interval. */
static void on_watchdog(Timer *t, uint64_t now) {
        Notify *n = container_of(t, Notify, watchdog);

        if (transferpool_ping())
                (void) notify_send("WATCHDOG=1");
        else
                log_warning("the transfer thread did not answer the watchdog's ping");
        timer_start(n->timers, t, now + n->watchdog_ns);
}

int notify_init(Notify *n, TimerHeap *timers, NotifyStatusFn status_fn, void *userdata) {
        int r;

        *n = (Notify){ .timers = timers, .status_fn = status_fn, .userdata = userdata,
                       .watchdog_ns = watchdog_usec * 1000u / 2 };
        r = timer_init(timers, &n->watchdog, on_watchdog);
        if (r >= 0)
                r = timer_init(timers, &n->status, on_status);
        if (r < 0)
                return r;
        if (notify_addr_len == 0)
                return 0;
        if (n->watchdog_ns) {
                (void) transferpool_ping(); /* answered by the first beat */
                timer_start(timers, &n->watchdog, timer_now() + n->watchdog_ns);
        }
        timer_start(timers, &n->status, timer_now() + 1000000000u);
        return 0;
}

void notify_deinit(Notify *n) {
        if (!n->timers)
                return;
        timer_deinit(n->timers, &n->watchdog);
        timer_deinit(n->timers, &n->status);
}

/* Whether the passed `fd` listens on the tcp:// address `hostport` ("HOST:PORT", HOST `*` for
 * any). */
static bool inet_matches(int fd, const char *hostport) {
        const char *colon = strrchr(hostport, ':');
        char host[NI_MAXHOST], want[NI_MAXHOST];
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        unsigned long port;
        char *end;

        if (!colon || (size_t) (colon - hostport) >= sizeof(want))
                return false;
        port = strtoul(colon + 1, &end, 10);
        if (*end || port == 0 || port > 65535 ||
            sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, (uint16_t) port) <= 0 ||
            getsockname(fd, (struct sockaddr *) &ss, &len) < 0 ||
            getnameinfo((struct sockaddr *) &ss, len, host, sizeof(host), NULL, 0,
                        NI_NUMERICHOST) != 0)
                return false;
        memcpy(want, hostport, (size_t) (colon - hostport));
        want[colon - hostport] = 0;
        if (want[0] == '[') { /* [::1] */
                memmove(want, want + 1, strlen(want));
                want[strcspn(want, "]")] = 0;
        }
        if (strcmp(want, "*") == 0)
                return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
        return strcmp(want, host) == 0;
}

int notify_listen_fd(const char *endpoint) {
        for (int i = 0; i < n_passed; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                bool match;

                if (adopted[i])
                        continue;
                if (strncmp(endpoint, "ipc://", 6) == 0)
                        match = sd_is_socket_unix(fd, SOCK_STREAM, 1, endpoint + 6, 0) > 0;
                else if (strncmp(endpoint, "tcp://", 6) == 0)
                        match = inet_matches(fd, endpoint + 6);
                else
                        match = false;
                if (!match)
                        continue;
                adopted[i] = strdup(endpoint);
                if (!adopted[i])
                        return -ENOMEM;
                return fd;
        }
        return -ENOENT;
}

int notify_listen_check_all_used(void) {
        int r = 0;

        for (int i = 0; i < n_passed; i++)
                if (!adopted[i]) {
                        log_error("socket %d passed by the service manager matches no --listen or "
                                  "--events endpoint",
                                  SD_LISTEN_FDS_START + i);
                        r = -EINVAL;
                }
        return r;
}

bool notify_listen_adopted(const char *endpoint) {
        for (int i = 0; i < n_passed; i++)
                if (adopted[i] && strcmp(adopted[i], endpoint) == 0)
                        return true;
        return false;
}
