/* macro: small helpers shared by every module (cleanup attributes, ownership transfer, array
 * sizes, intrusive lists), and the project's one error rule. Header-only, no state, any thread.
 *
 * THE ERROR RULE, for every module of futured:
 * - A fallible function returns int: >= 0 success, -errno failure (-ENOMEM, -EINVAL, ...). A
 *   libc failure is converted at once (`return -errno;`).
 * - An expected outcome the caller must handle (a quota reached, a condition that already holds,
 *   a queue that is full) is a positive code of that module, named MODULE_SOMETHING and
 *   documented at the function; 0 stays "done as asked".
 * - A pointer-returning function returns NULL only for "not there"; a failure that has a reason
 *   goes through an `int` return and a ret_* out-parameter, left untouched on failure.
 * - A function logs only when its comment says so ("logs why"); otherwise the caller, which
 *   decides what to do, logs once with the object and strerror(-r).
 * - assert() is for programmer errors only; nothing a client or a worker sends may reach one.
 * - Command-line tools turn -errno into an exit status at one place; exit statuses never carry
 *   errno values.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

#define container_of(ptr, type, member) ((type *) ((char *) (ptr) - offsetof(type, member)))

/* Intrusive doubly linked lists: `head` points at the first item, and each item links to its
 * neighbours through the two fields named by `prev` and `next`. */
#define LIST_PREPEND(head, item, prev, next)                                                       \
        do {                                                                                       \
                (item)->prev = NULL;                                                               \
                (item)->next = (head);                                                             \
                if (head)                                                                          \
                        (head)->prev = (item);                                                     \
                (head) = (item);                                                                   \
        } while (0)

/* Singly linked FIFO queues: `head` and `tail`, each item's `next` (NULL at the end). */
#define QUEUE_APPEND(head, tail, item)                                                             \
        do {                                                                                       \
                (item)->next = NULL;                                                               \
                if (tail)                                                                          \
                        (tail)->next = (item);                                                     \
                else                                                                               \
                        (head) = (item);                                                           \
                (tail) = (item);                                                                   \
        } while (0)

#define LIST_REMOVE(head, item, prev, next)                                                        \
        do {                                                                                       \
                if ((item)->prev)                                                                  \
                        (item)->prev->next = (item)->next;                                         \
                else                                                                               \
                        (head) = (item)->next;                                                     \
                if ((item)->next)                                                                  \
                        (item)->next->prev = (item)->prev;                                         \
                (item)->prev = (item)->next = NULL;                                                \
        } while (0)

/* Hands the pointer in `p` to the caller and leaves NULL behind, so a _cleanup_ does not free it. */
#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                __typeof__(p) _p = (p);                                                            \
                (p) = NULL;                                                                        \
                _p;                                                                                \
        })

#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _fd = (fd);                                                                    \
                (fd) = -1;                                                                         \
                _fd;                                                                               \
        })

/* Defines foo_freep(Foo **p) for use with _cleanup_. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
        static inline void func##p(type *p) {                                                      \
                if (*p)                                                                            \
                        func(*p);                                                                  \
        }

/* free() that returns NULL, for `p = mfree(p);`. */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)
