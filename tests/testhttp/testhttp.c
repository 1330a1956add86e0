/* futured-testhttp: the HTTP server the integration tests download from, on libmicrohttpd.
 *
 * It serves the files under --root at PREFIX/{path} (the flags tree: /flags/br/br.gif), in one of
 * three modes modelled on the test servers of Fluent Python's flags2 examples: `static` answers at
 * once, `delay` waits first (a fixed time or a uniform draw from [min, max]), `error` answers
 * 418 "I'm a Teapot" with probability --error-rate. The draws come from splitmix64 seeded with
 * --seed mixed with an FNV-1a hash of the request path, so the outcome for a path depends only on
 * (seed, path), never on the order requests arrive in; --explain PATH prints it without serving.
 *
 * /misbehave/... answers the ways a server can go wrong (see help()). /_peak answers the most
 * requests that were in progress at once so far (a decimal number; itself not counted): the
 * cluster tests check a group's limit across nodes with it.
 *
 * Threads: libmicrohttpd runs one polling thread on epoll that owns every connection (HTTP/1.1
 * keep-alive included); one more thread runs the timer; the main thread only waits for SIGTERM or
 * SIGINT. The benchmarks open hundreds of connections at once, so a connection must cost a socket
 * and a little memory, never a thread. (A pool of two polling threads, MHD_OPTION_THREAD_POOL_SIZE,
 * was no faster on the 2-vCPU benchmark machine and cost more CPU: both wake for every new
 * connection on the shared listening socket.) No callback ever sleeps, as that would stall every
 * connection: a wait (the delay of delay mode, slow-headers, each trickled byte, the pace of a
 * rated /misbehave/large and its hold, the moment before a reset) suspends the connection
 * (MHD_suspend_connection()) and hands it to the timer, a min-heap of due times under one mutex
 * that a thread sleeps on with a monotonic condition variable and that resumes each connection
 * (MHD_resume_connection()) when it is due. libmicrohttpd then calls the same callback again: the
 * access handler, which finds the request marked paused in *req_cls and answers; or the content
 * reader, with the same position, which finds its response marked paused and produces the bytes. On
 * SIGTERM or SIGINT the timer refuses new pauses and resumes every suspended connection at once (a
 * callback called again before the daemon stops sees `stopping` and closes its connection), and
 * only then is the daemon stopped: libmicrohttpd forbids MHD_stop_daemon() with a connection
 * suspended.
 *
 * libmicrohttpd writes the status line itself from its own reason-phrase table, which has no entry
 * for 418. For 418 the handler writes the whole response to the socket itself, status line
 * "HTTP/1.1 418 I'm a Teapot", Content-Length and "Connection: close", and returns MHD_NO so that
 * libmicrohttpd closes the connection without writing anything. The socket is non-blocking, so a
 * full send buffer is waited out with poll(), for at most 5 s; as libmicrohttpd reads a request
 * only once the previous response on the connection has been written, the few hundred bytes
 * find room unless the client has stopped reading, and the polling thread does not wait.
 *
 * Ownership: pointer arguments are borrowed for the duration of the call and returned strings are
 * static or point into an argument, unless the function's comment says otherwise. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "now.h"

#define MISBEHAVE "/misbehave/"
#define TRICKLE_SIZE 1000000u
#define TRICKLE_INTERVAL 0.25 /* seconds per byte: 4 bytes a second */
#define SHORT_SIZE 1000u
#define SHORT_SENT 500u
#define RESET_SIZE 100000u
#define RESET_SENT 1000u
#define LARGE_MAX (1ull << 40)
#define SLOW_HEADERS_DEFAULT 30.0
#define RESET_PAUSE 0.1   /* seconds between the bytes of a reset and the reset */
#define LARGE_PACE 0.1    /* seconds between the chunks of a rated /misbehave/large */
#define LARGE_HOLD 60.0   /* seconds a /misbehave/large?hold=K waits after its first K bytes */
#define TEAPOT "I'm a Teapot"

typedef enum Mode {
        MODE_STATIC,
        MODE_DELAY,
        MODE_ERROR,
} Mode;

/* The command line; the strings are borrowed from argv. */
static struct {
        const char *root;
        const char *host;
        const char *prefix; /* "" or "/..." without a trailing slash */
        unsigned port;
        Mode mode;
        bool delay_set;
        double delay_min, delay_max;
        bool error_rate_set;
        double error_rate;
        uint64_t seed;
        const char *explain;
} arg = {
        .host = "127.0.0.1",
        .prefix = "/flags",
        .delay_min = 0.5,
        .delay_max = 5.0,
        .error_rate = 0.25,
};

static int root_fd = -1;
static atomic_bool stopping;

