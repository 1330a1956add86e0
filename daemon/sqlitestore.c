/* sqlitestore: see sqlitestore.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "sqlitestore.h"

enum {
        STMT_ADD,
        STMT_START,
        STMT_FINISH,
        STMT_REQUEUE,
        STMT_REMOVE,
        STMT_NEXT_ID,
        STMT_BEGIN,
        STMT_COMMIT,
        STMT_ROLLBACK,
        _STMT_MAX,
};

static const char *const stmt_sql[_STMT_MAX] = {
        [STMT_ADD] = ("INSERT INTO jobs (id, kind, args, grp, group_limit, priority, timeout_ms, "
                      "retries, attempt, state, idempotency_key, principal) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        [STMT_START] = "UPDATE jobs SET state = 1, attempt = ?2, owner = ?3 WHERE id = ?1",
        [STMT_FINISH] = ("UPDATE jobs SET state = ?2, outcome = ?3, finished_at = ?4, args = NULL "
                         "WHERE id = ?1"),
        [STMT_REQUEUE] = "UPDATE jobs SET state = 0, attempt = ?2 WHERE id = ?1",
        [STMT_REMOVE] = "DELETE FROM jobs WHERE id = ?1",
        [STMT_NEXT_ID] = "UPDATE settings SET value = ?1 WHERE key = 'next_id' AND value < ?1",
        [STMT_BEGIN] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_ROLLBACK] = "ROLLBACK",
};

/* The schema of version 1. A later version adds its migration from the one before to
 * migrate(), never changes this text. */
static const char schema_v1[] =
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO settings VALUES ('next_id', 1);"
        "CREATE TABLE jobs ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " args BLOB,"
        " grp TEXT,"
        " group_limit INTEGER NOT NULL DEFAULT 0,"
        " priority INTEGER NOT NULL DEFAULT 0,"
        " timeout_ms INTEGER NOT NULL DEFAULT 0,"
        " retries INTEGER NOT NULL DEFAULT 0,"
        " attempt INTEGER NOT NULL DEFAULT 0,"
        " state INTEGER NOT NULL,"
        " outcome BLOB,"
        " finished_at INTEGER,"
        " idempotency_key TEXT,"
        " owner TEXT);"
        "PRAGMA user_version = 1;";

/* Version 2: who submitted each job (principal.h). Jobs of version 1 have none (NULL), which
 * recovery reads as the principal "unknown". */
static const char migrate_v1_v2[] = "ALTER TABLE jobs ADD COLUMN principal TEXT;"
                                    "PRAGMA user_version = 2;";

struct SqliteStore {
        sqlite3 *db;
        char owner[300];   /* "HOST:PID": who runs the jobs it starts (a cluster fences on it) */
        char *path;
        char *wal_path;
        int lock_fd;
        sqlite3_stmt *stmt[_STMT_MAX];
        unsigned commits;
};

/* Maps an SQLite result code to -errno, as this module reports them. */
static int errno_of(int rc) {
        switch (rc & 0xff) {
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_NOTADB:
        case SQLITE_CORRUPT:
        case SQLITE_FORMAT:
                return -EBADMSG;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_CANTOPEN:
        case SQLITE_PERM:
        case SQLITE_READONLY:
                return -EACCES;
        case SQLITE_NOMEM:
                return -ENOMEM;
        default:
                return -EIO;
        }
}

/* Logs a refusal to open the store with what to do about it. Returns `r`. */
static int refuse(const char *path, int r, const char *why) {
        const char *todo = "";

        if (r == -EBADMSG)
                todo = "; it was left untouched: move it away (or restore a backup) to start "
                       "afresh";
        else if (r == -EPROTO)
                todo = "; it was left untouched: run the futured that wrote it, or a newer one";
        else if (r == -EBUSY)
                todo = "; stop the other futured, or give this one another --state-dir";
        log_error("cannot use the store %s: %s%s", path, why, todo);
        return r;
}

static int exec(SqliteStore *s, const char *sql) {
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

        return rc == SQLITE_OK ? 0 : errno_of(rc);
}

static int query_int(SqliteStore *s, const char *sql, int64_t *ret) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

        if (rc != SQLITE_OK)
                return errno_of(rc);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : errno_of(rc);
}

/* Brings a file of an older schema up to this one, in one transaction: a new file gets version
 * 1, then each step takes it to the next version. A later version adds its step at the end and
 * never changes an earlier one. */
static int migrate(SqliteStore *s, int64_t version) {
        int r = 0;

        if (version == 0 && (r = exec(s, schema_v1)) >= 0)
                version = 1;
        if (r >= 0 && version == 1 && (r = exec(s, migrate_v1_v2)) >= 0)
                version = 2;
        return r;
}

