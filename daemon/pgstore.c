/* pgstore: see pgstore.h. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "now.h"
#include "pgstore.h"

/* Statements sent per pipeline synchronization: their results (some 20 bytes each) must fit
 * the socket buffers while the next ones are written, or client and server would wait on each
 * other. */
#define CHUNK 256

/* Changes per statement at most, so that one statement's arrays stay of a sane size (and the
 * statements of a round are counted against CHUNK). */
#define RUN_MAX 4096

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

/* An idempotency key is unique across the database (version 3): a job whose key a row has
 * already (another node's job, or one whose row this batch deletes later) is not inserted; the
 * statement of send_twins() that follows the adds finds its row's ID. In cluster mode the rows
 * go in by key: two nodes adding the same keys at once then wait for each other in one order,
 * never in a circle (a deadlock would fail the whole batch, other clients' jobs with it). */
#define ADD_CONFLICT "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"

/* Each statement applies a run of consecutive changes of one type, passed as arrays (binary
 * format, one array per column): one statement per run instead of one per change. */
static const struct {
        const char *sql;
        int n_params;
} stmts[_STMT_MAX] = {
        [STMT_ADD] = { "INSERT INTO futured_jobs (id, kind, args, grp, group_limit, priority, "
                       "timeout_ms, retries, attempt, state, idempotency_key) "
                       "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], "
                       "$5::integer[], $6::smallint[], $7::bigint[], $8::smallint[], "
                       "$9::smallint[], $10::smallint[], $11::text[]) " ADD_CONFLICT, 11 },
        [STMT_START] = { "UPDATE futured_jobs j SET state = 1, attempt = u.a, owner = $3 "
                         "FROM unnest($1::bigint[], $2::smallint[]) u(id, a) WHERE j.id = u.id",
                         3 },
        /* st = 1: the job's start in the same round, folded in (send_round). */
        [STMT_FINISH] = { "UPDATE futured_jobs j SET state = u.s, outcome = u.o, "
                          "finished_at = u.f, args = NULL, "
                          "attempt = CASE WHEN u.st = 1 THEN u.a ELSE j.attempt END, "
                          "owner = CASE WHEN u.st = 1 THEN $7 ELSE j.owner END "
                          "FROM unnest($1::bigint[], $2::smallint[], $3::bytea[], $4::bigint[], "
                          "$5::smallint[], $6::smallint[]) u(id, s, o, f, a, st) "
                          "WHERE j.id = u.id", 7 },
        [STMT_REQUEUE] = { "UPDATE futured_jobs j SET state = 0, attempt = u.a "
                           "FROM unnest($1::bigint[], $2::smallint[]) u(id, a) "
                           "WHERE j.id = u.id", 2 },
        [STMT_REMOVE] = { "DELETE FROM futured_jobs WHERE id = ANY($1::bigint[])", 1 },
};

/* Cluster mode (docs/CLUSTER.md): a job's row is added reserved by this node (owner = $me) or
 * open to any node (owner NULL), and every later change of a job this node runs is fenced by
 * owner and attempt: a node whose job was taken back (its lease expired) changes nothing. A
 * pending row that no node reserved may be finished by any (cancelled). A start or finish
 * returns the IDs it did not change: fenced out (the batch's `fenced`). */
#define FENCED "SELECT u.id FROM u WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.id = u.id)"
static const struct {
        const char *sql;
        int n_params;
} cluster_stmts[_STMT_MAX] = {
        [STMT_ADD] = { "INSERT INTO futured_jobs (id, kind, args, grp, group_limit, priority, "
                       "timeout_ms, retries, attempt, state, idempotency_key, owner) "
                       "SELECT u.i, u.k, u.a, u.g, u.l, u.p, u.t, u.r, u.at, u.s, u.key, "
                       "CASE WHEN u.o = 1 THEN NULL ELSE $13 END "
                       "FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], "
                       "$5::integer[], $6::smallint[], $7::bigint[], $8::smallint[], "
                       "$9::smallint[], $10::smallint[], $11::text[], $12::smallint[]) "
                       "u(i, k, a, g, l, p, t, r, at, s, key, o) ORDER BY u.key "
                       ADD_CONFLICT, 13 },
        [STMT_START] = { "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::smallint[]) "
                         "u(id, a)), d AS (UPDATE futured_jobs j SET state = 1, attempt = u.a "
                         "FROM u WHERE j.id = u.id AND j.owner = $3 AND j.state = 0 "
                         "RETURNING j.id) " FENCED, 3 },
        /* st = 1: the start folded in, fenced as the start then the finish would have been:
         * the pending row reserved by this node, at the attempt before this one. */
        [STMT_FINISH] = { "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::smallint[], "
                          "$3::bytea[], $4::bigint[], $5::smallint[], $6::smallint[]) "
                          "u(id, s, o, f, a, st)), "
                          "d AS (UPDATE futured_jobs j SET state = u.s, outcome = u.o, "
                          "finished_at = u.f, args = NULL, cancel_requested = false, "
                          "attempt = CASE WHEN u.st = 1 THEN u.a ELSE j.attempt END FROM u "
                          "WHERE j.id = u.id AND ((u.st = 0 AND j.state <= 1 AND "
                          "((j.owner = $7 AND j.attempt = u.a) OR "
                          "(j.owner IS NULL AND j.state = 0))) OR "
                          "(u.st = 1 AND j.owner = $7 AND j.state = 0 AND j.attempt = u.a - 1)) "
                          "RETURNING j.id) " FENCED, 7 },
        [STMT_REQUEUE] = { "UPDATE futured_jobs j SET state = 0, attempt = u.a "
                           "FROM unnest($1::bigint[], $2::smallint[]) u(id, a) "
                           "WHERE j.id = u.id AND j.owner = $3", 3 },
        [STMT_REMOVE] = { "DELETE FROM futured_jobs WHERE id = ANY($1::bigint[])", 1 },
};