static void help(void) {
        printf("Usage: futured-testhttp --root DIR [OPTIONS]\n\n"
               "The HTTP server of futured's download tests. Prints 'listening on URL' as its "
               "first\n"
               "line, then serves until SIGTERM or SIGINT.\n\n"
               "  --root DIR            serve the files under DIR (required)\n"
               "  --prefix PATH         at PATH/{file} (default /flags; \"\" or / for the top)\n"
               "  --host ADDR           listen address (default 127.0.0.1; IPv6 literals work)\n"
               "  --port N              listen port (default 0: a free one)\n"
               "  --mode MODE           static (default), delay or error\n"
               "  --delay S             delay mode: sleep S seconds before each answer\n"
               "  --delay-min S         delay mode: sleep a uniform draw from [min, max]\n"
               "  --delay-max S           (default 0.5 and 5.0)\n"
               "  --error-rate F        error mode: answer 418 with probability F (default 0.25)\n"
               "  --seed N              seeds the draws (default 0); a path's outcome depends\n"
               "                        only on the seed and the path\n"
               "  --explain PATH        print what a GET of PATH would get (the status code, and\n"
               "                        in delay mode 'delay=S') and exit\n"
               "  -h, --help            show this help\n\n"
               "Always available:\n"
               "  /misbehave/trickle          Content-Length 1000000, 4 bytes a second\n"
               "  /misbehave/short            Content-Length 1000, 500 bytes, then close\n"
               "  /misbehave/large?bytes=N[&rate=B][&chunked=1][&hold=K]\n"
               "                              N bytes (byte i is i %% 251), at most B a second;\n"
               "                              chunked=1: no Content-Length, chunked encoding;\n"
               "                              hold=K: the first K bytes, then nothing for 60 s\n"
               "  /misbehave/loop             302 to itself\n"
               "  /misbehave/tofile           302 to file:///etc/passwd\n"
               "  /misbehave/redirect?to=URL  302 to URL\n"
               "  /misbehave/reset            headers and 1000 of 100000 bytes, then a TCP reset\n"
               "  /misbehave/status?code=N    status N (200..599); 418 is \"I'm a Teapot\"\n"
               "  /misbehave/slow-headers[?seconds=S]  nothing for S seconds (default 30), "
               "then 200\n");
}

/* ---- numbers, time and draws ----------------------------------------------------------------- */

static int parse_double(const char *s, double min, double max, double *ret) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno || end == s || *end || !(v >= min) || !(v <= max))
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static uint64_t fnv1a64(const char *s) {
        uint64_t h = 0xcbf29ce484222325ull;

        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= 0x100000001b3ull;
        }
        return h;
}

