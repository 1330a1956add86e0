/* pgstore: see pgstore.h. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "now.h"
#include "pgstore.h"

/* Changes sent per pipeline synchronization: their results (some 20 bytes each) must fit the
 * socket buffers while the next ones are written, or client and server would wait on each
 * other. */
#define CHUNK 1024

/* Advisory lock keys: the schema's set-up (per transaction) and the database's owner (per
 * session; dropped once several nodes may share a database). */
#define LOCK_SCHEMA "7310858041339125001"
#define LOCK_OWNER "7310858041339125002"

enum {
        STMT_ADD,
        STMT_START,
        STMT_FINISH,
        STMT_REQUEUE,
        STMT_REMOVE,
        _STMT_MAX,
};

static const struct {
        const char *sql;
        int n_params;
} stmts[_STMT_MAX] = {
        [STMT_ADD] = { "INSERT INTO futured_jobs (id, kind, args, grp, group_limit, priority, "
                       "timeout_ms, retries, attempt, state, idempotency_key) "
                       "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", 11 },
        [STMT_START] = { "UPDATE futured_jobs SET state = 1, attempt = $2, owner = $3 "
                         "WHERE id = $1", 3 },
        [STMT_FINISH] = { "UPDATE futured_jobs SET state = $2, outcome = $3, finished_at = $4, "
                          "args = NULL WHERE id = $1", 4 },
        [STMT_REQUEUE] = { "UPDATE futured_jobs SET state = 0, attempt = $2 WHERE id = $1", 2 },
        [STMT_REMOVE] = { "DELETE FROM futured_jobs WHERE id = $1", 1 },
};

/* The schema of version 1. A later version adds its migration from the one before to
 * migrate(), never changes this text. */
static const char schema_v1[] =
        "CREATE TABLE futured_version (version integer NOT NULL);"
        "INSERT INTO futured_version VALUES (1);"
        "CREATE SEQUENCE futured_ids AS bigint INCREMENT BY " STRINGIFY(PGSTORE_ID_BLOCK)
        " START WITH 1;"
        "CREATE TABLE futured_jobs ("
        " id bigint PRIMARY KEY,"
        " kind text NOT NULL,"
        " args bytea,"
        " grp text,"
        " group_limit integer NOT NULL DEFAULT 0,"
        " priority smallint NOT NULL DEFAULT 0,"
        " timeout_ms bigint NOT NULL DEFAULT 0,"
        " retries smallint NOT NULL DEFAULT 0,"
        " attempt smallint NOT NULL DEFAULT 0,"
        " state smallint NOT NULL,"
        " outcome bytea,"
        " finished_at bigint,"
        " idempotency_key text,"
        " owner text);";

struct PgStore {
        char *uri;
        char owner[300];       /* "HOST:PID": who runs the jobs it starts */

        /* The store thread's (the main thread's before it starts). */
        PGconn *conn;
        unsigned backoff_ms;   /* before the next reconnection; 0: none failed */
        bool logged_reconnect;

        /* The loop thread's. */
        PGconn *id_conn;
        uint64_t id_next, id_end; /* the block being issued: [id_next, id_end) */
        uint64_t id_retry_ns;     /* no reconnection before this */
};

/* Logs a refusal to use the database with what to do about it. Returns `r`. */
static int refuse(const PgStore *s, int r, const char *why) {
        const char *todo = "";

        if (r == -EBADMSG)
                todo = "; it was left untouched: give futured a database (or schema) of its own";
        else if (r == -EPROTO)
                todo = "; it was left untouched: run the futured that wrote it, or a newer one";
        else if (r == -EBUSY)
                todo = "; stop the other futured, or give this one another database (several "
                       "nodes on one database is cluster mode, not done yet)";
        fprintf(stderr, "futured: cannot use the store %s: %s%s\n", s->uri, why, todo);
        return r;
}

/* A message of libpq's without its trailing newline, for one line of log. */
static const char *pq_message(const char *m) {
        static _Thread_local char buf[512];
        size_t n;

        snprintf(buf, sizeof(buf), "%s", m ? m : "unknown error");
        n = strlen(buf);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                buf[--n] = 0;
        return buf;
}