/* The type OIDs of the array elements (pg_type.h). */
enum {
        OID_BYTEA = 17,
        OID_INT8 = 20,
        OID_INT2 = 21,
        OID_INT4 = 23,
        OID_TEXT = 25,
};

#define MAX_COLUMNS 13

/* A job's latest change in a round of a commit (see send_round). */
typedef struct RoundSeen {
        uint64_t id;
        uint32_t round;
        uint32_t start;  /* its start's place in the round's list of starts */
        int8_t rank;
} RoundSeen;

/* In a round's list of finishes: the change at this index has its job's start folded in. */
#define STARTED (~(SIZE_MAX >> 1))
/* In a round's list of starts: a start folded into its finish. */
#define FOLDED SIZE_MAX

/* One array parameter in PostgreSQL's binary array format: a header (dimensions 1, flags, the
 * element type, the length, the lower bound 1), then each element as its length and bytes (-1:
 * NULL). */
typedef struct Column {
        uint8_t *p;
        size_t n, cap;
        uint32_t count;
} Column;

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

/* Version 2: cluster mode (docs/CLUSTER.md). */
static const char schema_v2[] =
        "ALTER TABLE futured_jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;"
        "CREATE INDEX futured_jobs_open ON futured_jobs (priority DESC, id)"
        " WHERE state = 0 AND owner IS NULL;"
        "CREATE INDEX futured_jobs_owned ON futured_jobs (owner) WHERE state <= 1;"
        "CREATE INDEX futured_jobs_open_groups ON futured_jobs (grp)"
        " WHERE state = 0 AND owner IS NULL AND group_limit > 0;"
        "CREATE INDEX futured_jobs_group_running ON futured_jobs (grp)"
        " WHERE state = 1 AND grp IS NOT NULL;"
        "CREATE INDEX futured_jobs_finished ON futured_jobs (finished_at)"
        " WHERE finished_at IS NOT NULL;"
        "CREATE TABLE futured_nodes ("
        " owner text PRIMARY KEY,"
        " lease_until timestamptz NOT NULL,"
        " started timestamptz NOT NULL DEFAULT now(),"
        " kinds text[]);"
        "UPDATE futured_version SET version = 2;";

/* Version 3: an idempotency key names one job in the whole database (cluster mode: the same key
 * through two nodes makes one job). Keys repeated before (one per node) stay with the job of the
 * lowest ID; the others' keys are cleared. */
static const char schema_v3[] =
        "UPDATE futured_jobs j SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM futured_jobs o WHERE o.idempotency_key = j.idempotency_key"
        " AND o.id < j.id);"
        "CREATE UNIQUE INDEX futured_jobs_key ON futured_jobs (idempotency_key)"
        " WHERE idempotency_key IS NOT NULL;"
        "UPDATE futured_version SET version = 3;";

struct PgStore {
        char *uri;
        char owner[300];       /* "HOST:PID", "HOST:PID:BOOT" in cluster mode: who runs the
                                * jobs it starts */
        bool cluster;
        char *notify;          /* cluster: the payload of the commit's notification */
        size_t notify_cap;

        /* The store thread's (the main thread's before it starts). */
        PGconn *conn;
        _Atomic int commit_pid; /* the server process of `conn` (read by any thread) */
        unsigned backoff_ms;   /* before the next reconnection; 0: none failed */
        bool logged_reconnect;

