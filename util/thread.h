/* thread: starting the daemon's own threads. Signals belong to the loop's signalfd (loop.h), so
 * every thread starts with all of them blocked. Any thread may call it. */
#pragma once

#include <pthread.h>

/* Starts `fn(arg)` on a new thread, in *ret, with every signal blocked there; the caller's mask is
 * as it was. Returns 0 or -errno. */
int thread_start(pthread_t *ret, void *(*fn)(void *), void *arg);
