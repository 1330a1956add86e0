/* notify: futured's side of the service manager's protocols, beside daemon.c.
 *
 * - sd_notify: READY=1, RELOADING=1, STOPPING=1, EXTEND_TIMEOUT_USEC=, and on two loop Timers
 *   STATUS= (once a second, only when it changed) and WATCHDOG=1 (every WATCHDOG_USEC/2, only
 *   while the transfer thread answers its ping: the loop running proves little if downloads are
 *   stuck; busy pool threads are normal, and job timeouts cover hung jobs).
 * - Socket activation: the fds passed with LISTEN_FDS, matched to the --listen and --events
 *   endpoints by address and handed to ZeroMQ with ZMQ_USE_FD.
 *
 * notify_take_environment() reads NOTIFY_SOCKET, WATCHDOG_* and LISTEN_* once, in main() before
 * any thread or worker exists, and removes them from the environment: a futured-worker must not
 * inherit them (it would be taken for the service, or claim the sockets). That is also why the
 * datagrams are sent here rather than with sd_notify(), which reads NOTIFY_SOCKET each time.
 * Everything else runs on the loop thread. Without a service manager every call does nothing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "timer.h"

/* Reads and removes the service manager's variables. Returns 0 or -errno (logs why). */
int notify_take_environment(void);

/* Sends `text` (lines of KEY=VALUE) to the service manager. Returns 0 (also when there is none)
 * or -errno. */
int notify_send(const char *text);

void notify_ready(void);
/* RELOADING=1 with MONOTONIC_USEC=, as systemd 253's Type=notify-reload wants. */
void notify_reloading(void);
void notify_stopping(void);
/* Asks for `usec` more before the start (or stop) times out: for a long store recovery, to be
 * called again before it runs out. */
void notify_extend_timeout(uint64_t usec);

/* Puts the status line into `buf` (of `size`). */
typedef void (*NotifyStatusFn)(void *userdata, char *buf, size_t size);

typedef struct Notify {
        Timer watchdog;
        Timer status;
        TimerHeap *timers;     /* borrowed */
        uint64_t watchdog_ns;  /* WATCHDOG_USEC / 2 in ns, 0: no watchdog */
        NotifyStatusFn status_fn;
        void *userdata;
        char last_status[256];
} Notify;

/* Arms the watchdog and status timers on `timers` (borrowed, like `userdata`). Returns 0 or
 * -ENOMEM. */
int notify_init(Notify *n, TimerHeap *timers, NotifyStatusFn status_fn, void *userdata);
void notify_deinit(Notify *n);

/* Sends STATUS= now if it changed. */
void notify_status(Notify *n);

/* Socket activation. Returns the passed fd whose address is `endpoint`'s (it belongs to the
 * caller's ZeroMQ socket once bound; `endpoint` is remembered as adopted), -ENOENT when none was
 * passed for it. */
int notify_listen_fd(const char *endpoint);

/* After every endpoint is bound: -EINVAL, having logged it, if a passed fd matched none. */
int notify_listen_check_all_used(void);

/* Whether `endpoint` is served through a passed fd: its path belongs to the socket unit, and
 * futured must not unlink it. */
bool notify_listen_adopted(const char *endpoint);
