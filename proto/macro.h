/* Small helpers shared by every module: cleanup attributes, ownership transfer and array sizes.
 * Header-only, no state, any thread. */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

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