/* Checks and, for a new file, creates the schema. */
static int setup_schema(SqliteStore *s) {
        int64_t version = 0, tables = 0;
        int r;

        r = query_int(s, "PRAGMA user_version", &version);
        if (r >= 0)
                r = query_int(s, "SELECT count(*) FROM sqlite_master", &tables);
        if (r < 0)
                return refuse(s->path, r == -EBADMSG ? r : -EBADMSG,
                              "it is not a futured database, or it is damaged");
        if (version > SQLITESTORE_VERSION)
                return refuse(s->path, -EPROTO, "it was written by a newer futured (schema version "
                                                "newer than " STRINGIFY(SQLITESTORE_VERSION) ")");
        if (version == 0 && tables > 0)
                return refuse(s->path, -EBADMSG, "it is an SQLite database, but not futured's");
        if (version == SQLITESTORE_VERSION)
                return 0;
        /* A new file: auto_vacuum only takes effect before the first table. */
        if ((version == 0 && (r = exec(s, "PRAGMA auto_vacuum = INCREMENTAL")) < 0) ||
            (r = exec(s, "BEGIN IMMEDIATE")) < 0)
                return refuse(s->path, r, "cannot write to it");
        r = migrate(s, version);
        if (r < 0) {
                (void) exec(s, "ROLLBACK");
                return refuse(s->path, r, version == 0 ? "cannot create its tables"
                                                       : "cannot migrate it to this version");
        }
        r = exec(s, "COMMIT");
        if (r < 0)
                return refuse(s->path, r, "cannot create or migrate its tables");
        if (version > 0)
                fprintf(stderr, "futured: %s: migrated from schema version %" PRId64 " to "
                                STRINGIFY(SQLITESTORE_VERSION) "\n", s->path, version);
        return 0;
}

int sqlitestore_open(SqliteStore **ret, const char *path, bool full_sync, uint64_t *ret_next_id) {
        SqliteStore *s = calloc(1, sizeof(*s));
        int64_t next_id = 1;
        int r, rc;

        if (!s)
                return -ENOMEM;
        s->lock_fd = -1;
        store_owner_format(s->owner, sizeof(s->owner), NULL);
        s->path = strdup(path);
        if (!s->path || asprintf(&s->wal_path, "%s-wal", path) < 0) {
                s->wal_path = NULL;
                r = -ENOMEM;
                goto fail;
        }
        /* Lock first: a second futured must not even open the file. */
        s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (s->lock_fd < 0) {
                /* Not a file futured may read and write: the operator's to fix. */
                r = refuse(path, errno == ENOMEM ? -ENOMEM : -EACCES, strerror(errno));
                goto fail;
        }
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
                r = errno == EWOULDBLOCK ? refuse(path, -EBUSY, "another futured has it open")
                                         : refuse(path, -errno, strerror(errno));
                goto fail;
        }
        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                r = refuse(path, errno_of(rc), sqlite3_errstr(rc));
                goto fail;
        }
        sqlite3_extended_result_codes(s->db, 1);
        r = setup_schema(s);
        if (r < 0)
                goto fail;
        if ((r = exec(s, "PRAGMA journal_mode = WAL")) < 0 ||
            (r = exec(s, full_sync ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")) <
                    0) {
                r = refuse(path, r, "cannot set it to WAL mode");
                goto fail;
        }
        r = query_int(s, "SELECT value FROM settings WHERE key = 'next_id'", &next_id);
        if (r < 0) {
                r = refuse(path, -EBADMSG, "its settings table is damaged");
                goto fail;
        }
        for (int i = 0; i < _STMT_MAX; i++) {
                rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                        &s->stmt[i], NULL);
                if (rc != SQLITE_OK) {
                        r = refuse(path, -EBADMSG, sqlite3_errmsg(s->db));
                        goto fail;
                }
        }
        *ret_next_id = (uint64_t) next_id;
        *ret = s;
        return 0;
fail:
        sqlitestore_close(s);
        return r;
}

SqliteStore *sqlitestore_close(SqliteStore *s) {
        if (!s)
                return NULL;
        for (int i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(s->stmt[i]);
        if (s->db)
                sqlite3_close(s->db);
        if (s->lock_fd >= 0)
                close(s->lock_fd);
        free(s->path);
        free(s->wal_path);
        free(s);
        return NULL;
}

/* A column as a byte pointer and length (NULL for SQL NULL). */
static const uint8_t *blob(sqlite3_stmt *st, int col, uint32_t *ret_len) {
        const uint8_t *p = NULL;

        if (sqlite3_column_type(st, col) != SQLITE_NULL)
                p = sqlite3_column_blob(st, col);
        *ret_len = p ? (uint32_t) sqlite3_column_bytes(st, col) : 0;
        return p;
}

int sqlitestore_recover(SqliteStore *s, StoreRecoverFn fn, void *userdata) {
        static const char sql[] = "SELECT id, kind, args, grp, group_limit, priority, timeout_ms, "
                                  "retries, attempt, state, outcome, finished_at, idempotency_key, "
                                  "principal FROM jobs "
                                  "ORDER BY id";
        sqlite3_stmt *st;
        int rc, r = 0;

        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return refuse(s->path, -EBADMSG, sqlite3_errmsg(s->db));
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                StoreJob job = {
                        .id = (uint64_t) sqlite3_column_int64(st, 0),
                        .kind = (const char *) sqlite3_column_text(st, 1),
                        .group = (const char *) sqlite3_column_text(st, 3),
                        .group_limit = (uint32_t) sqlite3_column_int64(st, 4),
                        .priority = (int16_t) sqlite3_column_int(st, 5),
                        .timeout_ms = (uint32_t) sqlite3_column_int64(st, 6),
                        .retries = (uint8_t) sqlite3_column_int(st, 7),
                        .attempt = (uint8_t) sqlite3_column_int(st, 8),
                        .state = (uint8_t) sqlite3_column_int(st, 9),
                        .finished_at_ms = sqlite3_column_int64(st, 11),
                        .key = (const char *) sqlite3_column_text(st, 12),
                        .principal = (const char *) sqlite3_column_text(st, 13),
                };
                job.args = blob(st, 2, &job.args_len);
                job.outcome = blob(st, 10, &job.outcome_len);
                if (!job.kind) {
                        rc = SQLITE_CORRUPT;
                        break;
                }
                r = fn(userdata, &job);
                if (r < 0)
                        break;
        }
        sqlite3_finalize(st);
        if (r < 0)
                return r;
        if (rc != SQLITE_DONE)
                return refuse(s->path, -EBADMSG, sqlite3_errstr(rc));
        return 0;
}