/* The errno of a failed result: the class of its SQLSTATE, or the connection's state. */
static int errno_of(PGconn *conn, const PGresult *res) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

        if (PQstatus(conn) != CONNECTION_OK || (state && strncmp(state, "08", 2) == 0) ||
            (state && strncmp(state, "57P", 3) == 0))
                return -ENOTCONN; /* connection exceptions, admin shutdown */
        if (state && strcmp(state, "53100") == 0)
                return -ENOSPC;   /* disk_full */
        if (state && strncmp(state, "42501", 5) == 0)
                return -EACCES;   /* insufficient_privilege */
        return -EIO;
}

static const char *const connect_keys[] = { "connect_timeout", "fallback_application_name",
                                            "dbname", NULL };

/* Connects with futured's defaults under the user's URI (which may override them). */
static PGconn *connect_to(const char *uri) {
        const char *values[] = { "5", "futured", uri, NULL };

        return PQconnectdbParams(connect_keys, values, 1);
}

/* Connects as connect_to() does, but gives up after `budget_ms`: for the loop thread, which
 * must not wait the connect_timeout of an unreachable host. NULL when it did not connect. */
static PGconn *connect_briefly(const char *uri, int budget_ms) {
        const char *values[] = { "5", "futured", uri, NULL };
        PGconn *c = PQconnectStartParams(connect_keys, values, 1);
        uint64_t deadline = now_ns() + (uint64_t) budget_ms * 1000000u;
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;

        while (c && PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
               st != PGRES_POLLING_FAILED) {
                struct pollfd pfd = { .fd = PQsocket(c),
                                      .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT };
                uint64_t now = now_ns();
                if (now >= deadline || poll(&pfd, 1, (int) ((deadline - now) / 1000000u) + 1) <= 0)
                        break;
                st = PQconnectPoll(c);
        }
        if (c && st != PGRES_POLLING_OK) {
                PQfinish(c);
                c = NULL;
        }
        return c;
}

/* Runs `sql` (no parameters) on the commit connection; puts the first value of its first row
 * when `ret` is given (NULL for SQL NULL or no row). Returns 0 or -errno; logs nothing. */
static int run(PgStore *s, const char *sql, char **ret, char **ret_error) {
        PGresult *res = PQexec(s->conn, sql);
        ExecStatusType st = PQresultStatus(res);
        int r = 0;

        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                r = errno_of(s->conn, res);
                if (ret_error)
                        *ret_error = strdup(pq_message(PQresultErrorMessage(res)));
        } else if (ret) {
                *ret = NULL;
                if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) &&
                    !(*ret = strdup(PQgetvalue(res, 0, 0))))
                        r = -ENOMEM;
        }
        PQclear(res);
        return r;
}