        Column cols[MAX_COLUMNS]; /* the arrays of the statement being sent */
        size_t *list[_STMT_MAX];  /* a round's changes (indices into the batch) per statement */
        size_t list_cap[_STMT_MAX];
        RoundSeen *seen;          /* a round's jobs: an open-addressing table of seen_cap */
        size_t seen_cap;
        uint32_t round;           /* entries of other rounds are free */

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
                todo = "; stop the other futured, or give this one another database, or run "
                       "every futured of the database with --cluster";
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
        /* A generic plan made while the table was nearly empty joins the arrays to it with a
         * sequential scan, and PostgreSQL keeps that plan as the table grows: each run is planned
         * for its own arrays and the table's size instead (an index scan per change). */
        int r = run(s, "SET plan_cache_mode = force_custom_plan", NULL, NULL);

        if (r < 0)
                return r;
        for (int i = 0; i < _STMT_MAX; i++) {
                char name[8];
                PGresult *res;
                snprintf(name, sizeof(name), "s%d", i);
                res = s->cluster ? PQprepare(s->conn, name, cluster_stmts[i].sql,
                                             cluster_stmts[i].n_params, NULL)
                                 : PQprepare(s->conn, name, stmts[i].sql, stmts[i].n_params, NULL);
                if (PQresultStatus(res) != PGRES_COMMAND_OK)
                        r = errno_of(s->conn, res);
                PQclear(res);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Makes this futured the database's one user for the session, or in cluster mode one of its
 * nodes (a shared lock: a futured without --cluster is refused while nodes use the database,
 * and nodes while such a futured does). A futured killed a moment ago may still hold it (its
 * server process has not noticed the closed connection yet): tries for 5 s. Returns 0, -EBUSY
 * or -errno. */
static int take_database(PgStore *s) {
        for (int i = 0; i < 50; i++) {
                _cleanup_free_ char *got = NULL;
                struct timespec ts = { .tv_nsec = 100000000 };
                int r = run(s, s->cluster ? "SELECT pg_try_advisory_lock_shared(" LOCK_OWNER ")"
                                          : "SELECT pg_try_advisory_lock(" LOCK_OWNER ")",
                            &got, NULL);
                if (r < 0)
                        return r;
                if (got && strcmp(got, "t") == 0)
                        return 0;
                nanosleep(&ts, NULL);
        }
        return -EBUSY;
}

/* Brings a database of an older schema up to this one, inside the set-up's transaction, one
 * step per version (each step sets futured_version to its number). */
static int migrate(PgStore *s, long version, char **ret_error) {
        int r = 0;

        if (version == 0 && (r = run(s, schema_v1, NULL, ret_error)) < 0)
                return r;
        if (version <= 1 && (r = run(s, schema_v2, NULL, ret_error)) < 0)
                return r;
        if (version <= 2 && (r = run(s, schema_v3, NULL, ret_error)) < 0)
                return r;
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
        uint64_t deadline;
        PGresult *res;
        int r = -ENOTCONN;

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
        /* Not PQexec(): a server that does not answer (a network cut without a reset) would hold
         * the loop until TCP gives up. One second, then the connection is dropped. */
        if (!PQsendQuery(s->id_conn, "SELECT nextval('futured_ids')"))
                goto drop;
        deadline = now_ns() + 1000000000u;
        while (PQisBusy(s->id_conn)) {
                struct pollfd pfd = { .fd = PQsocket(s->id_conn), .events = POLLIN };
                uint64_t now = now_ns();
                if (now >= deadline || poll(&pfd, 1, (int) ((deadline - now) / 1000000u) + 1) < 0 ||
                    !PQconsumeInput(s->id_conn))
                        goto drop;
        }
        while ((res = PQgetResult(s->id_conn))) {
                if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
                        s->id_next = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
                        s->id_end = s->id_next + PGSTORE_ID_BLOCK;
                        r = 0;
                } else if (r < 0)
                        r = errno_of(s->id_conn, res);
                PQclear(res);
        }
        return r;
drop:
        PQfinish(s->id_conn);
        s->id_conn = NULL;
        return -ENOTCONN;
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
        /* Before its first commit: a notification of it always carries a PID known here. */
        atomic_store_explicit(&s->commit_pid, PQbackendPID(s->conn), memory_order_relaxed);
        return 0;
}

int pgstore_commit_pid(const PgStore *s) {
        return atomic_load_explicit(&s->commit_pid, memory_order_relaxed);
}

int pgstore_open(PgStore **ret, const char *uri, bool cluster, uint64_t *ret_next_id) {
        PgStore *s = calloc(1, sizeof(*s));
        _cleanup_free_ char *error = NULL;
        char boot[17];
        uint64_t nonce = 0;
        int r;

        if (!s)
                return -ENOMEM;
        s->cluster = cluster;
        if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
                nonce = now_ns() ^ ((uint64_t) getpid() << 32);
        snprintf(boot, sizeof(boot), "%016" PRIx64, nonce);
        store_owner_format(s->owner, sizeof(s->owner), cluster ? boot : NULL);
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
        for (int i = 0; i < MAX_COLUMNS; i++)
                free(s->cols[i].p);
        for (int i = 0; i < _STMT_MAX; i++)
                free(s->list[i]);
        free(s->seen);
        free(s->notify);
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
static int64_t int_at(const PGresult *res, int row, int col) {
        int len = PQgetlength(res, row, col);
        uint64_t v;

        if (PQgetisnull(res, row, col))
                return 0;
        v = be(PQgetvalue(res, row, col), len);
        if (len == 2)
                return (int16_t) v;
        if (len == 4)
                return (int32_t) v;
        return (int64_t) v;
}

static const char *text_at(const PGresult *res, int row, int col) {
        return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static const uint8_t *blob_at(const PGresult *res, int row, int col, uint32_t *ret_len) {
        if (PQgetisnull(res, row, col)) {
                *ret_len = 0;
                return NULL;
        }
        *ret_len = (uint32_t) PQgetlength(res, row, col);
        return (const uint8_t *) PQgetvalue(res, row, col);
}

void pgstore_job_at(const PGresult *res, int row, StoreJob *job) {
        *job = (StoreJob){
                .id = (uint64_t) int_at(res, row, 0),
                .kind = text_at(res, row, 1),
                .group = text_at(res, row, 3),
                .group_limit = (uint32_t) int_at(res, row, 4),
                .priority = (int16_t) int_at(res, row, 5),
                .timeout_ms = (uint32_t) int_at(res, row, 6),
                .retries = (uint8_t) int_at(res, row, 7),
                .attempt = (uint8_t) int_at(res, row, 8),
                .state = (uint8_t) int_at(res, row, 9),
                .finished_at_ms = int_at(res, row, 11),
                .key = text_at(res, row, 12),
                .owner = PQnfields(res) > 13 ? text_at(res, row, 13) : NULL,
        };
        job->args = blob_at(res, row, 2, &job->args_len);
        job->outcome = blob_at(res, row, 10, &job->outcome_len);
}

const char *pgstore_owner(const PgStore *s) {
        return s->owner;
}

PGconn *pgstore_connect(const char *uri) {
        return connect_to(uri);
}

int pgstore_recover(PgStore *s, StoreRecoverFn fn, void *userdata) {
        static const char sql[] = "SELECT " PGSTORE_JOB_COLUMNS " FROM futured_jobs ORDER BY id";
        PGresult *res;
        int r = 0;
        bool ended = false;

        /* A node of a cluster recovers nothing: its previous run's jobs are another owner's,
         * taken back by the nodes once that owner's lease expires (cluster.c), and the other
         * rows are read when asked for. */
        if (s->cluster)
                return 0;
        if (!PQsendQueryParams(s->conn, sql, 0, NULL, NULL, NULL, NULL, 1) ||
            !PQsetSingleRowMode(s->conn))
                return refuse(s, -EIO, pq_message(PQerrorMessage(s->conn)));
        while ((res = PQgetResult(s->conn))) {
                ExecStatusType st = PQresultStatus(res);
                if (st == PGRES_SINGLE_TUPLE && r >= 0) {
                        StoreJob job;
                        pgstore_job_at(res, 0, &job);
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

static int col_put(Column *c, const void *data, size_t len) {
        if (c->n + len > c->cap) {
                size_t cap = MAX(c->cap * 2, 4096u);
                uint8_t *p;
                while (cap < c->n + len)
                        cap *= 2;
                if (!(p = realloc(c->p, cap)))
                        return -ENOMEM;
                c->p = p;
                c->cap = cap;
        }
        memcpy(c->p + c->n, data, len);
        c->n += len;
        return 0;
}

static int col_u32(Column *c, uint32_t v) {
        v = htobe32(v);
        return col_put(c, &v, 4);
}

static int col_begin(Column *c, uint32_t oid) {
        c->n = 0;
        c->count = 0;
        if (col_u32(c, 1) < 0 || col_u32(c, 0) < 0 || col_u32(c, oid) < 0 || col_u32(c, 0) < 0)
                return -ENOMEM;
        return col_u32(c, 1);
}

/* Appends an element: `len` bytes, or NULL when `data` is. */
static int col_bytes(Column *c, const void *data, uint32_t len) {
        c->count++;
        if (!data) {
                c->p[7] = 1; /* the flags: it has NULLs */
                return col_u32(c, UINT32_MAX);
        }
        return col_u32(c, len) < 0 ? -ENOMEM : col_put(c, data, len);
}

static int col_str(Column *c, const StoreBatch *b, uint32_t off) {
        const char *str = off == STORE_NONE ? NULL : (const char *) b->bytes + off;

        return col_bytes(c, str, str ? (uint32_t) strlen(str) : 0);
}

/* An integer element of `width` bytes (2, 4 or 8), big-endian. */
static int col_int(Column *c, int64_t v, int width) {
        uint8_t buf[8];

        for (int i = 0; i < width; i++)
                buf[i] = (uint8_t) ((uint64_t) v >> (8 * (width - 1 - i)));
        return col_bytes(c, buf, (uint32_t) width);
}

/* The element types of each statement's array parameters. */
static const uint32_t column_oids[_STMT_MAX][MAX_COLUMNS] = {
        [STMT_ADD] = { OID_INT8, OID_TEXT, OID_BYTEA, OID_TEXT, OID_INT4, OID_INT2, OID_INT8,
                       OID_INT2, OID_INT2, OID_INT2, OID_TEXT },
        [STMT_START] = { OID_INT8, OID_INT2 },
        [STMT_FINISH] = { OID_INT8, OID_INT2, OID_BYTEA, OID_INT8, OID_INT2, OID_INT2, 0 },
        [STMT_REQUEUE] = { OID_INT8, OID_INT2 },
        [STMT_REMOVE] = { OID_INT8 },
};

/* ... in cluster mode. 0: the text parameter of this node's owner. */
static const uint32_t cluster_column_oids[_STMT_MAX][MAX_COLUMNS] = {
        [STMT_ADD] = { OID_INT8, OID_TEXT, OID_BYTEA, OID_TEXT, OID_INT4, OID_INT2, OID_INT8,
                       OID_INT2, OID_INT2, OID_INT2, OID_TEXT, OID_INT2, 0 },
        [STMT_START] = { OID_INT8, OID_INT2, 0 },
        [STMT_FINISH] = { OID_INT8, OID_INT2, OID_BYTEA, OID_INT8, OID_INT2, OID_INT2, 0 },
        [STMT_REQUEUE] = { OID_INT8, OID_INT2, 0 },
        [STMT_REMOVE] = { OID_INT8 },
};

/* Appends one change to the run's arrays (`started`: a finish with its start folded in). */
static int col_op(PgStore *s, const StoreBatch *b, const StoreOp *op, bool started) {
        Column *c = s->cols;
        int r = col_int(&c[0], (int64_t) op->id, 8);

        if (r < 0)
                return r;
        switch (op->type) {
        case STORE_OP_ADD:
                if ((r = col_str(&c[1], b, op->kind_off)) < 0 ||
                    (r = col_bytes(&c[2], b->bytes + op->args_off, op->args_len)) < 0 ||
                    (r = col_str(&c[3], b, op->group_off)) < 0 ||
                    (r = col_int(&c[4], op->group_limit, 4)) < 0 ||
                    (r = col_int(&c[5], op->priority, 2)) < 0 ||
                    (r = col_int(&c[6], op->timeout_ms, 8)) < 0 ||
                    (r = col_int(&c[7], op->retries, 2)) < 0 ||
                    (r = col_int(&c[8], op->attempt, 2)) < 0 ||
                    (r = col_int(&c[9], op->state, 2)) < 0 ||
                    (r = col_str(&c[10], b, op->key_off)) < 0)
                        return r;
                return s->cluster ? col_int(&c[11], op->open, 2) : 0;
        case STORE_OP_START:
        case STORE_OP_REQUEUE:
                return col_int(&c[1], op->attempt, 2);
        case STORE_OP_FINISH:
                /* An empty outcome is not NULL. */
                if ((r = col_int(&c[1], op->state, 2)) < 0 ||
                    (r = col_bytes(&c[2],
                                   !op->has_outcome ? NULL
                                   : op->outcome_len ? b->bytes + op->outcome_off
                                                     : (const uint8_t *) "",
                                   op->outcome_len)) < 0 ||
                    (r = col_int(&c[3], op->finished_at_ms, 8)) < 0 ||
                    (r = col_int(&c[4], op->attempt, 2)) < 0)
                        return r;
                return col_int(&c[5], started, 2);
        default:
                return 0;
        }
}

/* The statement of each change type, and its place in a round (below). */
static const int stmt_of[] = {
        [STORE_OP_ADD] = STMT_ADD,         [STORE_OP_START] = STMT_START,
        [STORE_OP_FINISH] = STMT_FINISH,   [STORE_OP_REQUEUE] = STMT_REQUEUE,
        [STORE_OP_REMOVE] = STMT_REMOVE,
};
/* Removals go first: a job added with the idempotency key of one whose row the same round
 * deletes (its result expired) is then inserted (keys are unique). A job removed after its own
 * add starts a round of its own, as any change of a lower rank does. */
static const int stmt_rank[_STMT_MAX] = {
        [STMT_REMOVE] = 0, [STMT_ADD] = 1, [STMT_START] = 2, [STMT_REQUEUE] = 3, [STMT_FINISH] = 4,
};
static const int stmt_by_rank[_STMT_MAX] = { STMT_REMOVE, STMT_ADD, STMT_START, STMT_REQUEUE,
                                             STMT_FINISH };

/* Sends the changes ops[list[0..n)] (all of statement `stmt`) into the pipeline as one
 * statement. Returns 0, -ENOMEM or -ENOTCONN. */
static int send_list(PgStore *s, const StoreBatch *b, int stmt, const size_t *list, size_t n) {
        int n_params = s->cluster ? cluster_stmts[stmt].n_params : stmts[stmt].n_params, r;
        const uint32_t *oids = s->cluster ? cluster_column_oids[stmt] : column_oids[stmt];
        const char *values[MAX_COLUMNS + 1] = {};
        int lens[MAX_COLUMNS + 1] = {}, fmts[MAX_COLUMNS + 1] = {};
        char name[8];

        for (int k = 0; k < n_params; k++)
                if (oids[k] && (r = col_begin(&s->cols[k], oids[k])) < 0)
                        return r;
        for (size_t j = 0; j < n; j++)
                if ((r = col_op(s, b, &b->ops[list[j] & ~STARTED], (list[j] & STARTED) != 0)) < 0)
                        return r;
        for (int k = 0; k < n_params; k++) {
                Column *c = &s->cols[k];
                uint32_t count = htobe32(c->count);
                if (!oids[k]) {
                        values[k] = s->owner; /* the owner: text, not an array */
                        continue;
                }
                memcpy(c->p + 12, &count, 4); /* the length in the header */
                values[k] = (const char *) c->p;
                lens[k] = (int) c->n;
                fmts[k] = 1;
        }
        snprintf(name, sizeof(name), "s%d", stmt);
        return PQsendQueryPrepared(s->conn, name, n_params, values, lens, fmts, 0) ? 0 : -ENOTCONN;
}

/* After the adds ops[list[0..n)]: asks for the jobs whose idempotency key a row of another ID
 * has (not inserted): "ID, the row's ID" pairs, in a statement of its own so that its snapshot
 * sees a row that another node's commit, which the add waited for, made. Returns 0, -ENOMEM or
 * -ENOTCONN; sends nothing (and puts 0 in *ret_sent) when no add has a key. */
static int send_twins(PgStore *s, const StoreBatch *b, const size_t *list, size_t n,
                      size_t *ret_sent) {
        const char *values[2];
        int lens[2], fmts[2] = { 1, 1 }, r;

        *ret_sent = 0;
        if ((r = col_begin(&s->cols[0], OID_INT8)) < 0 ||
            (r = col_begin(&s->cols[1], OID_TEXT)) < 0)
                return r;
        for (size_t j = 0; j < n; j++) {
                const StoreOp *op = &b->ops[list[j]];
                if (op->key_off == STORE_NONE)
                        continue;
                if ((r = col_int(&s->cols[0], (int64_t) op->id, 8)) < 0 ||
                    (r = col_str(&s->cols[1], b, op->key_off)) < 0)
                        return r;
        }
        if (s->cols[0].count == 0)
                return 0;
        for (int k = 0; k < 2; k++) {
                uint32_t count = htobe32(s->cols[k].count);
                memcpy(s->cols[k].p + 12, &count, 4);
                values[k] = (const char *) s->cols[k].p;
                lens[k] = (int) s->cols[k].n;
        }
        *ret_sent = 1;
        return PQsendQueryParams(s->conn, "SELECT u.i, e.id FROM unnest($1::bigint[], "
                                          "$2::text[]) u(i, k) JOIN futured_jobs e ON "
                                          "e.idempotency_key = u.k AND e.id <> u.i",
                                 2, NULL, values, lens, fmts, 0)
                       ? 0
                       : -ENOTCONN;
}

/* Makes room for a batch of `n` changes in the round's lists and ID table. */
static int round_reserve(PgStore *s, size_t n) {
        size_t cap = 64;

        while (cap < 2 * n)
                cap *= 2;
        if (cap > s->seen_cap) {
                RoundSeen *seen = calloc(cap, sizeof(*seen));
                if (!seen)
                        return -ENOMEM;
                free(s->seen);
                s->seen = seen;
                s->seen_cap = cap;
                s->round = 0;
        }
        for (int k = 0; k < _STMT_MAX; k++) {
                if (n > s->list_cap[k]) {
                        size_t *l = realloc(s->list[k], n * sizeof(*l));
                        if (!l)
                                return -ENOMEM;
                        s->list[k] = l;
                        s->list_cap[k] = n;
                }
        }
        return 0;
}

/* The round's entry for `id` (a fresh one, rank -1, when the round has none yet). */
static RoundSeen *round_seen(PgStore *s, uint64_t id) {
        size_t mask = s->seen_cap - 1, i = (size_t) (id * 0x9E3779B97F4A7C15u) & mask;

        while (s->seen[i].round == s->round && s->seen[i].id != id)
                i = (i + 1) & mask;
        if (s->seen[i].round != s->round)
                s->seen[i] = (RoundSeen){ .id = id, .round = s->round, .rank = -1 };
        return &s->seen[i];
}

/* Sends the changes from ops[*i] on as one round: every change is put in its statement's list
 * until one comes whose job already had a change of the same or a later rank in this round
 * (a job started again after a requeue): the round ends before it. Changes of different jobs
 * commute, and one job's changes keep their order, so that the round's statements, sent in rank
 * order, do what the changes one by one would have done. A finish right after its job's start
 * in the round (a short job: both in one batch) takes the start with it: one row written once
 * instead of twice. Puts the index after the round and the number of statements sent. Returns
 * 0, -ENOMEM or -ENOTCONN. */
static int send_round(PgStore *s, const StoreBatch *b, size_t *i, size_t *ret_sent) {
        size_t n[_STMT_MAX] = {}, sent = 0, kept = 0;
        int r = 0;

        s->round++;
        for (; *i < b->n_ops; (*i)++) {
                const StoreOp *op = &b->ops[*i];
                int stmt = stmt_of[op->type];
                RoundSeen *seen = round_seen(s, op->id);
                size_t entry = *i;
                if (seen->rank >= stmt_rank[stmt])
                        break;
                if (stmt == STMT_START)
                        seen->start = (uint32_t) n[STMT_START];
                else if (stmt == STMT_FINISH && seen->rank == stmt_rank[STMT_START]) {
                        s->list[STMT_START][seen->start] = FOLDED;
                        entry |= STARTED;
                }
                seen->rank = (int8_t) stmt_rank[stmt];
                s->list[stmt][n[stmt]++] = entry;
        }
        for (size_t j = 0; j < n[STMT_START]; j++)
                if (s->list[STMT_START][j] != FOLDED)
                        s->list[STMT_START][kept++] = s->list[STMT_START][j];
        n[STMT_START] = kept;
        for (int k = 0; k < _STMT_MAX && r >= 0; k++) {
                int stmt = stmt_by_rank[k];
                for (size_t from = 0; from < n[stmt] && r >= 0; from += RUN_MAX, sent++)
                        r = send_list(s, b, stmt, s->list[stmt] + from,
                                      MIN(n[stmt] - from, (size_t) RUN_MAX));
                if (stmt == STMT_ADD && n[stmt] > 0 && r >= 0) {
                        size_t twins = 0;
                        r = send_twins(s, b, s->list[stmt], n[stmt], &twins);
                        sent += twins;
                }
        }
        *ret_sent = sent;
        return r;
}

/* Reads the results of `n` queries and of the synchronization after them. Returns 0 or the
 * first failure's -errno (putting its message when `*ret_error` is still NULL). */
static int drain(PgStore *s, StoreBatch *b, size_t n, char **ret_error) {
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
                if (st == PGRES_TUPLES_OK && PQnfields(res) == 1 && PQftype(res, 0) == OID_INT8)
                        for (int row = 0; row < PQntuples(res) && r >= 0; row++)
                                r = idlist_add(&b->fenced, strtoull(PQgetvalue(res, row, 0), NULL, 10));
                if (st == PGRES_TUPLES_OK && PQnfields(res) == 2) /* send_twins() */
                        for (int row = 0; row < PQntuples(res) && r >= 0; row++)
                                if ((r = idlist_add(&b->twins, strtoull(PQgetvalue(res, row, 0),
                                                                         NULL, 10))) >= 0)
                                        r = idlist_add(&b->twins,
                                                       strtoull(PQgetvalue(res, row, 1), NULL,
                                                                10));
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

/* The payload limit of a notification is 8,000 bytes: each carries at most this much. */
#define NOTIFY_MAX 7900

/* Sends one notification of `len` bytes of s->notify. */
static int send_notify(PgStore *s, size_t len, size_t *sent) {
        const char *values[1] = { s->notify };

        s->notify[len] = 0;
        (*sent)++;
        return PQsendQueryParams(s->conn, "SELECT pg_notify('futured', $1)", 1, NULL, values,
                                 NULL, NULL, 0) ? 0 : -ENOTCONN;
}

/* Adds `kind` to the list "p:KIND,KIND" being made in `buf` (of NOTIFY_MAX + 32 bytes) unless
 * it is there; a list too long becomes "p" (any kind). */
static void list_kind(char *buf, const char *kind) {
        size_t len = strlen(buf), klen = strlen(kind);

        for (const char *p = buf + 2, *end; len > 1 && *p; p = end + (*end == ',')) {
                end = p + strcspn(p, ",");
                if ((size_t) (end - p) == klen && memcmp(p, kind, klen) == 0)
                        return;
        }
        if (len == 1)
                return; /* any kind already */
        if (len + klen + 1 > NOTIFY_MAX)
                buf[1] = 0;
        else
                snprintf(buf + len, NOTIFY_MAX + 32 - len, "%s%s", len > 2 ? "," : "", kind);
}

/* Cluster mode: the batch's notifications, delivered by the server when it commits (nodes
 * LISTEN on channel `futured`): "d:ID,ID,..." for the jobs it finished (as many as their IDs
 * need, each under the payload limit), "p:KIND,..." with the kinds of the jobs it added open to
 * any node, "g:KIND,..." for those of groups with a limit (a node claims for the lanes that run
 * them). Counts the statements in *sent. Returns 0, -ENOMEM or -ENOTCONN. */
static int send_notifies(PgStore *s, const StoreBatch *b, size_t *sent) {
        char open[2][NOTIFY_MAX + 32] = { "p:", "g:" };
        size_t n = 0;
        int r = 0;

        if (!s->notify && !(s->notify = malloc(s->notify_cap = NOTIFY_MAX + 32)))
                return -ENOMEM;
        for (size_t i = 0; i < b->n_ops && r >= 0; i++) {
                const StoreOp *op = &b->ops[i];
                if (op->type == STORE_OP_ADD && op->open)
                        list_kind(open[op->group_limit > 0],
                                  (const char *) b->bytes + op->kind_off);
                if (op->type != STORE_OP_FINISH)
                        continue;
                if (n > NOTIFY_MAX) {
                        r = send_notify(s, n - 1, sent); /* without the last comma */
                        n = 0;
                }
                if (n == 0)
                        n = (size_t) snprintf(s->notify, s->notify_cap, "d:");
                n += (size_t) snprintf(s->notify + n, s->notify_cap - n, "%" PRIu64 ",", op->id);
        }
        if (r >= 0 && n > 0)
                r = send_notify(s, n - 1, sent);
        for (int k = 0; k < 2 && r >= 0; k++)
                if (strcmp(open[k], k ? "g:" : "p:") != 0)
                        r = send_notify(s, (size_t) snprintf(s->notify, s->notify_cap, "%s",
                                                              open[k]), sent);
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

int pgstore_commit(PgStore *s, StoreBatch *b) {
        _cleanup_free_ char *error = NULL;
        size_t i = 0;
        int r;

        if (PQstatus(s->conn) != CONNECTION_OK && (r = reconnect(s)) < 0)
                return r;
        if (!PQenterPipelineMode(s->conn))
                return -EIO;
        r = PQsendQueryParams(s->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) ? 0 : -ENOTCONN;
        /* Nothing in it is acknowledged yet: visible at once, on disk with the next durable
         * commit (the log is one sequence) or the WAL writer's next flush. */
        if (r >= 0 && !b->durable)
                r = PQsendQueryParams(s->conn, "SET LOCAL synchronous_commit = off", 0, NULL,
                                      NULL, NULL, NULL, 0) ? 0 : -ENOTCONN;
        /* Chunks of changes, each ended by a synchronization whose results are read before the
         * next is sent; the explicit transaction spans them all. */
        if (r >= 0)
                r = round_reserve(s, b->n_ops);
        for (size_t sent = 1 + !b->durable; r >= 0; sent = 0) {
                while (i < b->n_ops && sent < CHUNK && r >= 0) {
                        size_t n = 0;
                        r = send_round(s, b, &i, &n);
                        sent += n;
                }
                if (r >= 0 && i == b->n_ops && s->cluster)
                        r = send_notifies(s, b, &sent);
                if (r >= 0 && i == b->n_ops && !PQsendQueryParams(s->conn, "COMMIT", 0, NULL,
                                                                  NULL, NULL, NULL, 0))
                        r = -ENOTCONN;
                sent += i == b->n_ops;
                if (r >= 0)
                        r = PQpipelineSync(s->conn) ? 0 : -ENOTCONN;
                if (r >= 0)
                        r = drain(s, b, sent, &error);
                if (i == b->n_ops)
                        break;
        }
        if (r < 0 && r != -ENOTCONN) {
                /* The transaction failed: end it, so that the connection serves the next. */
                if (PQsendQueryParams(s->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) &&
                    PQpipelineSync(s->conn))
                        (void) drain(s, b, 1, &error);
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