static int step(sqlite3_stmt *st) {
        int rc = sqlite3_step(st);

        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : errno_of(rc);
}

/* Runs one change of the batch. */
static int apply(SqliteStore *s, const StoreBatch *b, const StoreOp *op) {
        sqlite3_stmt *st;

        switch (op->type) {
        case STORE_OP_ADD:
                st = s->stmt[STMT_ADD];
                sqlite3_bind_int64(st, 1, (int64_t) op->id);
                sqlite3_bind_text(st, 2, (const char *) b->bytes + op->kind_off, -1, SQLITE_STATIC);
                sqlite3_bind_blob(st, 3, b->bytes + op->args_off, (int) op->args_len,
                                  SQLITE_STATIC);
                if (op->group_off != STORE_NONE)
                        sqlite3_bind_text(st, 4, (const char *) b->bytes + op->group_off, -1,
                                          SQLITE_STATIC);
                sqlite3_bind_int64(st, 5, op->group_limit);
                sqlite3_bind_int(st, 6, op->priority);
                sqlite3_bind_int64(st, 7, op->timeout_ms);
                sqlite3_bind_int(st, 8, op->retries);
                sqlite3_bind_int(st, 9, op->attempt);
                sqlite3_bind_int(st, 10, op->state);
                if (op->key_off != STORE_NONE)
                        sqlite3_bind_text(st, 11, (const char *) b->bytes + op->key_off, -1,
                                          SQLITE_STATIC);
                if (op->principal_off != STORE_NONE)
                        sqlite3_bind_text(st, 12, (const char *) b->bytes + op->principal_off, -1,
                                          SQLITE_STATIC);
                return step(st);
        case STORE_OP_START:
        case STORE_OP_REQUEUE:
                st = s->stmt[op->type == STORE_OP_START ? STMT_START : STMT_REQUEUE];
                sqlite3_bind_int64(st, 1, (int64_t) op->id);
                sqlite3_bind_int(st, 2, op->attempt);
                if (op->type == STORE_OP_START)
                        sqlite3_bind_text(st, 3, s->owner, -1, SQLITE_STATIC);
                return step(st);
        case STORE_OP_FINISH:
                st = s->stmt[STMT_FINISH];
                sqlite3_bind_int64(st, 1, (int64_t) op->id);
                sqlite3_bind_int(st, 2, op->state);
                if (op->has_outcome)
                        sqlite3_bind_blob(st, 3, b->bytes + op->outcome_off, (int) op->outcome_len,
                                          SQLITE_STATIC);
                sqlite3_bind_int64(st, 4, op->finished_at_ms);
                return step(st);
        case STORE_OP_REMOVE:
                st = s->stmt[STMT_REMOVE];
                sqlite3_bind_int64(st, 1, (int64_t) op->id);
                return step(st);
        }
        return -EINVAL;
}

int sqlitestore_commit(SqliteStore *s, const StoreBatch *b) {
        int r = step(s->stmt[STMT_BEGIN]);

        for (size_t i = 0; i < b->n_ops && r >= 0; i++)
                r = apply(s, b, &b->ops[i]);
        if (r >= 0) {
                sqlite3_bind_int64(s->stmt[STMT_NEXT_ID], 1, (int64_t) b->next_id);
                r = step(s->stmt[STMT_NEXT_ID]);
        }
        if (r >= 0)
                r = step(s->stmt[STMT_COMMIT]);
        if (r < 0) {
                (void) step(s->stmt[STMT_ROLLBACK]);
                return r == -ENOSPC ? r : -EIO;
        }
        /* Give the pages of released rows back to the file system now and then. */
        if (++s->commits % 256 == 0)
                (void) exec(s, "PRAGMA incremental_vacuum(2048)");
        return 0;
}

uint64_t sqlitestore_size(const SqliteStore *s) {
        struct stat st;
        uint64_t size = 0;

        if (stat(s->path, &st) == 0)
                size += (uint64_t) st.st_size;
        if (stat(s->wal_path, &st) == 0)
                size += (uint64_t) st.st_size;
        return size;
}