static uint64_t splitmix64(uint64_t *state) {
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* A uniform double in [0, 1) from the top 53 bits. */
static double unit_interval(uint64_t x) {
        return (double) (x >> 11) * 0x1.0p-53;
}

/* The mode's decision for a GET of `path` (the whole request path, prefix included): the delay
 * before answering and whether the answer is 418. Depends only on (seed, path, options). */
typedef struct Decision {
        double delay;
        bool teapot;
} Decision;

static Decision decide(const char *path) {
        uint64_t state = arg.seed ^ fnv1a64(path);
        double u_error = unit_interval(splitmix64(&state));
        double u_delay = unit_interval(splitmix64(&state));
        Decision d = {};

        if (arg.mode == MODE_DELAY)
                d.delay = arg.delay_min + (arg.delay_max - arg.delay_min) * u_delay;
        if (arg.mode == MODE_ERROR)
                d.teapot = u_error < arg.error_rate;
        return d;
}

/* ---- pauses: suspended connections and the timer that resumes them --------------------------- */

/* A connection suspended until `due` (CLOCK_MONOTONIC seconds). `c` is borrowed: libmicrohttpd
 * never frees a suspended connection, and only the timer resumes it. */
typedef struct Pause {
        double due;
        struct MHD_Connection *c;
} Pause;

/* The timer: a min-heap of pauses by due time, and the thread that resumes them. All of it is under
 * `lock`; `stopping` (a global, so that callbacks can read it without the lock) is only set with
 * `lock` held, so a pause is either in the heap before the timer drains it or refused. Lock order:
 * `lock` before libmicrohttpd's own (MHD_suspend_connection() is called with `lock` held). */
static struct {
        pthread_mutex_t lock;
        pthread_cond_t wake; /* a new head of the heap, or stopping */
        Pause *heap;         /* owned */
        size_t n, size;
        pthread_t thread;
        bool running;
} timer = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void timer_push(Pause p) {
        size_t i = timer.n++;

        while (i > 0 && timer.heap[(i - 1) / 2].due > p.due) {
                timer.heap[i] = timer.heap[(i - 1) / 2];
                i = (i - 1) / 2;
        }
        timer.heap[i] = p;
}

static Pause timer_pop(void) {
        Pause top = timer.heap[0], last = timer.heap[--timer.n];
        size_t i = 0;

        for (;;) {
                size_t child = 2 * i + 1;

                if (child >= timer.n)
                        break;
                if (child + 1 < timer.n && timer.heap[child + 1].due < timer.heap[child].due)
                        child++;
                if (last.due <= timer.heap[child].due)
                        break;
                timer.heap[i] = timer.heap[child];
                i = child;
        }
        if (timer.n > 0)
                timer.heap[i] = last;
        return top;
}

static struct timespec timespec_of(double seconds) {
        struct timespec ts = { .tv_sec = (time_t) seconds };

        ts.tv_nsec = (long) ((seconds - (double) ts.tv_sec) * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        return ts;
}

/* The timer thread: resumes each connection when it is due, and every one at once on stopping. The
 * lock is dropped around MHD_resume_connection() so that suspending never waits on a resume. */
static void *timer_run(void *unused) {
        pthread_mutex_lock(&timer.lock);
        while (!atomic_load(&stopping)) {
                struct MHD_Connection *c;

                if (timer.n == 0) {
                        pthread_cond_wait(&timer.wake, &timer.lock);
                        continue;
                }
                if (timer.heap[0].due > now_seconds()) {
                        struct timespec ts = timespec_of(timer.heap[0].due);

                        pthread_cond_timedwait(&timer.wake, &timer.lock, &ts);
                        continue;
                }
                c = timer_pop().c;
                pthread_mutex_unlock(&timer.lock);
                MHD_resume_connection(c);
                pthread_mutex_lock(&timer.lock);
        }
        /* No pause is added once stopping is set: resume every one left, so that MHD_stop_daemon()
         * finds no suspended connection. */
        while (timer.n > 0)
                MHD_resume_connection(timer_pop().c);
        pthread_mutex_unlock(&timer.lock);
        return NULL;
}

static int timer_start(void) {
        pthread_condattr_t attr;
        int r;

        r = pthread_condattr_init(&attr);
        if (r == 0) {
                r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
                if (r == 0)
                        r = pthread_cond_init(&timer.wake, &attr);
                pthread_condattr_destroy(&attr);
        }
        if (r == 0) {
                r = pthread_create(&timer.thread, NULL, timer_run, NULL);
                if (r != 0)
                        pthread_cond_destroy(&timer.wake);
        }
        if (r != 0)
                return -r;
        timer.running = true;
        return 0;
}

/* Sets `stopping`, and returns once the timer thread has resumed every suspended connection. */
static void timer_stop(void) {
        pthread_mutex_lock(&timer.lock);
        atomic_store(&stopping, true);
        pthread_cond_signal(&timer.wake);
        pthread_mutex_unlock(&timer.lock);
        if (!timer.running)
                return;
        pthread_join(timer.thread, NULL);
        pthread_cond_destroy(&timer.wake);
        free(timer.heap);
        timer.heap = NULL;
        timer.size = 0;
        timer.running = false;
}

/* Suspends `c` for `seconds`: the timer resumes it then, or at once when the server stops. Call
 * only from c's access handler or content reader (libmicrohttpd's rule for suspending). Returns 0,
 * -ECANCELED when the server is stopping, -ENOMEM; on failure `c` is not suspended. */
static int timer_suspend(struct MHD_Connection *c, double seconds) {
        Pause p = { .due = now_seconds() + seconds, .c = c };
        int r = 0;

        pthread_mutex_lock(&timer.lock);
        if (atomic_load(&stopping))
                r = -ECANCELED;
        else if (timer.n == timer.size) {
                size_t size = MAX(timer.size * 2, (size_t) 256);
                Pause *heap = reallocarray(timer.heap, size, sizeof(Pause));

                if (heap) {
                        timer.heap = heap;
                        timer.size = size;
                } else
                        r = -ENOMEM;
        }
        if (r == 0) {
                /* Suspended before it is in the heap, and the timer cannot pop it before we unlock:
                 * the resume always follows the suspend. */
                MHD_suspend_connection(c);
                timer_push(p);
                if (timer.heap[0].c == c)
                        pthread_cond_signal(&timer.wake);
        }
        pthread_mutex_unlock(&timer.lock);
        if (r == -ENOMEM)
                fprintf(stderr, "futured-testhttp: no memory for a pause, closing a connection\n");
        return r;
}

/* One wait of `seconds` in the answer to a request, for a callback that libmicrohttpd calls again
 * once the connection is resumed. `*paused` (the caller's state, false at first) says whether this
 * call follows the wait. Returns 1 to go on (the wait is over, or `seconds` is 0), 0 when the
 * connection is now suspended (return, and go on when called again), or -errno when the server is
 * stopping (or out of memory): give up and close the connection. */
static int pause_once(struct MHD_Connection *c, bool *paused, double seconds) {
        int r;

        if (*paused) {
                *paused = false;
                return atomic_load(&stopping) ? -ECANCELED : 1;
        }
        if (!(seconds > 0))
                return atomic_load(&stopping) ? -ECANCELED : 1;
        r = timer_suspend(c, seconds);
        if (r < 0)
                return r;
        *paused = true;
        return 0;
}

/* ---- files ----------------------------------------------------------------------------------- */

static bool has_dotdot(const char *rel) {
        for (const char *c = rel, *end; c; c = end ? end + 1 : NULL) {
                end = strchr(c, '/');
                size_t n = end ? (size_t) (end - c) : strlen(c);
                if (n == 2 && c[0] == '.' && c[1] == '.')
                        return true;
        }
        return false;
}

/* Opens the regular file `rel` (relative to the root) for reading, never resolving outside the
 * root. Returns the fd (owned by the caller) and *ret_size, or -1 with *ret_status the HTTP status
 * to answer: 403 for a path that leaves the root, 404 for anything not a readable regular file. */
static int open_file(const char *rel, uint64_t *ret_size, unsigned *ret_status) {
        struct open_how how = {
                .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        _cleanup_close_ int fd = -1;
        struct stat st;
        long r;

        *ret_status = 404;
        if (has_dotdot(rel)) {
                *ret_status = 403;
                return -1;
        }
        while (*rel == '/')
                rel++;
        if (!*rel)
                return -1;
        r = syscall(SYS_openat2, root_fd, rel, &how, sizeof(how));
        if (r < 0) {
                if (errno == EXDEV)
                        *ret_status = 403;
                return -1;
        }
        fd = (int) r;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return -1;
        *ret_size = (uint64_t) st.st_size;
        *ret_status = 200;
        return TAKE_FD(fd);
}

static const char *content_type(const char *path) {
        static const struct {
                const char *ext, *type;
        } types[] = {
                { ".gif", "image/gif" },   { ".png", "image/png" },
                { ".json", "application/json" }, { ".txt", "text/plain" },
                { ".html", "text/html" },
        };
        const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');

        if (dot && (!slash || dot > slash))
                for (size_t i = 0; i < ELEMENTSOF(types); i++)
                        if (strcmp(dot, types[i].ext) == 0)
                                return types[i].type;
        return "application/octet-stream";
}

/* The file path under the root that `path` names, or NULL when it is not under the prefix. The
 * result points into `path`. */
static const char *under_prefix(const char *path) {
        size_t n = strlen(arg.prefix);

        if (strncmp(path, arg.prefix, n) != 0 || path[n] != '/')
                return NULL;
        return path + n + 1;
}

/* ---- answering ------------------------------------------------------------------------------- */

/* Writes all of `buf` to the non-blocking socket `fd` (borrowed), waiting up to 5 s for room. */
static int send_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        struct pollfd p = { .fd = fd, .events = POLLOUT };
                        if (poll(&p, 1, 5000) <= 0)
                                return -ETIMEDOUT;
                        continue;
                }
                if (n < 0)
                        return -errno;
                buf += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Answers with a reason phrase libmicrohttpd does not know by writing the response itself, then
 * has libmicrohttpd close the connection (MHD_NO). */
static enum MHD_Result reply_raw(struct MHD_Connection *c, bool head, unsigned status,
                                 const char *reason, const char *body) {
        const union MHD_ConnectionInfo *info =
                MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        _cleanup_free_ char *msg = NULL;
        int n;

        if (!info)
                return MHD_NO;
        n = asprintf(&msg,
                     "HTTP/1.1 %u %s\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "\r\n"
                     "%s",
                     status, reason, strlen(body), head ? "" : body);
        if (n < 0)
                return MHD_NO;
        (void) send_all(info->connect_fd, msg, (size_t) n);
        return MHD_NO;
}

/* Queues `resp` (consumed) with `status`. */
static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *resp) {
        enum MHD_Result r;

        if (!resp)
                return MHD_NO;
        r = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
        return r;
}

/* Answers `status` with a text body: `text` followed by a newline, or the reason phrase. */
static enum MHD_Result reply_text(struct MHD_Connection *c, bool head, unsigned status,
                                  const char *text) {
        _cleanup_free_ char *body = NULL;
        struct MHD_Response *resp;

        if (status == 418)
                return reply_raw(c, head, status, TEAPOT, TEAPOT "\n");
        if (asprintf(&body, "%s\n", text ? text : MHD_get_reason_phrase_for(status)) < 0)
                return MHD_NO;
        resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
        if (resp)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
        return queue(c, status, resp);
}

static enum MHD_Result reply_redirect(struct MHD_Connection *c, const char *location) {
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);

        if (resp)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
        return queue(c, MHD_HTTP_FOUND, resp);
}

