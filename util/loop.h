/* loop: the event loop. One epoll set and one timerfd, driven by a TimerHeap.
 *
 * Each owner registers its own fd with a callback (a LoopFile embedded in the owner, as
 * dbus-broker's dispatch files and Redis's file events do) and its own timers; the loop knows
 * nothing of what they are. Every turn: wait in epoll (not at all when the last hook asked for
 * more), run the due timers, run the callbacks of the ready fds, then the one before-sleep hook
 * (Redis's beforeSleep): the place where the owner of the loop starts pending work, flushes its
 * pools and sends what a turn decided, once per turn rather than once per event.
 *
 * Level-triggered by default; an owner of an edge-triggered fd (a ZeroMQ socket's ZMQ_FD) passes
 * EPOLLET and re-checks its source from the hook. Loop thread only: the thread that runs
 * loop_run(). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "timer.h"

typedef struct Loop Loop;
typedef struct LoopFile LoopFile;

/* `events` are the epoll events that fired (EPOLLIN, EPOLLHUP, ...). */
typedef void (*LoopFileFn)(LoopFile *lf, uint32_t events);

/* The before-sleep hook. Returns true when it has more to do at once (input it left waiting):
 * the next turn then polls without sleeping. */
typedef bool (*LoopHookFn)(void *userdata);

struct LoopFile {
        int fd;        /* borrowed: the owner closes it, after loop_remove() */
        LoopFileFn fn;
};

/* Returns 0 or -errno. */
int loop_new(Loop **ret);

/* Closes the loop's own fds (not the registered ones). Accepts NULL; returns NULL. */
Loop *loop_free(Loop *l);

/* Registers `fd` for `events` (EPOLLIN, EPOLLOUT, EPOLLET, ...): `fn(lf, events)` is called when
 * it is ready. `lf` is borrowed until loop_remove(). Returns 0 or -errno. */
int loop_add(Loop *l, LoopFile *lf, int fd, uint32_t events, LoopFileFn fn);

/* Unregisters `lf` (a no-op for one never added, fd < 0 after loop_file_init()). Safe from any
 * callback, also for an fd whose event is still pending in this turn: it is not called. */
void loop_remove(Loop *l, LoopFile *lf);

/* Marks `lf` as not registered (fd -1), for owners that may call loop_remove() before loop_add. */
static inline void loop_file_init(LoopFile *lf) {
        *lf = (LoopFile){ .fd = -1 };
}

/* The loop's timers: see timer.h. Arming never fails once timer_init() succeeded. */
TimerHeap *loop_timers(Loop *l);

/* After a turn that had events, look for more without sleeping for `spin_ns` before sleeping
 * (0, the default: sleep at once). Costs CPU for that long after each burst; saves a wake-up per
 * request for a client that answers quickly. */
void loop_set_spin(Loop *l, uint64_t spin_ns);

/* Sets the one before-sleep hook. */
void loop_set_hook(Loop *l, LoopHookFn fn, void *userdata);

/* Runs turns until loop_quit(). Returns 0, or -errno if epoll failed. */
int loop_run(Loop *l);

/* Runs one turn, waiting at most `timeout_ms` (-1: until something happens) unless the hook
 * asked for more. For tests and for shutdown drains. Returns 0 or -errno. */
int loop_turn(Loop *l, int timeout_ms);

/* Makes loop_run() return after the current turn. */
void loop_quit(Loop *l);