/* Prepares the statements of the commit connection (again after a reconnection). */
static int prepare(PgStore *s) {
        for (int i = 0; i < _STMT_MAX; i++) {
                char name[8];
                PGresult *res;
                int r = 0;
                snprintf(name, sizeof(name), "s%d", i);
                res = PQprepare(s->conn, name, stmts[i].sql, stmts[i].n_params, NULL);
                if (PQresultStatus(res) != PGRES_COMMAND_OK)
                        r = errno_of(s->conn, res);
                PQclear(res);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Makes this futured the database's one user for the session. A futured killed a moment ago
 * may still hold it (its server process has not noticed the closed connection yet): tries for
 * 5 s. Returns 0, -EBUSY or -errno. */
static int take_database(PgStore *s) {
        for (int i = 0; i < 50; i++) {
                _cleanup_free_ char *got = NULL;
                struct timespec ts = { .tv_nsec = 100000000 };
                int r = run(s, "SELECT pg_try_advisory_lock(" LOCK_OWNER ")", &got, NULL);
                if (r < 0)
                        return r;
                if (got && strcmp(got, "t") == 0)
                        return 0;
                nanosleep(&ts, NULL);
        }
        return -EBUSY;
}

/* Brings a database of an older schema up to this one, inside the set-up's transaction. There
 * is only version 1 so far: a later version adds `if (version == 1) { ALTER ...; version = 2; }`
 * here, and updates futured_version. */
static int migrate(PgStore *s, long version, char **ret_error) {
        if (version == 0)
                return run(s, schema_v1, NULL, ret_error);
        return 0;
}

/* Checks and, for a new database, creates the schema, in one transaction under an advisory lock
 * (nodes that start together create it once). */
static int setup_schema(PgStore *s) {
        _cleanup_free_ char *version = NULL, *jobs = NULL, *error = NULL;
        long v = 0;
        int r;

        if ((r = run(s, "BEGIN", NULL, &error)) < 0 ||
            (r = run(s, "SELECT pg_advisory_xact_lock(" LOCK_SCHEMA ")", NULL, &error)) < 0 ||
            (r = run(s, "SELECT to_regclass('futured_jobs')::text", &jobs, &error)) < 0 ||
            (r = run(s, "SELECT to_regclass('futured_version')::text", &version, &error)) < 0)
                goto fail;
        if (version) {
                version = mfree(version);
                if ((r = run(s, "SELECT max(version) FROM futured_version", &version, &error)) < 0)
                        goto fail;
        }
        v = version ? strtol(version, NULL, 10) : 0;
        if (v > PGSTORE_VERSION) {
                (void) run(s, "ROLLBACK", NULL, NULL);
                return refuse(s, -EPROTO, "it was written by a newer futured (schema version "
                                          "newer than " STRINGIFY(PGSTORE_VERSION) ")");
        }
        if (v == 0 && jobs) {
                (void) run(s, "ROLLBACK", NULL, NULL);
                return refuse(s, -EBADMSG, "it has a table futured_jobs that is not futured's "
                                           "(no futured_version)");
        }
        if ((r = migrate(s, v, &error)) < 0 || (r = run(s, "COMMIT", NULL, &error)) < 0)
                goto fail;
        return 0;
fail:
        (void) run(s, "ROLLBACK", NULL, NULL);
        return refuse(s, r == -ENOTCONN ? r : r == -EACCES ? r : -EACCES,
                      error ? error : "cannot set up its tables");
}

/* Takes a new block of IDs on the ID connection. Returns 0 or -errno. */
static int take_block(PgStore *s) {
        PGresult *res;
        int r = 0;

        if (PQstatus(s->id_conn) != CONNECTION_OK) {
                uint64_t now = now_ns();
                if (now < s->id_retry_ns)
                        return -ENOTCONN;
                s->id_retry_ns = now + 1000000000u;
                PQfinish(s->id_conn);
                s->id_conn = connect_briefly(s->uri, 200);
                if (PQstatus(s->id_conn) != CONNECTION_OK)
                        return -ENOTCONN;
        }
        res = PQexec(s->id_conn, "SELECT nextval('futured_ids')");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
                s->id_next = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
                s->id_end = s->id_next + PGSTORE_ID_BLOCK;
        } else
                r = errno_of(s->id_conn, res);
        PQclear(res);
        return r;
}

uint64_t pgstore_issue_ids(PgStore *s, uint32_t n) {
        uint64_t first;

        if (n > PGSTORE_ID_BLOCK)
                return 0;
        /* What is left of a block too small for the batch is skipped: a batch's IDs are
         * consecutive. */
        if (s->id_end - s->id_next < n && take_block(s) < 0)
                return 0;
        first = s->id_next;
        s->id_next += n;
        return first;
}

/* True when the URI names a password (refused: it would be on the command line, in `ps`). */
static int check_uri(PgStore *s) {
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(s->uri, &err);
        bool password = false;

        if (!opts) {
                int r = refuse(s, -EINVAL, err ? pq_message(err) : "out of memory");
                PQfreemem(err);
                return r;
        }
        for (PQconninfoOption *o = opts; o->keyword; o++)
                if (strcmp(o->keyword, "password") == 0 && o->val && o->val[0])
                        password = true;
        PQconninfoFree(opts);
        if (password)
                return refuse(s, -EINVAL, "the URI carries a password, which would show on the "
                                          "command line: put it in a password file (PGPASSFILE "
                                          "or ~/.pgpass) or a service file (PGSERVICEFILE)");
        return 0;
}

/* Connects the commit connection and readies it. Logs nothing. */
static int connect_commit(PgStore *s, char **ret_error) {
        PQfinish(s->conn);
        s->conn = connect_to(s->uri);
        if (PQstatus(s->conn) != CONNECTION_OK) {
                if (ret_error)
                        *ret_error = strdup(pq_message(PQerrorMessage(s->conn)));
                return -ENOTCONN;
        }
        return 0;
}

int pgstore_open(PgStore **ret, const char *uri, uint64_t *ret_next_id) {
        PgStore *s = calloc(1, sizeof(*s));
        _cleanup_free_ char *error = NULL;
        int r;

        if (!s)
                return -ENOMEM;
        store_owner_format(s->owner, sizeof(s->owner));
        if (!(s->uri = strdup(uri))) {
                free(s);
                return -ENOMEM;
        }
        if ((r = check_uri(s)) < 0)
                goto fail;
        r = connect_commit(s, &error);
        if (r < 0) {
                /* A refusal by the server (role, password, database) is the operator's to fix;
                 * an unreachable server may come back (a service manager restarts futured). */
                bool refused = error && (strstr(error, "authentication") ||
                                         strstr(error, "does not exist") ||
                                         strstr(error, "password") ||
                                         strstr(error, "permission"));
                r = refuse(s, refused ? -EACCES : -ECONNREFUSED, error ? error : "no connection");
                goto fail;
        }
        if ((r = take_database(s)) < 0) {
                r = refuse(s, r, r == -EBUSY ? "another futured uses it"
                                             : pq_message(PQerrorMessage(s->conn)));
                goto fail;
        }
        if ((r = setup_schema(s)) < 0)
                goto fail;
        if ((r = prepare(s)) < 0) {
                r = refuse(s, -EACCES, pq_message(PQerrorMessage(s->conn)));
                goto fail;
        }
        s->id_conn = connect_to(uri);
        if ((r = take_block(s)) < 0) {
                r = refuse(s, r == -ENOTCONN ? -ECONNREFUSED : -EACCES,
                           pq_message(PQerrorMessage(s->id_conn)));
                goto fail;
        }
        *ret_next_id = s->id_next;
        *ret = s;
        return 0;
fail:
        pgstore_close(s);
        return r;
}

PgStore *pgstore_close(PgStore *s) {
        if (!s)
                return NULL;
        PQfinish(s->conn);
        PQfinish(s->id_conn);
        free(s->uri);
        free(s);
        return NULL;
}

static uint64_t be(const char *p, int len) {
        uint64_t v = 0;

        for (int i = 0; i < len; i++)
                v = v << 8 | (uint8_t) p[i];
        return v;
}

/* A column of a binary-format row as an integer of its own width (0 for NULL). */
static int64_t int_at(const PGresult *res, int col) {
        int len = PQgetlength(res, 0, col);
        uint64_t v;

        if (PQgetisnull(res, 0, col))
                return 0;
        v = be(PQgetvalue(res, 0, col), len);
        if (len == 2)
                return (int16_t) v;
        if (len == 4)
                return (int32_t) v;
        return (int64_t) v;
}

static const char *text_at(const PGresult *res, int col) {
        return PQgetisnull(res, 0, col) ? NULL : PQgetvalue(res, 0, col);
}

static const uint8_t *blob_at(const PGresult *res, int col, uint32_t *ret_len) {
        if (PQgetisnull(res, 0, col)) {
                *ret_len = 0;
                return NULL;
        }
        *ret_len = (uint32_t) PQgetlength(res, 0, col);
        return (const uint8_t *) PQgetvalue(res, 0, col);
}

int pgstore_recover(PgStore *s, StoreRecoverFn fn, void *userdata) {
        static const char sql[] = "SELECT id, kind, args, grp, group_limit, priority, timeout_ms, "
                                  "retries, attempt, state, outcome, finished_at, "
                                  "idempotency_key FROM futured_jobs ORDER BY id";
        PGresult *res;
        int r = 0;
        bool ended = false;

        if (!PQsendQueryParams(s->conn, sql, 0, NULL, NULL, NULL, NULL, 1) ||
            !PQsetSingleRowMode(s->conn))
                return refuse(s, -EIO, pq_message(PQerrorMessage(s->conn)));
        while ((res = PQgetResult(s->conn))) {
                ExecStatusType st = PQresultStatus(res);
                if (st == PGRES_SINGLE_TUPLE && r >= 0) {
                        StoreJob job = {
                                .id = (uint64_t) int_at(res, 0),
                                .kind = text_at(res, 1),
                                .group = text_at(res, 3),
                                .group_limit = (uint32_t) int_at(res, 4),
                                .priority = (int16_t) int_at(res, 5),
                                .timeout_ms = (uint32_t) int_at(res, 6),
                                .retries = (uint8_t) int_at(res, 7),
                                .attempt = (uint8_t) int_at(res, 8),
                                .state = (uint8_t) int_at(res, 9),
                                .finished_at_ms = int_at(res, 11),
                                .key = text_at(res, 12),
                        };
                        job.args = blob_at(res, 2, &job.args_len);
                        job.outcome = blob_at(res, 10, &job.outcome_len);
                        r = fn(userdata, &job);
                } else if (st == PGRES_TUPLES_OK)
                        ended = true;
                else if (st != PGRES_SINGLE_TUPLE && r >= 0)
                        r = refuse(s, -EIO, pq_message(PQresultErrorMessage(res)));
                PQclear(res);
        }
        if (r >= 0 && !ended)
                r = refuse(s, -EIO, "the recovery's query ended early");
        return r;
}

/* Sends one change of the batch into the pipeline. Returns 0 or -ENOTCONN. */
static int send_op(PgStore *s, const StoreBatch *b, const StoreOp *op) {
        char num[6][24];
        const char *v[11] = {};
        int len[11] = {}, fmt[11] = {};
        const char *stmt;
        int n = 0;

        snprintf(num[0], sizeof(num[0]), "%" PRIu64, op->id);
        v[0] = num[0];
        switch (op->type) {
        case STORE_OP_ADD:
                stmt = "s0";
                v[1] = (const char *) b->bytes + op->kind_off;
                v[2] = (const char *) b->bytes + op->args_off;
                len[2] = (int) op->args_len;
                fmt[2] = 1;
                v[3] = op->group_off != STORE_NONE ? (const char *) b->bytes + op->group_off
                                                   : NULL;
                snprintf(num[1], sizeof(num[1]), "%" PRIu32, op->group_limit);
                snprintf(num[2], sizeof(num[2]), "%d", op->priority);
                snprintf(num[3], sizeof(num[3]), "%" PRIu32, op->timeout_ms);
                snprintf(num[4], sizeof(num[4]), "%u", op->retries);
                snprintf(num[5], sizeof(num[5]), "%u|%u", op->attempt, op->state);
                v[4] = num[1];
                v[5] = num[2];
                v[6] = num[3];
                v[7] = num[4];
                *strchr(num[5], '|') = 0;
                v[8] = num[5];
                v[9] = num[5] + strlen(num[5]) + 1;
                v[10] = op->key_off != STORE_NONE ? (const char *) b->bytes + op->key_off : NULL;
                n = 11;
                break;
        case STORE_OP_START:
        case STORE_OP_REQUEUE:
                stmt = op->type == STORE_OP_START ? "s1" : "s3";
                snprintf(num[1], sizeof(num[1]), "%u", op->attempt);
                v[1] = num[1];
                v[2] = s->owner;
                n = op->type == STORE_OP_START ? 3 : 2;
                break;
        case STORE_OP_FINISH:
                stmt = "s2";
                snprintf(num[1], sizeof(num[1]), "%u", op->state);
                v[1] = num[1];
                if (op->has_outcome) {
                        /* An empty outcome is not NULL: a non-NULL pointer of length 0. */
                        v[2] = op->outcome_len ? (const char *) b->bytes + op->outcome_off : "";
                        len[2] = (int) op->outcome_len;
                        fmt[2] = 1;
                }
                snprintf(num[2], sizeof(num[2]), "%" PRId64, op->finished_at_ms);
                v[3] = num[2];
                n = 4;
                break;
        case STORE_OP_REMOVE:
                stmt = "s4";
                n = 1;
                break;
        default:
                return -EINVAL;
        }
        return PQsendQueryPrepared(s->conn, stmt, n, v, len, fmt, 0) ? 0 : -ENOTCONN;
}

/* Reads the results of `n` queries and of the synchronization after them. Returns 0 or the
 * first failure's -errno (putting its message when `*ret_error` is still NULL). */
static int drain(PgStore *s, size_t n, char **ret_error) {
        int r = 0;

        for (size_t i = 0; i <= n; i++) {
                PGresult *res = PQgetResult(s->conn);
                ExecStatusType st = PQresultStatus(res);
                if (!res)
                        return -ENOTCONN;
                if (i == n) {
                        PQclear(res);
                        if (st != PGRES_PIPELINE_SYNC)
                                return r < 0 ? r : -ENOTCONN;
                        break;
                }
                if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && r >= 0) {
                        r = st == PGRES_PIPELINE_ABORTED ? -EIO : errno_of(s->conn, res);
                        if (!*ret_error)
                                *ret_error = strdup(pq_message(PQresultErrorMessage(res)));
                }
                PQclear(res);
                /* Each query's results end with a NULL. */
                res = PQgetResult(s->conn);
                if (res) {
                        PQclear(res);
                        return -ENOTCONN;
                }
        }
        return r;
}