/* `*paused`: the request's state for pause_once(). */
static enum MHD_Result serve_file(struct MHD_Connection *c, bool head, const char *path,
                                  const char *rel, bool *paused) {
        Decision d = decide(path);
        struct MHD_Response *resp;
        uint64_t size = 0;
        unsigned status;
        int fd, r;

        if (d.delay > 0) {
                r = pause_once(c, paused, d.delay);
                if (r <= 0)
                        return r < 0 ? MHD_NO : MHD_YES;
        }
        if (d.teapot)
                return reply_text(c, head, 418, NULL);
        fd = open_file(rel, &size, &status);
        if (fd < 0)
                return reply_text(c, head, status, NULL);
        /* The response owns the fd once made; on failure it is still ours. */
        resp = MHD_create_response_from_fd64(size, fd);
        if (!resp) {
                close(fd);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type(rel));
        return queue(c, MHD_HTTP_OK, resp);
}

/* The state of a content reader that waits: its connection, and its state for pause_once(). A
 * response is made for one request, so it is read by that connection only. */
typedef struct Paced {
        struct MHD_Connection *c; /* borrowed: outlives its response */
        bool paused;
} Paced;

/* Waits `seconds` (see pause_once()) in a content reader: returns 1 to go on, or what the reader
 * returns: 0 (suspended; libmicrohttpd calls again, with the same position, once resumed) or
 * MHD_CONTENT_READER_END_WITH_ERROR. */
