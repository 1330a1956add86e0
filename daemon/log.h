/* log: the daemon's log lines, at syslog priorities. Under systemd, when stderr is the journal
 * stream named by $JOURNAL_STREAM, each line goes to the journal as a structured entry
 * (PRIORITY=, SYSLOG_IDENTIFIER=futured, MESSAGE= and the job's or worker's fields), so that
 * `journalctl -p warning` and `journalctl FUTURE_ID=42` work; otherwise it is a plain
 * "futured: ..." line on stderr, as before. Lines above the level set by --log-level are dropped.
 *
 * log_open() runs once in main() before any thread starts; the rest may be called from any
 * thread (the level is read without a lock: a reload that changes it races harmlessly). */
#pragma once

#include <stdint.h>
#include <syslog.h>

/* Optional fields of a line: 0 / NULL ones are left out. */
typedef struct LogFields {
        uint64_t future_id;
        const char *job_kind;
        int worker_pid;
        int signal;
} LogFields;

/* Decides, once, between the journal and plain stderr lines. */
void log_open(void);

/* Sets the most verbose priority written (LOG_ERR .. LOG_DEBUG). */
void log_set_max_level(int level);
int log_get_max_level(void);

/* Parses err|warning|notice|info|debug. Returns the priority or -EINVAL. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

/* Writes one line at `priority` with the optional `fields` (may be NULL). */
void log_fields(int priority, const LogFields *fields, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

#define log_error(...) log_fields(LOG_ERR, NULL, __VA_ARGS__)
#define log_warning(...) log_fields(LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(...) log_fields(LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(...) log_fields(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_fields(LOG_DEBUG, NULL, __VA_ARGS__)
