/* listener: the ROUTER socket's listening endpoints and the budget of connections they accept.
 *
 * libzmq's I/O thread accepts connections on its own, one descriptor each, and its ipc://
 * listener aborts the whole process when accept() fails with EMFILE (libzmq 4.3.4,
 * ipc_listener.cpp). So the daemon counts the connections itself, from a socket monitor on the
 * ROUTER (ZMQ_EVENT_ACCEPTED and ZMQ_EVENT_DISCONNECTED, read on an inproc PAIR socket), and
 * before the count reaches its budget it *sheds*: it unbinds every listening endpoint, which
 * closes every accepted connection with it (libzmq's sessions are children of their listener),
 * and binds them again once the descriptors are back (a timer looks every second).
 *
 * The budget: RLIMIT_NOFILE's soft limit (main() raises it to the hard one), less the
 * descriptors the daemon holds for itself when it starts, less those the transfers, worker
 * processes and store may still open (`reserve`), less the monitor's lag: libzmq sends monitor
 * events with a blocking send on a PAIR pipe of LISTENER_MONITOR_LAG messages, so its I/O thread
 * can never be more accepts than that ahead of what this module has read (docs/SECURITY.md has
 * the measurement). An explicit budget (`max_connections`) may only be lower.
 *
 * Where the daemon owns the listening socket (every ipc:// path, and any socket passed by socket
 * activation) ZeroMQ is given a duplicate of it (ZMQ_USE_FD): an unbind closes only that copy, so
 * the socket file and its mode stay, an activated socket survives, and connections that arrive
 * while shedding wait in the kernel's backlog, costing no descriptor here. Other endpoints (tcp://
 * that the daemon binds by name) are bound by name again.
 *
 * Loop thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "endpoint.h"
#include "loop.h"
#include "timer.h"

/* Messages the monitor pipe holds: libzmq's monitor socket's SNDHWM (1000, fixed) plus the
 * RCVHWM of ours (1); twice that for the accepts made while an unbind travels to the I/O
 * thread. */
#define LISTENER_MONITOR_LAG (2 * (1000 + 1))
/* Descriptors kept free besides the budget for what the daemon opens after start-up beyond the
 * transfers and worker processes it counts: the store's journal, log and temporary files. */
#define LISTENER_SPARE_FDS 64

typedef struct ListenEndpoint {
        char *endpoint;   /* as configured, borrowed */
        int fd;           /* the daemon's listening socket, or -1: bound by name */
        char *bound_name; /* what libzmq registered (ZMQ_LAST_ENDPOINT), for zmq_unbind() */
        bool bound;
} ListenEndpoint;

/* A connection closed (`conn` as listener_connection() gave it), or every connection (0). */
typedef void (*ListenerClosedFn)(void *userdata, uint64_t conn);

typedef struct Listener {
        void *router;      /* borrowed */
        const EndpointKeys *keys;     /* borrowed: CURVE for network endpoints (endpoint.h) */
        EndpointAccess access;        /* of the ipc:// socket files the daemon makes */
        void *monitor;     /* PAIR socket that receives the ROUTER's monitor events */
        Loop *loop;        /* borrowed */
        LoopFile monitor_file; /* ZMQ_FD of `monitor`, edge-triggered */
        Timer resume;      /* armed while shedding */
        ListenEndpoint *endpoints;
        size_t n_endpoints;
        uint64_t limit;    /* RLIMIT_NOFILE's soft limit */
        uint64_t reserve;  /* descriptors not for connections (see above) */
        uint64_t max_connections; /* the budget */
        uint64_t n_connections;   /* accepted and not closed, as far as the monitor told */
        uint64_t n_peak;          /* the highest n_connections seen */
        uint64_t n_sheds;
        bool shedding;
        /* Per descriptor: how many connections it has carried (the low bit: open now). */
        uint32_t *generation;
        size_t n_generation;
        ListenerClosedFn on_closed;
        void *closed_data;
} Listener;

/* Binds `router` (borrowed for the life of `l`) to `endpoints` (borrowed), local ones first, then
 * network ones with CURVE and `keys` (borrowed; endpoint_secure()), and starts counting its
 * connections, with no budget until listener_set_budget(). The ipc:// socket files it makes get
 * `access` (its group borrowed). Returns 0 or -errno, having logged why; listener_deinit() then
 * frees what was made. */
int listener_init(Listener *l, void *zmq, void *router, Loop *loop, char *const *endpoints,
                  size_t n, const EndpointKeys *keys, const EndpointAccess *access);

/* Sets the budget from the descriptors open now (call once the daemon has started its pools and
 * store), `reserve` more that transfers and workers may open, and an explicit `max_connections`
 * (0: the whole budget). Logs a warning when the open-file limit is too low. */
void listener_set_budget(Listener *l, uint64_t reserve, uint64_t max_connections);

/* Stops the monitor and closes the daemon's listening sockets (the ROUTER's close unbinds).
 * Before the ROUTER is closed and the context terminated. Accepts a zeroed `l`. */
void listener_deinit(Listener *l);

/* Reads the monitor events that arrived and sheds when the budget is reached. Call once per loop
 * turn, before reading requests. Returns true if more events may be waiting. */
bool listener_before_sleep(Listener *l);

/* The connection that descriptor `fd` (a request's ZMQ_SRCFD) carries now, as a number that no
 * other connection of the daemon's life gets: (generation << 32) | fd. Reads the monitor events
 * first, so a connection that closed and one that took its descriptor are told apart (libzmq
 * sends the close event before the new accept's, and that before the new connection's first
 * request). Returns UINT64_MAX when the connection is closed already, 0 when unknown. */
uint64_t listener_connection(Listener *l, int fd);

/* Makes the directory of an ipc:// endpoint's socket file, as a service would find it under
 * /run (mode 0755; one that exists is fine). */
void listener_make_ipc_dir(const char *endpoint);

/* The number of descriptors the process has open now (-errno if it cannot tell). */
int64_t listener_count_fds(void);