static ssize_t pace(Paced *p, double seconds) {
        int r = pause_once(p->c, &p->paused, seconds);

        if (r < 0)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        return r;
}

/* trickle: the first call sends one byte at once (so that the headers go out), then one byte per
 * TRICKLE_INTERVAL. `cls` is a Paced. */
static ssize_t trickle_read(void *cls, uint64_t pos, char *buf, size_t max) {
        ssize_t r;

        if (pos > 0 && (r = pace(cls, TRICKLE_INTERVAL)) != 1)
                return r;
        buf[0] = 't';
        return 1;
}

/* short: the first SHORT_SENT bytes of a SHORT_SIZE body, then the end of the stream, on which
 * libmicrohttpd closes the connection. */
static ssize_t short_read(void *cls, uint64_t pos, char *buf, size_t max) {
        size_t n;

        if (pos >= SHORT_SENT)
                return MHD_CONTENT_READER_END_OF_STREAM;
        n = MIN(max, (size_t) (SHORT_SENT - pos));
        memset(buf, 's', n);
        return (ssize_t) n;
}

typedef struct Large {
        uint64_t bytes;
        uint64_t rate; /* bytes a second, 0 for as fast as possible */
        uint64_t hold; /* after this many bytes (0: none), wait LARGE_HOLD once */
        bool held;     /* ... which it did */
        Paced pace;
} Large;

/* large: with a rate, a tenth of it every LARGE_PACE (0.1 s), the first at once. */
static ssize_t large_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Large *l = cls;
        size_t n = (size_t) MIN((uint64_t) max, l->bytes - MIN(pos, l->bytes));
        ssize_t r;

        if (n == 0)
                return MHD_CONTENT_READER_END_OF_STREAM;
        if (l->hold && !l->held && pos < l->hold)
                n = (size_t) MIN((uint64_t) n, l->hold - pos);
        else if (l->hold && !l->held) {
                if ((r = pace(&l->pace, LARGE_HOLD)) != 1)
                        return r;
                l->held = true;
        }
        if (l->rate > 0) {
                n = (size_t) MIN((uint64_t) n, MAX(l->rate / 10, (uint64_t) 1));
                if (pos > 0 && (r = pace(&l->pace, LARGE_PACE)) != 1)
                        return r;
        }
        for (size_t i = 0; i < n; i++)
                buf[i] = (char) ((pos + i) % 251);
        return (ssize_t) n;
}

typedef struct Reset {
        int fd; /* the connection's socket, borrowed from libmicrohttpd */
        Paced pace;
} Reset;

/* reset: RESET_SENT bytes, then, once they have had time to arrive (RESET_PAUSE, cut short if the
 * server stops), a TCP reset: SO_LINGER 0 and a disconnect (connect to AF_UNSPEC), which on Linux
 * sends RST at once, whatever libmicrohttpd does with the socket afterwards. */