/* Reconnects the commit connection after it was lost, waiting a little longer each time. */
static int reconnect(PgStore *s) {
        _cleanup_free_ char *error = NULL;
        int r;

        if (s->backoff_ms) {
                struct timespec ts = { .tv_sec = s->backoff_ms / 1000,
                                       .tv_nsec = (long) (s->backoff_ms % 1000) * 1000000 };
                nanosleep(&ts, NULL);
        }
        s->backoff_ms = s->backoff_ms ? MIN(s->backoff_ms * 2, 2000u) : 100u;
        r = connect_commit(s, &error);
        if (r >= 0 && (r = take_database(s)) >= 0)
                r = prepare(s);
        if (r < 0) {
                if (!s->logged_reconnect)
                        fprintf(stderr, "futured: cannot reconnect to the store %s: %s; trying "
                                        "again every %u ms at most\n",
                                s->uri, error ? error : pq_message(PQerrorMessage(s->conn)),
                                2000u);
                s->logged_reconnect = true;
                return r == -EBUSY ? -EIO : -ENOTCONN;
        }
        fprintf(stderr, "futured: reconnected to the store %s\n", s->uri);
        s->backoff_ms = 0;
        s->logged_reconnect = false;
        return 0;
}

int pgstore_commit(PgStore *s, const StoreBatch *b) {
        _cleanup_free_ char *error = NULL;
        size_t i = 0;
        int r;

        if (PQstatus(s->conn) != CONNECTION_OK && (r = reconnect(s)) < 0)
                return r;
        if (!PQenterPipelineMode(s->conn))
                return -EIO;
        r = PQsendQueryParams(s->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) ? 0 : -ENOTCONN;
        /* Chunks of changes, each ended by a synchronization whose results are read before the
         * next is sent; the explicit transaction spans them all. */
        for (size_t sent = 1; r >= 0; sent = 0) {
                size_t end = MIN(b->n_ops, i + CHUNK);
                for (; i < end && r >= 0; i++, sent++)
                        r = send_op(s, b, &b->ops[i]);
                if (r >= 0 && i == b->n_ops && !PQsendQueryParams(s->conn, "COMMIT", 0, NULL,
                                                                  NULL, NULL, NULL, 0))
                        r = -ENOTCONN;
                sent += i == b->n_ops;
                if (r >= 0)
                        r = PQpipelineSync(s->conn) ? 0 : -ENOTCONN;
                if (r >= 0)
                        r = drain(s, sent, &error);
                if (i == b->n_ops)
                        break;
        }
        if (r < 0 && r != -ENOTCONN) {
                /* The transaction failed: end it, so that the connection serves the next. */
                if (PQsendQueryParams(s->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) &&
                    PQpipelineSync(s->conn))
                        (void) drain(s, 1, &error);
                fprintf(stderr, "futured: the store %s refused a commit: %s\n", s->uri,
                        error ? error : "unknown error");
        }
        (void) PQexitPipelineMode(s->conn);
        if (r == -ENOTCONN && PQstatus(s->conn) == CONNECTION_OK) {
                /* A lost sync: the connection's state is unknown; start afresh. */
                PQfinish(s->conn);
                s->conn = NULL;
        }
        return r == -ENOTCONN || r == -ENOSPC ? r : r < 0 ? -EIO : 0;
}
