/* log: see log.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include "log.h"
#include "macro.h"

static atomic_int max_level = LOG_INFO;
static bool to_journal;

static const char *const level_names[] = {
        [LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

/* systemd sets JOURNAL_STREAM=DEV:INODE of the stream it connected to stderr. Only when stderr
 * is still that stream are structured entries wanted: a shell redirect or a pipe to another
 * program must keep getting plain lines. */
void log_open(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        to_journal = e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 &&
                     fstat(STDERR_FILENO, &st) == 0 && (unsigned long long) st.st_dev == dev &&
                     (unsigned long long) st.st_ino == ino;
}

void log_set_max_level(int level) {
        atomic_store(&max_level, level);
}

int log_get_max_level(void) {
        return atomic_load(&max_level);
}

int log_level_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (level_names[i] && strcmp(s, level_names[i]) == 0)
                        return (int) i;
        return -EINVAL;
}

const char *log_level_to_string(int level) {
        return level >= 0 && (size_t) level < ELEMENTSOF(level_names) ? level_names[level] : NULL;
}

/* One journal entry. The fields are formatted into fixed buffers: a log line never allocates. */
static void send_journal(int priority, const LogFields *f, const char *message) {
        char prio[16], id[48], kind[80], pid[32], sig[32];
        struct iovec iov[8];
        size_t n = 0;
        _cleanup_free_ char *msg = NULL;

        if (asprintf(&msg, "MESSAGE=%s", message) < 0)
                return;
        iov[n++] = (struct iovec){ msg, strlen(msg) };
        snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
        iov[n++] = (struct iovec){ prio, strlen(prio) };
        iov[n++] = (struct iovec){ (char *) "SYSLOG_IDENTIFIER=futured", 25 };
        if (f && f->future_id) {
                snprintf(id, sizeof(id), "FUTURE_ID=%" PRIu64, f->future_id);
                iov[n++] = (struct iovec){ id, strlen(id) };
        }
        if (f && f->job_kind) {
                snprintf(kind, sizeof(kind), "JOB_KIND=%s", f->job_kind);
                iov[n++] = (struct iovec){ kind, strlen(kind) };
        }
        if (f && f->worker_pid) {
                snprintf(pid, sizeof(pid), "WORKER_PID=%d", f->worker_pid);
                iov[n++] = (struct iovec){ pid, strlen(pid) };
        }
        if (f && f->signal) {
                snprintf(sig, sizeof(sig), "SIGNAL=%d", f->signal);
                iov[n++] = (struct iovec){ sig, strlen(sig) };
        }
        if (sd_journal_sendv(iov, (int) n) < 0)
                fprintf(stderr, "futured: %s\n", message); /* the journal is gone: keep the line */
}

void log_fields(int priority, const LogFields *fields, const char *format, ...) {
        char message[1024];
        va_list ap;
        int saved = errno;

        if (priority > atomic_load(&max_level))
                return;
        va_start(ap, format);
        errno = saved; /* for %m */
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        if (to_journal)
                send_journal(priority, fields, message);
        else
                fprintf(stderr, "futured: %s\n", message);
        errno = saved;
}