static ssize_t reset_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Reset *r = cls;
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        struct sockaddr sa = { .sa_family = AF_UNSPEC };
        size_t n;

        if (pos < RESET_SENT) {
                n = MIN(max, (size_t) (RESET_SENT - pos));
                memset(buf, 'r', n);
                return (ssize_t) n;
        }
        if (pace(&r->pace, RESET_PAUSE) == 0)
                return 0;
        (void) setsockopt(r->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        (void) connect(r->fd, &sa, sizeof(sa));
        return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* `*paused`: the request's state for pause_once(). */
static enum MHD_Result misbehave(struct MHD_Connection *c, bool head, const char *what,
                                 bool *paused) {
        const char *v;
        struct MHD_Response *resp;

        if (strcmp(what, "trickle") == 0) {
                _cleanup_free_ Paced *t = calloc(1, sizeof(Paced));

                if (!t)
                        return MHD_NO;
                t->c = c;
                /* On success the response owns `t` and frees it with free(). */
                resp = MHD_create_response_from_callback(TRICKLE_SIZE, 64, trickle_read, t, free);
                if (resp)
                        t = NULL;
                return queue(c, MHD_HTTP_OK, resp);
        }
        if (strcmp(what, "short") == 0) {
                resp = MHD_create_response_from_callback(SHORT_SIZE, 4096, short_read, NULL, NULL);
                return queue(c, MHD_HTTP_OK, resp);
        }
        if (strcmp(what, "large") == 0) {
                _cleanup_free_ Large *l = calloc(1, sizeof(Large));
                uint64_t chunked = 0;

                if (!l)
                        return MHD_NO;
                l->pace.c = c;
                v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "bytes");
                if (!v || parse_u64(v, LARGE_MAX, &l->bytes) < 0)
                        return reply_text(c, head, MHD_HTTP_BAD_REQUEST,
                                          "bytes=N (0..2^40) required");
                v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "rate");
                if (v && parse_u64(v, UINT64_MAX, &l->rate) < 0)
                        return reply_text(c, head, MHD_HTTP_BAD_REQUEST, "rate=B must be a number");
                v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "chunked");
                if (v && parse_u64(v, 1, &chunked) < 0)
                        return reply_text(c, head, MHD_HTTP_BAD_REQUEST, "chunked=0 or chunked=1");
                v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "hold");
                if (v && parse_u64(v, LARGE_MAX, &l->hold) < 0)
                        return reply_text(c, head, MHD_HTTP_BAD_REQUEST, "hold=K must be a number");
                /* On success the response owns `l` and frees it with free(). */
                resp = MHD_create_response_from_callback(chunked ? MHD_SIZE_UNKNOWN : l->bytes,
                                                         64 * 1024, large_read, l, free);
                if (resp)
                        l = NULL;
                return queue(c, MHD_HTTP_OK, resp);
        }
        if (strcmp(what, "loop") == 0)
                return reply_redirect(c, MISBEHAVE "loop");
        if (strcmp(what, "tofile") == 0)
                return reply_redirect(c, "file:///etc/passwd");
        if (strcmp(what, "redirect") == 0) {
                const char *to = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "to");
                if (!to || !to[0])
                        return reply_text(c, head, MHD_HTTP_BAD_REQUEST, "to=URL required");
                return reply_redirect(c, to);
        }
        if (strcmp(what, "reset") == 0) {
                const union MHD_ConnectionInfo *info =
                        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
                _cleanup_free_ Reset *r = calloc(1, sizeof(Reset));

                if (!r || !info)
                        return MHD_NO;
                r->fd = info->connect_fd;
                r->pace.c = c;
                /* On success the response owns `r`. */
                resp = MHD_create_response_from_callback(RESET_SIZE, 4096, reset_read, r, free);
                if (resp)
                        r = NULL;
                return queue(c, MHD_HTTP_OK, resp);
        }
        if (strcmp(what, "status") == 0) {
                uint64_t code;

                v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "code");
                if (!v || parse_u64(v, 599, &code) < 0 || code < 200)
                        return reply_text(c, head, MHD_HTTP_BAD_REQUEST,
                                          "code=N (200..599) required");
                return reply_text(c, head, (unsigned) code, NULL);
        }
        if (strcmp(what, "slow-headers") == 0) {
                double seconds = SLOW_HEADERS_DEFAULT;
                int r;

                v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "seconds");
                if (v && parse_double(v, 0, 86400, &seconds) < 0)
                        return reply_text(c, head, MHD_HTTP_BAD_REQUEST,
                                          "seconds=S must be a number");
                r = pause_once(c, paused, seconds);
                if (r <= 0)
                        return r < 0 ? MHD_NO : MHD_YES;
                return reply_text(c, head, MHD_HTTP_OK, "finally");
        }
        return reply_text(c, head, MHD_HTTP_NOT_FOUND, NULL);
}

/* What a request's *req_cls points to: NULL before the first call, then one of these (`peek`:
 * a /_peak request, not counted). */
static char req_started, req_paused, req_peek;

/* Requests in progress (from their headers to their completion), and the most at once. */
static atomic_uint in_flight, peak;

static void count_request(void) {
        unsigned n = atomic_fetch_add(&in_flight, 1) + 1, p = atomic_load(&peak);

        while (n > p && !atomic_compare_exchange_weak(&peak, &p, n))
                ;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
        bool head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0, paused;
        const char *rel;
        enum MHD_Result r;

        /* First call: headers only. Later calls: any request body, which is ignored; then the
         * answer, or a pause and, once the connection is resumed, the answer. */
        if (!*req_cls) {
                if (strcmp(url, "/_peak") == 0) {
                        *req_cls = &req_peek;
                        return MHD_YES;
                }
                count_request();
                *req_cls = &req_started;
                return MHD_YES;
        }
        if (*req_cls == &req_peek) {
                char text[16];
                snprintf(text, sizeof(text), "%u", atomic_load(&peak));
                return reply_text(c, head, MHD_HTTP_OK, text);
        }
        if (*upload_data_size > 0) {
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (!head && strcmp(method, MHD_HTTP_METHOD_GET) != 0)
                return reply_text(c, head, MHD_HTTP_METHOD_NOT_ALLOWED, NULL);
        paused = *req_cls == &req_paused;
        if (strncmp(url, MISBEHAVE, strlen(MISBEHAVE)) == 0)
                r = misbehave(c, head, url + strlen(MISBEHAVE), &paused);
        else if ((rel = under_prefix(url)))
                r = serve_file(c, head, url, rel, &paused);
        else
                r = reply_text(c, head, MHD_HTTP_NOT_FOUND, NULL);
        *req_cls = paused ? &req_paused : &req_started;
        return r;
}

/* Forgets the request, so that the next one on a kept-alive connection starts afresh. */
static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
        if (*req_cls && *req_cls != &req_peek)
                atomic_fetch_sub(&in_flight, 1);
        *req_cls = NULL;
}

/* ---- main ------------------------------------------------------------------------------------ */

/* --explain: what a GET of `path` would get, without the delay. */
static int explain(const char *path) {
        _cleanup_free_ char *p = strdup(path);
        const char *rel;
        unsigned status;
        uint64_t size;
        Decision d;
        int fd;

        if (!p)
                return EXIT_FAILURE;
        p[strcspn(p, "?")] = 0;
        if (strncmp(p, MISBEHAVE, strlen(MISBEHAVE)) == 0) {
                printf("misbehave\n");
                return EXIT_SUCCESS;
        }
        rel = under_prefix(p);
        if (!rel) {
                printf("404\n");
                return EXIT_SUCCESS;
        }
        d = decide(p);
        if (d.teapot)
                status = 418;
        else {
                fd = open_file(rel, &size, &status);
                if (fd >= 0)
                        close(fd);
        }
        if (arg.mode == MODE_DELAY)
                printf("%u delay=%.6f\n", status, d.delay);
        else
                printf("%u\n", status);
        return EXIT_SUCCESS;
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_ROOT = 0x100,
                ARG_PORT,
                ARG_HOST,
                ARG_MODE,
                ARG_DELAY,
                ARG_DELAY_MIN,
                ARG_DELAY_MAX,
                ARG_ERROR_RATE,
                ARG_SEED,
                ARG_PREFIX,
                ARG_EXPLAIN,
        };
        static const struct option options[] = {
                { "root", required_argument, NULL, ARG_ROOT },
                { "port", required_argument, NULL, ARG_PORT },
                { "host", required_argument, NULL, ARG_HOST },
                { "mode", required_argument, NULL, ARG_MODE },
                { "delay", required_argument, NULL, ARG_DELAY },
                { "delay-min", required_argument, NULL, ARG_DELAY_MIN },
                { "delay-max", required_argument, NULL, ARG_DELAY_MAX },
                { "error-rate", required_argument, NULL, ARG_ERROR_RATE },
                { "seed", required_argument, NULL, ARG_SEED },
                { "prefix", required_argument, NULL, ARG_PREFIX },
                { "explain", required_argument, NULL, ARG_EXPLAIN },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        static char prefix[1024];
        bool fixed = false, ranged = false;
        uint64_t u;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_ROOT:
                        arg.root = optarg;
                        break;
                case ARG_PORT:
                        if (parse_u64(optarg, 65535, &u) < 0) {
                                fprintf(stderr, "futured-testhttp: bad --port '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg.port = (unsigned) u;
                        break;
                case ARG_HOST:
                        arg.host = optarg;
                        break;
                case ARG_MODE:
                        if (strcmp(optarg, "static") == 0)
                                arg.mode = MODE_STATIC;
                        else if (strcmp(optarg, "delay") == 0)
                                arg.mode = MODE_DELAY;
                        else if (strcmp(optarg, "error") == 0)
                                arg.mode = MODE_ERROR;
                        else {
                                fprintf(stderr,
                                        "futured-testhttp: --mode is static, delay or error\n");
                                return -EINVAL;
                        }
                        break;
                case ARG_DELAY:
                        if (parse_double(optarg, 0, 86400, &arg.delay_min) < 0) {
                                fprintf(stderr, "futured-testhttp: bad --delay '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg.delay_max = arg.delay_min;
                        fixed = true;
                        break;
                case ARG_DELAY_MIN:
                case ARG_DELAY_MAX: {
                        double *delay = c == ARG_DELAY_MIN ? &arg.delay_min : &arg.delay_max;
                        if (parse_double(optarg, 0, 86400, delay) < 0) {
                                fprintf(stderr, "futured-testhttp: bad delay '%s'\n", optarg);
                                return -EINVAL;
                        }
                        ranged = true;
                        break;
                }
                case ARG_ERROR_RATE:
                        if (parse_double(optarg, 0, 1, &arg.error_rate) < 0) {
                                fprintf(stderr, "futured-testhttp: --error-rate is from 0 to 1\n");
                                return -EINVAL;
                        }
                        arg.error_rate_set = true;
                        break;
                case ARG_SEED:
                        if (parse_u64(optarg, UINT64_MAX, &arg.seed) < 0) {
                                fprintf(stderr, "futured-testhttp: bad --seed '%s'\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_PREFIX: {
                        size_t n = strlen(optarg);

                        while (n > 0 && optarg[n - 1] == '/')
                                n--;
                        if ((n > 0 && optarg[0] != '/') || n >= sizeof(prefix)) {
                                fprintf(stderr, "futured-testhttp: --prefix must start with /\n");
                                return -EINVAL;
                        }
                        memcpy(prefix, optarg, n);
                        prefix[n] = 0;
                        arg.prefix = prefix;
                        break;
                }
                case ARG_EXPLAIN:
                        arg.explain = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "futured-testhttp: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        if (!arg.root) {
                fprintf(stderr, "futured-testhttp: --root DIR is required\n");
                return -EINVAL;
        }
        if (fixed && ranged) {
                fprintf(stderr, "futured-testhttp: --delay or --delay-min/--delay-max, not both\n");
                return -EINVAL;
        }
        if (arg.delay_min > arg.delay_max) {
                fprintf(stderr, "futured-testhttp: --delay-min is more than --delay-max\n");
                return -EINVAL;
        }
        if ((fixed || ranged) && arg.mode != MODE_DELAY) {
                fprintf(stderr, "futured-testhttp: a delay needs --mode delay\n");
                return -EINVAL;
        }
        if (arg.error_rate_set && arg.mode != MODE_ERROR) {
                fprintf(stderr, "futured-testhttp: --error-rate needs --mode error\n");
                return -EINVAL;
        }
        return 1;
}

int main(int argc, char *argv[]) {
        struct sockaddr_storage ss = {};
        const union MHD_DaemonInfo *info;
        struct MHD_Daemon *d;
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
        sigset_t mask;
        bool v6;
        int r, sig;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        v6 = strchr(arg.host, ':') != NULL;

        root_fd = open(arg.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root_fd < 0) {
                fprintf(stderr, "futured-testhttp: cannot open --root %s: %m\n", arg.root);
                return EXIT_FAILURE;
        }
        if (arg.explain)
                return explain(arg.explain);

        if (v6) {
                struct sockaddr_in6 *sa = (struct sockaddr_in6 *) &ss;
                sa->sin6_family = AF_INET6;
                sa->sin6_port = htons((uint16_t) arg.port);
                r = inet_pton(AF_INET6, arg.host, &sa->sin6_addr);
                flags |= MHD_USE_IPv6;
        } else {
                struct sockaddr_in *sa = (struct sockaddr_in *) &ss;
                sa->sin_family = AF_INET;
                sa->sin_port = htons((uint16_t) arg.port);
                r = inet_pton(AF_INET, arg.host, &sa->sin_addr);
        }
        if (r != 1) {
                fprintf(stderr, "futured-testhttp: --host must be an IP address, not '%s'\n",
                        arg.host);
                return EXIT_FAILURE;
        }

        /* Before any thread exists, so that only sigwait() below sees these. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = timer_start();
        if (r < 0) {
                fprintf(stderr, "futured-testhttp: cannot start the timer: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        d = MHD_start_daemon(flags, (uint16_t) arg.port, NULL, NULL, on_request, NULL,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &ss,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 120,
                             /* 8 KiB, not the default 32: libmicrohttpd clears a connection's
                              * pool for every request, and with hundreds of requests at once
                              * that memset was the largest cost in user space. */
                             MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 8192,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                             MHD_OPTION_END);
        if (!d) {
                fprintf(stderr, "futured-testhttp: cannot listen on %s port %u: %m\n", arg.host,
                        arg.port);
                timer_stop();
                return EXIT_FAILURE;
        }
        info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        printf(v6 ? "listening on http://[%s]:%u\n" : "listening on http://%s:%u\n", arg.host,
               info ? (unsigned) info->port : arg.port);
        fflush(stdout);

        for (;;) {
                r = sigwait(&mask, &sig);
                if (r == 0 && (sig == SIGTERM || sig == SIGINT))
                        break;
        }
        /* Every suspended connection resumed first: libmicrohttpd's rule for stopping. */
        timer_stop();
        MHD_stop_daemon(d);
        close(root_fd);
        return EXIT_SUCCESS;
}
