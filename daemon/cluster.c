/* cluster: see cluster.h. The loop and the thread share the requests (room per lane, lookups,
 * cancels) and the inbox of what the thread learnt, under `lock`; each side wakes the other
 * through an eventfd. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "cluster.h"
#include "frame.h"
#include "idlist.h"
#include "idset.h"
#include "log.h"
#include "macro.h"
#include "now.h"
#include "pgstore.h"
#include "thread.h"

/* Open jobs are looked for at least this often (notifications are the fast path). */
#define POLL_MS 1000u
/* The loop checks what it waits for against the table this often (missed notifications). */
#define RECONCILE_POLLS 5u
/* The longest wait between two reconnections. */
#define MAX_BACKOFF_MS 2000u
/* Rows of expired results deleted per statement. */
#define EXPIRE_BATCH 1000
/* Notification payloads stay under PostgreSQL's 8,000 bytes. */
#define NOTIFY_MAX 7900
/* After a reconnection, the rows finished since this long before the connection was last seen
 * working are read again (their notifications may be lost): the clocks of the nodes, which
 * write finished_at, may differ by this much. */
#define CATCH_UP_MARGIN_MS 2000
/* Rows read per statement of a catch-up. */
#define CATCH_UP_BATCH 1000

/* Claim hints: open jobs of no limited group, of limited groups, may wait for a lane. */
#define HINT_OPEN 1u
#define HINT_GROUPS 2u
#define HINT_ALL (HINT_OPEN | HINT_GROUPS)

typedef enum ItemType {
        ITEM_CLAIMED,   /* res: claimed rows of lane `lane` */
        ITEM_ROWS,      /* res: a lookup's rows; then looked_up(seq) */
        ITEM_NOTE,      /* text: a notification's payload (cancels, releases, starts) */
        ITEM_DONE,      /* text: an array literal of finished IDs; res: their final rows */
        ITEM_LIST,      /* res: the rows of list `seq` */
        ITEM_RECONCILE,
} ItemType;

/* A `list` asked by the loop (cluster_list), then its answer (the loop's). */
typedef struct ListAsk {
        struct ListAsk *next;
        uint64_t seq;
        int state;                  /* -1: any */
        uint64_t after;
        uint32_t limit;
        PGresult *res;              /* the answer: rows in ID order */
} ListAsk;

typedef struct Item {
        struct Item *next;
        ItemType type;
        uint32_t lane;
        uint64_t seq;
        PGresult *res;
        char text[];
} Item;

struct Cluster {
        Loop *loop;
        ClusterHooks hooks;
        void *userdata;
        char *uri, *owner;
        unsigned lease_ms;
        double retain;
        char *kinds[CLUSTER_LANES];
        uint8_t *interrupted;       /* the failure map of a job taken back without retries */
        size_t interrupted_len;
        LoopFile done_file;         /* the thread -> the loop */
        ListAsk *answers;           /* the loop's: lists read, not taken yet */
        int wake_fd;                /* the loop -> the thread */
        uint32_t room_seen[CLUSTER_LANES]; /* the loop's: what it told last */
        uint32_t taken[CLUSTER_LANES]; /* the loop's: claimed jobs it took since it told */

        pthread_mutex_t lock;
        uint32_t room[CLUSTER_LANES];
        uint32_t transit[CLUSTER_LANES]; /* claimed, not yet counted in `room` by the loop */
        IdList lookups, cancels, releases;
        ListAsk *lists, *lists_tail; /* asked, not read yet */
        uint64_t lookup_seq;        /* of the last lookup asked */
        Item *inbox, *inbox_tail;
        bool stopping;
        ClusterStats stats;
        IdSet watched;              /* cluster_watch() */
        int store_pid;              /* cluster_set_listeners() */
        bool subscribed;
        int store_pid_seen;         /* the loop's: what it told last */
        bool subscribed_seen;

        /* The thread's (the main thread's before it starts and after it stops). */
        PGconn *conn;
        pthread_t thread;
        bool thread_started;
        uint8_t hint[CLUSTER_LANES]; /* HINT_*: what open jobs may be waiting for each lane */
        bool groups_held;           /* a group's limit held open jobs back */
        unsigned backoff_ms;
        unsigned polls;
        IdList done;                /* finished IDs notified, their rows not read yet */
        bool registered;
        uint64_t connected_ns;      /* when the connection was made */
        int64_t ok_ms;              /* wall clock: when the connection was last seen working */
        int64_t catch_up_ms;        /* finished rows from then on are to be read again; 0: none */
        uint64_t catch_up_after;    /* ... those of IDs above this one (read so far) */
        IdList reannounce;          /* releases announced around an outage: again once settled */
};

/* "{1,2,3}": an array literal of `n` IDs (malloc'ed), or NULL. */
static char *ids_literal(const uint64_t *ids, size_t n) {
        char *s = malloc(n * 21 + 3), *p = s;

        if (!s)
                return NULL;
        *p++ = '{';
        for (size_t i = 0; i < n; i++)
                p += sprintf(p, "%s%" PRIu64, i ? "," : "", ids[i]);
        *p++ = '}';
        *p = 0;
        return s;
}

/* The bigint in binary format at (row, col) of `res`. */
static uint64_t id_at(const PGresult *res, int row, int col) {
        uint64_t v;

        memcpy(&v, PQgetvalue(res, row, col), sizeof(v));
        return be64toh(v);
}

/* The integer in binary format at (row, col) of `res`. */
static uint32_t int4_at(const PGresult *res, int row, int col) {
        uint32_t v;

        memcpy(&v, PQgetvalue(res, row, col), sizeof(v));
        return be32toh(v);
}

/* Thread: hands an item to the loop (taking `res`). */
static void post(Cluster *c, ItemType type, PGresult *res, const char *text, uint32_t lane,
                 uint64_t seq) {
        size_t len = text ? strlen(text) + 1 : 0;
        Item *it = malloc(sizeof(*it) + len);
        uint64_t one = 1;

        if (!it) {
                PQclear(res);
                log_error("cluster: out of memory: a message from the database is lost");
                return;
        }
        *it = (Item){ .type = type, .res = res, .lane = lane, .seq = seq };
        if (text)
                memcpy(it->text, text, len);
        pthread_mutex_lock(&c->lock);
        QUEUE_APPEND(c->inbox, c->inbox_tail, it);
        pthread_mutex_unlock(&c->lock);
        (void) !write(c->done_file.fd, &one, sizeof(one));
}

/* Runs `sql` with text parameters (NULL ones are SQL NULL; `binary`: the parameter at that
 * index is binary, of length `bin_len`) and binary results. Returns the result, or NULL after
 * logging the failure (the caller drops the connection when it is broken). */
static PGresult *query(Cluster *c, const char *sql, int n, const char *const *values,
                       int binary, int bin_len) {
        int lens[8] = {}, fmts[8] = {};
        PGresult *res;
        ExecStatusType st;

        if (binary >= 0) {
                lens[binary] = bin_len;
                fmts[binary] = 1;
        }
        res = PQexecParams(c->conn, sql, n, NULL, values, lens, fmts, 1);
        st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
                return res;
        if (PQstatus(c->conn) == CONNECTION_OK)
                log_error("cluster: %s", PQresultErrorMessage(res));
        PQclear(res);
        return NULL;
}

static bool exec_ok(Cluster *c, const char *sql) {
        PGresult *res = query(c, sql, 0, NULL, -1, 0);

        PQclear(res);
        return res != NULL;
}

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends the notifications "PREFIX:ID,..." of `ids` (several when they do not fit one). */
static bool notify_ids(Cluster *c, char prefix, const uint64_t *ids, size_t n) {
        char buf[NOTIFY_MAX + 32];
        size_t len = 0;
        bool ok = true;

        for (size_t i = 0; i <= n && ok; i++) {
                if (len > 0 && (i == n || len > NOTIFY_MAX)) {
                        const char *values[1] = { buf };
                        PGresult *res;
                        buf[len - 1] = 0; /* the last comma */
                        res = query(c, "SELECT pg_notify('futured', $1)", 1, values, -1, 0);
                        ok = res != NULL;
                        PQclear(res);
                        len = 0;
                }
                if (i == n)
                        break;
                if (len == 0)
                        len = (size_t) snprintf(buf, sizeof(buf), "%c:", prefix);
                len += (size_t) snprintf(buf + len, sizeof(buf) - len, "%" PRIu64 ",", ids[i]);
        }
        return ok;
}

static void hint_all(Cluster *c, uint8_t bits) {
        for (unsigned lane = 0; lane < CLUSTER_LANES; lane++)
                c->hint[lane] |= bits;
}

/* Whether the array literal `lit` ("{a,b}") has the element of `len` bytes at `kind`. */
static bool literal_has(const char *lit, const char *kind, size_t len) {
        for (const char *p = lit + 1, *end; *p && *p != '}'; p = end + (*end == ',')) {
                end = p + strcspn(p, ",}");
                if ((size_t) (end - p) == len && memcmp(p, kind, len) == 0)
                        return true;
        }
        return false;
}

/* Hints the lanes that run the kinds of `list` ("a,b", a notification's). */
static void hint_kinds(Cluster *c, const char *list, uint8_t bits) {
        for (const char *p = list, *end; *p; p = end + (*end == ',')) {
                end = p + strcspn(p, ",");
                for (unsigned lane = 0; lane < CLUSTER_LANES; lane++)
                        if (literal_has(c->kinds[lane], p, (size_t) (end - p)))
                                c->hint[lane] |= bits;
        }
}

/* Renews the node's lease (registers it when it is gone: it expired, and the others took back
 * the jobs it ran; their results will not be written, fencing sees to that). */
static bool renew(Cluster *c) {
        char ms[24];
        const char *values[2] = { c->owner, ms };
        PGresult *res;
        bool found;

        snprintf(ms, sizeof(ms), "%u", c->lease_ms);
        res = query(c, "UPDATE futured_nodes SET lease_until = now() + $2::bigint * "
                       "interval '1 millisecond' WHERE owner = $1", 2, values, -1, 0);
        if (!res)
                return false;
        found = strcmp(PQcmdTuples(res), "0") != 0;
        PQclear(res);
        if (found)
                return true;
        if (c->registered) {
                log_warning("cluster: this node's lease had expired: the other nodes took back "
                            "the jobs it ran, and their results here will not be written");
                pthread_mutex_lock(&c->lock);
                c->stats.lease_lost++;
                pthread_mutex_unlock(&c->lock);
        }
        res = query(c, "INSERT INTO futured_nodes (owner, lease_until) VALUES ($1, now() + "
                       "$2::bigint * interval '1 millisecond') ON CONFLICT (owner) DO UPDATE "
                       "SET lease_until = EXCLUDED.lease_until", 2, values, -1, 0);
        PQclear(res);
        c->registered = res != NULL;
        return res != NULL;
}

/* Takes back the jobs of nodes whose lease expired (or that have none: a node of another run),
 * in one transaction: pending ones become open, running ones run again (open) within their
 * retries or fail `interrupted`; the nodes are told. */
static bool take_back(Cluster *c) {
        char at[24];
        const char *values[2] = { (const char *) c->interrupted, at };
        _cleanup_free_ uint64_t *failed = NULL;
        size_t n_failed = 0, n_open = 0;
        PGresult *res;
        int n;
        bool ok;

        snprintf(at, sizeof(at), "%" PRId64, wall_ms());
        if (!exec_ok(c, "BEGIN"))
                return false;
        res = query(c, "DELETE FROM futured_nodes WHERE lease_until < now()", 0, NULL, -1, 0);
        if (res) {
                PQclear(res);
                res = query(c,
                            "UPDATE futured_jobs j SET "
                            "state = CASE WHEN j.state = 1 AND j.attempt >= 1 + j.retries "
                            "THEN 3 ELSE 0 END, "
                            "outcome = CASE WHEN j.state = 1 AND j.attempt >= 1 + j.retries "
                            "THEN $1::bytea END, "
                            "finished_at = CASE WHEN j.state = 1 AND j.attempt >= 1 + j.retries "
                            "THEN $2::bigint END, "
                            "args = CASE WHEN j.state = 1 AND j.attempt >= 1 + j.retries "
                            "THEN NULL ELSE j.args END, "
                            "owner = CASE WHEN j.state = 1 AND j.attempt >= 1 + j.retries "
                            "THEN j.owner END "
                            "WHERE j.state <= 1 AND j.owner IS NOT NULL AND NOT EXISTS "
                            "(SELECT 1 FROM futured_nodes n WHERE n.owner = j.owner) "
                            "RETURNING j.id, j.state",
                            2, values, 0, (int) c->interrupted_len);
        }
        n = res ? PQntuples(res) : 0;
        if (n > 0 && !(failed = calloc((size_t) n, sizeof(*failed)))) {
                PQclear(res);
                res = NULL;
        }
        for (int i = 0; i < n && res; i++) {
                uint64_t id = id_at(res, i, 0);
                if (PQgetvalue(res, i, 1)[1] == 3)
                        failed[n_failed++] = id;
                else
                        n_open++;
        }
        PQclear(res);
        ok = res && notify_ids(c, 'd', failed, n_failed) &&
             (n_open == 0 || exec_ok(c, "SELECT pg_notify('futured', 'p')")) &&
             exec_ok(c, "COMMIT");
        if (!ok) {
                (void) exec_ok(c, "ROLLBACK");
                return false;
        }
        if (n > 0) {
                log_notice("cluster: took back %d jobs of nodes whose lease expired: %zu to run "
                           "again, %zu failed (interrupted)", n, n_open, n_failed);
                pthread_mutex_lock(&c->lock);
                c->stats.taken_back += (uint64_t) n;
                pthread_mutex_unlock(&c->lock);
                if (n_open > 0)
                        hint_all(c, HINT_ALL);
        }
        return true;
}

/* Deletes results kept longer than the retention time (and a lease: their node's retention
 * goes first), a batch at a time; rows another node is deleting are skipped, not waited for. */
static bool expire_rows(Cluster *c) {
        char cutoff[24];
        const char *values[1] = { cutoff };
        PGresult *res;

        snprintf(cutoff, sizeof(cutoff), "%" PRId64,
                 wall_ms() - (int64_t) (c->retain * 1000) - (int64_t) c->lease_ms);
        res = query(c, "DELETE FROM futured_jobs WHERE id IN (SELECT id FROM futured_jobs "
                       "WHERE finished_at < $1::bigint LIMIT " STRINGIFY(EXPIRE_BATCH)
                       " FOR UPDATE SKIP LOCKED)", 1, values, -1, 0);
        if (res) {
                pthread_mutex_lock(&c->lock);
                c->stats.expired += strtoull(PQcmdTuples(res), NULL, 10);
                pthread_mutex_unlock(&c->lock);
        }
        PQclear(res);
        return res != NULL;
}

/* Notifies the IDs released on this node since the last call ("r:ID,..."). When the
 * connection fails, they stay queued (with those released meanwhile) and are announced once it
 * is back: a chunk that went out before the failure goes again, which is harmless. Those
 * announced around an outage (`again`: before the others can have reconnected and listen
 * again) are kept in c->reannounce, to be announced again once they have (thread_main). */
static bool announce_releases(Cluster *c, bool again) {
        IdList l;
        bool ok;

        pthread_mutex_lock(&c->lock);
        l = c->releases;
        c->releases = (IdList){};
        pthread_mutex_unlock(&c->lock);
        ok = l.n == 0 || notify_ids(c, 'r', l.ids, l.n);
        if (!ok) {
                pthread_mutex_lock(&c->lock);
                for (size_t i = 0; i < c->releases.n; i++)
                        if (idlist_add(&l, c->releases.ids[i]) < 0)
                                log_error("cluster: out of memory: a release is not announced "
                                          "(the other nodes keep their copy until it expires)");
                free(c->releases.ids);
                c->releases = l;
                pthread_mutex_unlock(&c->lock);
                return false;
        }
        for (size_t i = 0; again && i < l.n; i++)
                if (idlist_add(&c->reannounce, l.ids[i]) < 0)
                        break; /* the first announcement went out */
        free(l.ids);
        return ok;
}

/* What a claim returns (PGSTORE_JOB_COLUMNS of the claimed rows). */
#define CLAIMED "RETURNING j.id, j.kind, j.args, j.grp, j.group_limit, j.priority, " \
                "j.timeout_ms, j.retries, j.attempt, j.state, j.outcome, j.finished_at, " \
                "j.idempotency_key"

/* Takes the rows a claim returned for `lane` (NULL: it failed) and adds their IDs to
 * `started`, which claim() announces once its queries are done ("s:ID,...": the other nodes'
 * mirrors show them running; not from here: a claim may be in a pipeline). Returns how many, or
 * -1. */
static int claimed(Cluster *c, uint32_t lane, PGresult *res, IdList *started) {
        int n;

        if (!res)
                return -1;
        n = PQntuples(res);
        if (n == 0) {
                PQclear(res);
                return 0;
        }
        /* Without memory the mirrors show them pending until they are read again. */
        for (int i = 0; i < n && idlist_add(started, id_at(res, i, 0)) >= 0; i++)
                ;
        pthread_mutex_lock(&c->lock);
        c->transit[lane] += (uint32_t) n;
        c->stats.claimed += (uint64_t) n;
        pthread_mutex_unlock(&c->lock);
        post(c, ITEM_CLAIMED, res, NULL, lane, 0);
        return n;
}

/* The room of `lane` not yet filled by claims on their way to the loop. */
static uint32_t room_of(Cluster *c, uint32_t lane) {
        uint32_t want;

        pthread_mutex_lock(&c->lock);
        want = c->room[lane] > c->transit[lane] ? c->room[lane] - c->transit[lane] : 0;
        pthread_mutex_unlock(&c->lock);
        return strcmp(c->kinds[lane], "{}") == 0 ? 0 : want;
}

/* Claims open jobs of groups with a limit for `lane`, of the `groups` (the rows of GROUPS):
 * one transaction per group, under an advisory lock of the group, takes at most the limit less
 * the group's running jobs across the cluster (the rows: no counter to drift). Puts whether a
 * group held jobs back. */
static bool claim_groups(Cluster *c, uint32_t lane, const PGresult *groups, bool *ret_held,
                         IdList *started) {
        const char *values[4] = { c->kinds[lane] };
        bool ok = true;

        for (int g = 0; ok && g < PQntuples(groups); g++) {
                const char *grp = PQgetvalue(groups, g, 0);
                uint32_t lim = int4_at(groups, g, 1);
                uint32_t want = room_of(c, lane), running;
                char take[16];
                PGresult *res;
                if (want == 0)
                        break;
                values[0] = grp;
                ok = exec_ok(c, "BEGIN");
                /* The count in a statement of its own: its snapshot is taken once the
                 * lock is held, so it sees what the group's last claimer committed. */
                res = ok ? query(c, "SELECT pg_advisory_xact_lock(7310858041339125003 # "
                                    "hashtext($1)::bigint)", 1, values, -1, 0)
                         : NULL;
                PQclear(res);
                res = res ? query(c, "SELECT 0, count(*) FROM futured_jobs WHERE grp = $1 "
                                     "AND state = 1", 1, values, -1, 0)
                          : NULL;
                ok = res != NULL;
                running = ok ? (uint32_t) id_at(res, 0, 1) : 0;
                PQclear(res);
                *ret_held |= running + want >= lim;
                snprintf(take, sizeof(take), "%u", running < lim ? MIN(want, lim - running) : 0);
                values[0] = c->owner;
                values[1] = c->kinds[lane];
                values[2] = take;
                values[3] = grp;
                res = ok && strcmp(take, "0") != 0
                              ? query(c, "UPDATE futured_jobs j SET owner = $1, state = 1, "
                                         "attempt = j.attempt + 1 FROM (SELECT id FROM "
                                         "futured_jobs WHERE state = 0 AND owner IS NULL AND "
                                         "grp = $4 AND kind = ANY($2::text[]) ORDER BY "
                                         "priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED) c "
                                         "WHERE j.id = c.id " CLAIMED, 4, values, -1, 0)
                              : NULL;
                ok = ok && exec_ok(c, "COMMIT");
                if (ok)
                        (void) claimed(c, lane, res, started);
                else {
                        PQclear(res);
                        (void) exec_ok(c, "ROLLBACK");
                }
                values[0] = c->kinds[lane];
        }
        return ok;
}

/* The result of the next query of a pipeline (NULL after logging its failure), and the end of
 * that query's results. */
static PGresult *pipeline_result(Cluster *c) {
        PGresult *res = PQgetResult(c->conn), *end;
        ExecStatusType st = PQresultStatus(res);

        if (res && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                if (st != PGRES_PIPELINE_ABORTED && PQstatus(c->conn) == CONNECTION_OK)
                        log_error("cluster: %s", PQresultErrorMessage(res));
                PQclear(res);
                res = NULL;
        }
        if (res && (end = PQgetResult(c->conn))) {
                PQclear(end);
                PQclear(res);
                res = NULL;
        }
        return res;
}

/* Whether a lane with room has a hint: claim() has work. */
static bool claimable(Cluster *c) {
        for (uint32_t lane = 0; lane < CLUSTER_LANES; lane++)
                if (c->hint[lane] && room_of(c, lane) > 0)
                        return true;
        return false;
}

/* Claims open jobs for the hinted lanes with room: those of no limited group by priority then
 * ID (every such lane's claim, and its list of limited groups with open jobs, in one round trip:
 * a pipeline, in one transaction), then those of limited groups within their limits. A lane
 * without room keeps its hint: it claims once it has room. */
static bool claim(Cluster *c) {
        char limit[CLUSTER_LANES][16];
        uint32_t want[CLUSTER_LANES];
        uint8_t asked[CLUSTER_LANES] = {};
        PGresult *groups[CLUSTER_LANES] = {}, *res;
        IdList started = {};
        bool held = false, ok = PQenterPipelineMode(c->conn);

        for (uint32_t lane = 0; lane < CLUSTER_LANES; lane++) {
                const char *values[3] = { c->owner, c->kinds[lane], limit[lane] };
                if (!c->hint[lane] || (want[lane] = room_of(c, lane)) == 0)
                        continue;
                asked[lane] = c->hint[lane];
                snprintf(limit[lane], sizeof(limit[lane]), "%u", want[lane]);
                if (asked[lane] & HINT_OPEN)
                        ok = ok && PQsendQueryParams(
                                c->conn, "UPDATE futured_jobs j SET owner = $1, state = 1, "
                                "attempt = j.attempt + 1 FROM (SELECT id FROM futured_jobs "
                                "WHERE state = 0 AND owner IS NULL AND group_limit = 0 AND "
                                "kind = ANY($2::text[]) ORDER BY priority DESC, id LIMIT $3 "
                                "FOR UPDATE SKIP LOCKED) c WHERE j.id = c.id " CLAIMED, 3, NULL,
                                values, NULL, NULL, 1);
                if (asked[lane] & HINT_GROUPS)
                        ok = ok && PQsendQueryParams(
                                c->conn, "SELECT grp, max(group_limit) FROM futured_jobs "
                                "WHERE state = 0 AND owner IS NULL AND group_limit > 0 AND "
                                "kind = ANY($1::text[]) GROUP BY grp LIMIT 16", 1, NULL,
                                values + 1, NULL, NULL, 1);
        }
        ok = ok && PQpipelineSync(c->conn);
        for (uint32_t lane = 0; lane < CLUSTER_LANES && ok; lane++) {
                if (asked[lane] & HINT_OPEN) {
                        int n = claimed(c, lane, pipeline_result(c), &started);
                        ok = n >= 0;
                        /* A full claim: more may wait. */
                        if (ok && (uint32_t) n < want[lane])
                                c->hint[lane] &= (uint8_t) ~HINT_OPEN;
                }
                if (ok && (asked[lane] & HINT_GROUPS)) {
                        ok = (groups[lane] = pipeline_result(c)) != NULL;
                        c->hint[lane] &= (uint8_t) ~HINT_GROUPS;
                }
        }
        res = ok ? PQgetResult(c->conn) : NULL;
        ok = ok && PQresultStatus(res) == PGRES_PIPELINE_SYNC;
        PQclear(res);
        /* After a failure the connection is dropped (the thread's loop): its state is moot. */
        ok = ok && PQexitPipelineMode(c->conn);
        for (uint32_t lane = 0; lane < CLUSTER_LANES; lane++) {
                if (ok && groups[lane] && PQntuples(groups[lane]) > 0)
                        ok = claim_groups(c, lane, groups[lane], &held, &started);
                PQclear(groups[lane]);
        }
        /* A group at its limit gets room when one of its jobs finishes: look again then. */
        c->groups_held = held;
        ok = ok && (started.n == 0 || notify_ids(c, 's', started.ids, started.n));
        free(started.ids);
        return ok;
}

static void free_lists(ListAsk *l) {
        for (ListAsk *next; l; l = next) {
                next = l->next;
                PQclear(l->res);
                free(l);
        }
}

/* Takes the IDs the loop asked for in `shared` (emptied), as an array literal: NULL when there
 * are none (*ret_oom false) or no memory. */
static char *take_ids(Cluster *c, IdList *shared, uint64_t *ret_seq, bool *ret_oom) {
        IdList l;
        char *lit;

        pthread_mutex_lock(&c->lock);
        l = *shared;
        *shared = (IdList){};
        if (ret_seq)
                *ret_seq = c->lookup_seq;
        pthread_mutex_unlock(&c->lock);
        lit = l.n ? ids_literal(l.ids, l.n) : NULL;
        *ret_oom = l.n && !lit;
        free(l.ids);
        return lit;
}

/* The database cannot be reached: the lookups asked so far fail at once (their requests are
 * answered store_unavailable rather than wait for the outage's end). */
static void fail_lookups(Cluster *c) {
        ListAsk *lists;
        uint64_t seq;
        bool any;

        pthread_mutex_lock(&c->lock);
        any = c->lookups.n > 0 || c->lists;
        c->lookups.n = 0;
        lists = c->lists;
        c->lists = c->lists_tail = NULL;
        seq = c->lookup_seq;
        pthread_mutex_unlock(&c->lock);
        free_lists(lists);
        if (any)
                post(c, ITEM_ROWS, NULL, NULL, 0, seq);
}

/* Reads the rows of the lists in `l` (taken: freed), each posted as ITEM_LIST. */
static bool read_lists(Cluster *c, ListAsk *l) {
        bool ok = true;

        for (ListAsk *next; l; l = next) {
                char state[12], after[24], limit[12];
                const char *values[3] = { state, after, limit };
                PGresult *res = NULL;
                next = l->next;
                snprintf(state, sizeof(state), "%d", l->state);
                snprintf(after, sizeof(after), "%" PRIu64, l->after);
                snprintf(limit, sizeof(limit), "%" PRIu32, l->limit);
                /* The columns pgstore_job_at() reads, without arguments and outcomes. */
                if (ok)
                        res = query(c, "SELECT id, kind, NULL::bytea, grp, group_limit, priority, "
                                       "timeout_ms, retries, attempt, state, NULL::bytea, "
                                       "finished_at, idempotency_key FROM futured_jobs "
                                       "WHERE id > $2::bigint AND ($1::int < 0 OR state = $1::int) "
                                       "ORDER BY id LIMIT $3::int", 3, values, -1, 0);
                ok = ok && res;
                if (res)
                        post(c, ITEM_LIST, res, NULL, 0, l->seq);
                free(l);
        }
        return ok;
}

/* Answers the lookups and lists asked so far. */
static bool look_up(Cluster *c) {
        uint64_t seq;
        bool oom;
        _cleanup_free_ char *lit = take_ids(c, &c->lookups, &seq, &oom);
        const char *values[1] = { lit };
        ListAsk *lists;
        PGresult *res;
        bool ok;

        /* Taken after the lookups' sequence number: every list up to it is among them. */
        pthread_mutex_lock(&c->lock);
        lists = c->lists;
        c->lists = c->lists_tail = NULL;
        pthread_mutex_unlock(&c->lock);
        if (!lit && !lists)
                return !oom;
        ok = read_lists(c, lists);
        if (ok && lit)
                res = query(c, "SELECT " PGSTORE_JOB_COLUMNS ", owner FROM futured_jobs "
                               "WHERE id = ANY($1::bigint[])", 1, values, -1, 0);
        else /* lists alone: an empty answer (NULL after a failure: they are unavailable) */
                res = ok ? PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK) : NULL;
        /* A failure is answered: its requests are told store_unavailable; the loop reads
         * again what it waits for once the connection is back (reconcile). */
        if (res) {
                pthread_mutex_lock(&c->lock);
                c->stats.lookups += (uint64_t) PQntuples(res);
                /* An unfinished row becomes a mirror the loop waits on: watched from now on, so
                 * that a finish notified after this read is read. */
                for (int row = 0; row < PQntuples(res); row++) {
                        StoreJob job;
                        pgstore_job_at(res, row, &job);
                        if (job.state >= 2)
                                (void) idset_remove(&c->watched, job.id);
                        else if (idset_add(&c->watched, job.id) < 0)
                                log_error("cluster: out of memory: the finish of job %" PRIu64
                                          " is seen late", job.id); /* reconcile reads it */
                }
                pthread_mutex_unlock(&c->lock);
        }
        ok = res != NULL;
        post(c, ITEM_ROWS, res, NULL, 0, seq); /* the loop's from now on */
        return ok;
}

/* Cancels what the loop asked: pending rows at once (any node's), running ones by their
 * owner, asked through cancel_requested and a notification. */
static bool cancel(Cluster *c) {
        bool oom;
        _cleanup_free_ char *lit = take_ids(c, &c->cancels, NULL, &oom);
        char at[24];
        const char *values[2];
        PGresult *done = NULL, *asked = NULL;
        IdList d = {}, a = {};
        bool ok;

        if (!lit)
                return !oom;
        snprintf(at, sizeof(at), "%" PRId64, wall_ms());
        values[0] = lit;
        values[1] = at;
        ok = exec_ok(c, "BEGIN");
        if (ok)
                done = query(c, "UPDATE futured_jobs SET state = 4, finished_at = $2::bigint, "
                                "args = NULL WHERE id = ANY($1::bigint[]) AND state = 0 "
                                "RETURNING id", 2, values, -1, 0);
        if (done)
                asked = query(c, "UPDATE futured_jobs SET cancel_requested = true "
                                 "WHERE id = ANY($1::bigint[]) AND state = 1 RETURNING id", 1,
                              values, -1, 0);
        ok = done && asked;
        for (int i = 0; ok && i < PQntuples(done); i++)
                ok = idlist_add(&d, id_at(done, i, 0)) >= 0;
        for (int i = 0; ok && i < PQntuples(asked); i++)
                ok = idlist_add(&a, id_at(asked, i, 0)) >= 0;
        PQclear(done);
        PQclear(asked);
        ok = ok && notify_ids(c, 'd', d.ids, d.n) && notify_ids(c, 'c', a.ids, a.n) &&
             exec_ok(c, "COMMIT");
        free(d.ids);
        free(a.ids);
        if (!ok)
                (void) exec_ok(c, "ROLLBACK");
        return ok;
}

/* Connects, listens and registers the lease. Returns 0 or -ENOTCONN. */
static int connect_node(Cluster *c) {
        PQfinish(c->conn);
        c->conn = pgstore_connect(c->uri);
        /* Its commits (claims, leases, take-backs) need not wait for the WAL's flush: one lost
         * in a crash of the server leaves a row as it was, and fencing keeps a node from
         * writing a job whose claim was lost. */
        if (PQstatus(c->conn) != CONNECTION_OK ||
            !exec_ok(c, "SET synchronous_commit = off") || !exec_ok(c, "LISTEN futured") ||
            !renew(c)) {
                PQfinish(c->conn);
                c->conn = NULL;
                return -ENOTCONN;
        }
        hint_all(c, HINT_ALL);
        c->connected_ns = now_ns();
        return 0;
}

static void on_note(Cluster *c, const PGnotify *n) {
        const char *payload = n->extra;
        bool own;

        pthread_mutex_lock(&c->lock);
        c->stats.notifications++;
        own = n->be_pid == c->store_pid;
        pthread_mutex_unlock(&c->lock);
        if ((payload[0] == 'p' || payload[0] == 'g') && payload[1] == ':')
                hint_kinds(c, payload + 2, payload[0] == 'p' ? HINT_OPEN : HINT_GROUPS);
        else if (payload[0] == 'p' || payload[0] == 'g') /* any kind (a take-back's) */
                hint_all(c, payload[0] == 'p' ? HINT_ALL : HINT_GROUPS);
        else if (own && payload[0] == 'd')
                ; /* this node's own finishes: the loop has them */
        else if (payload[0] != 'd' || payload[1] != ':')
                post(c, ITEM_NOTE, NULL, payload, 0, 0);
        else
                for (const char *p = payload + 2; *p; p = *p == ',' ? p + 1 : p) {
                        char *end;
                        uint64_t id = strtoull(p, &end, 10);
                        if (end == p)
                                break;
                        if (idlist_add(&c->done, id) < 0)
                                log_error("cluster: out of memory: the finish of job %" PRIu64
                                          " is seen late", id); /* reconcile reads it */
                        p = end;
                }
        if (payload[0] == 'd' && c->groups_held)
                hint_all(c, HINT_GROUPS);
}

/* Reads the final rows of the jobs other nodes notified finished since the last call, in one
 * statement: those watched, or all while the node's events have subscribers (every node
 * publishes every finish); hands them to the loop with all the IDs. A failure hands the IDs
 * alone (the loop reads what it waits for again once the connection is back). */
static bool read_done(Cluster *c) {
        _cleanup_free_ char *lit = NULL, *read = NULL;
        const char *values[1];
        PGresult *res = NULL;
        size_t n = 0;

        if (c->done.n == 0)
                return true;
        lit = ids_literal(c->done.ids, c->done.n);
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < c->done.n; i++)
                if (idset_remove(&c->watched, c->done.ids[i]) || c->subscribed)
                        c->done.ids[n++] = c->done.ids[i];
        pthread_mutex_unlock(&c->lock);
        c->done.n = 0;
        read = n ? ids_literal(c->done.ids, n) : NULL;
        if (!lit || (n && !read)) {
                log_error("cluster: out of memory: finishes of other nodes are seen late");
                return true;
        }
        values[0] = read;
        if (read)
                res = query(c, "SELECT " PGSTORE_JOB_COLUMNS " FROM futured_jobs "
                               "WHERE id = ANY($1::bigint[]) AND state >= 2", 1, values, -1, 0);
        post(c, ITEM_DONE, res, lit, 0, 0); /* `res` is the loop's from now on */
        return !read || res != NULL;
}

/* After a reconnection: reads the rows finished since the connection was last seen working
 * (less a margin) that another node finished, a batch at a time, and hands them to the loop as
 * a notification's would be (their finish notifications may have been lost): the loop finishes
 * its copies from them and publishes the events of the others. At least once: an event
 * published before the outage may go out again. A failure leaves the rest for the next
 * connection. */
static bool catch_up(Cluster *c) {
        while (c->catch_up_ms) {
                char since[24], after[24];
                const char *values[3] = { since, after, c->owner };
                PGresult *res;
                int n;
                snprintf(since, sizeof(since), "%" PRId64, c->catch_up_ms);
                snprintf(after, sizeof(after), "%" PRIu64, c->catch_up_after);
                res = query(c, "SELECT " PGSTORE_JOB_COLUMNS " FROM futured_jobs "
                               "WHERE finished_at >= $1::bigint AND id > $2::bigint AND "
                               "state >= 2 AND owner IS DISTINCT FROM $3 ORDER BY id LIMIT "
                               STRINGIFY(CATCH_UP_BATCH), 3, values, -1, 0);
                if (!res)
                        return false;
                n = PQntuples(res);
                if (n > 0)
                        c->catch_up_after = id_at(res, n - 1, 0);
                if (n < CATCH_UP_BATCH)
                        c->catch_up_ms = 0;
                if (n > 0)
                        post(c, ITEM_DONE, res, "{}", 0, 0);
                else
                        PQclear(res);
        }
        return true;
}

static bool stopping(Cluster *c) {
        bool r;

        pthread_mutex_lock(&c->lock);
        r = c->stopping;
        pthread_mutex_unlock(&c->lock);
        return r;
}

static void *thread_main(void *userdata) {
        Cluster *c = userdata;
        uint64_t lease_due = 0, poll_due = 0, period = (uint64_t) c->lease_ms * 1000000u / 3;
        bool logged = false;

        for (;;) {
                uint64_t now = now_ns(), v;
                struct pollfd pfd[2] = { { .fd = c->wake_fd, .events = POLLIN },
                                         { .fd = -1, .events = POLLIN } };
                int timeout;
                bool ok = true, calm;

                if (!c->conn) {
                        if (c->backoff_ms) {
                                (void) poll(pfd, 1, (int) c->backoff_ms);
                                (void) !read(c->wake_fd, &v, sizeof(v));
                        }
                        if (stopping(c))
                                break;
                        if (connect_node(c) < 0) {
                                fail_lookups(c);
                                c->backoff_ms = c->backoff_ms
                                                        ? MIN(c->backoff_ms * 2, MAX_BACKOFF_MS)
                                                        : 100u;
                                if (!logged)
                                        log_error("cluster: cannot reach the database; trying "
                                                  "again every 2 s at most");
                                logged = true;
                                continue;
                        }
                        if (logged)
                                log_notice("cluster: the database is back");
                        logged = false;
                        if (c->ok_ms) { /* a reconnection: what was missed meanwhile */
                                int64_t since = c->ok_ms - CATCH_UP_MARGIN_MS;
                                /* One cut short starts again, from the older time: rows
                                 * of this gap may have any ID. */
                                c->catch_up_ms = c->catch_up_ms ? MIN(c->catch_up_ms, since)
                                                                : since;
                                c->catch_up_after = 0;
                        }
                        c->backoff_ms = 0;
                        pthread_mutex_lock(&c->lock);
                        c->stats.connected = true;
                        pthread_mutex_unlock(&c->lock);
                        post(c, ITEM_RECONCILE, NULL, NULL, 0, 0);
                }
                /* Notifications read during the last queries wait in libpq's queue: the
                 * socket would not wake the poll for them. */
                for (PGnotify *n; (n = PQnotifies(c->conn)); PQfreemem(n))
                        on_note(c, n);
                pfd[1].fd = PQsocket(c->conn);
                timeout = (int) ((MIN(lease_due, poll_due) > now
                                  ? MIN(lease_due, poll_due) - now : 0) / 1000000u);
                if (c->done.n || claimable(c))
                        timeout = 0;
                (void) poll(pfd, 2, timeout);
                (void) !read(c->wake_fd, &v, sizeof(v));
                if (stopping(c))
                        break;
                ok = PQconsumeInput(c->conn);
                for (PGnotify *n; ok && (n = PQnotifies(c->conn)); PQfreemem(n))
                        on_note(c, n);
                now = now_ns();
                if (ok && now >= lease_due) {
                        /* After a reconnection (a database outage: every lease may have
                         * expired meanwhile) the others get a lease and their reconnection's
                         * backoff to renew theirs before this node takes anything back. */
                        bool settled = now >= c->connected_ns + (uint64_t) c->lease_ms * 1000000u +
                                                      (uint64_t) MAX_BACKOFF_MS * 1000000u;
                        ok = renew(c) && (!settled || take_back(c)) && expire_rows(c);
                        lease_due = now + period;
                }
                if (ok && now >= poll_due) {
                        hint_all(c, HINT_ALL);
                        poll_due = now + MIN(period, (uint64_t) POLL_MS * 1000000u);
                        if (++c->polls % RECONCILE_POLLS == 0)
                                post(c, ITEM_RECONCILE, NULL, NULL, 0, 0);
                }
                /* The others may still be reconnecting (backoff) for this long after an
                 * outage: releases announced meanwhile go again once it has passed. */
                calm = now >= c->connected_ns + (uint64_t) MAX_BACKOFF_MS * 2000000u;
                ok = ok && read_done(c) && look_up(c) && cancel(c) && catch_up(c) &&
                     announce_releases(c, !calm);
                if (ok && calm && c->reannounce.n) {
                        ok = notify_ids(c, 'r', c->reannounce.ids, c->reannounce.n);
                        c->reannounce.n = 0;
                }
                if (ok && claimable(c))
                        ok = claim(c);
                if (ok)
                        c->ok_ms = wall_ms();
                if (!ok || PQstatus(c->conn) != CONNECTION_OK) {
                        PQfinish(c->conn);
                        c->conn = NULL;
                        pthread_mutex_lock(&c->lock);
                        c->stats.connected = false;
                        pthread_mutex_unlock(&c->lock);
                }
        }
        return NULL;
}

/* The loop's side of the eventfd: hands the thread's items to the hooks. */
static void on_items(LoopFile *lf, uint32_t events) {
        Cluster *c = container_of(lf, Cluster, done_file);
        Item *it, *next;
        uint64_t v;

        (void) !read(lf->fd, &v, sizeof(v));
        pthread_mutex_lock(&c->lock);
        it = c->inbox;
        c->inbox = c->inbox_tail = NULL;
        pthread_mutex_unlock(&c->lock);
        /* They leave `transit` when the room the loop tells next counts them (cluster_set_room):
         * until then the room the thread has is from before they were queued here. */
        for (Item *i = it; i; i = i->next)
                if (i->type == ITEM_CLAIMED)
                        c->taken[i->lane] += (uint32_t) PQntuples(i->res);
        for (; it; it = next) {
                next = it->next;
                switch (it->type) {
                case ITEM_CLAIMED:
                case ITEM_ROWS:
                        for (int row = 0; it->res && row < PQntuples(it->res); row++) {
                                StoreJob job;
                                pgstore_job_at(it->res, row, &job);
                                if (it->type == ITEM_CLAIMED)
                                        c->hooks.claimed(c->userdata, &job);
                                else
                                        c->hooks.row(c->userdata, &job);
                        }
                        if (it->type == ITEM_ROWS)
                                c->hooks.looked_up(c->userdata, it->seq, !it->res);
                        break;
                case ITEM_NOTE:
                case ITEM_DONE: {
                        bool fin = it->type == ITEM_DONE;
                        for (int row = 0; it->res && row < PQntuples(it->res); row++) {
                                StoreJob job;
                                pgstore_job_at(it->res, row, &job);
                                c->hooks.finished_row(c->userdata, &job);
                        }
                        if (!fin && ((it->text[0] != 'c' && it->text[0] != 'r' &&
                                      it->text[0] != 's') ||
                                     it->text[1] != ':'))
                                break;
                        for (char *p = it->text + (fin ? 1 : 2), *end; *p;
                             p = end + (*end == ',')) {
                                uint64_t id = strtoull(p, &end, 10);
                                if (end == p)
                                        break;
                                if (fin)
                                        c->hooks.finished(c->userdata, id);
                                else if (it->text[0] == 'r')
                                        c->hooks.released(c->userdata, id);
                                else if (it->text[0] == 's')
                                        c->hooks.started(c->userdata, id);
                                else
                                        c->hooks.cancel(c->userdata, id);
                        }
                        break;
                }
                case ITEM_LIST: {
                        ListAsk *l = calloc(1, sizeof(*l));
                        if (!l)
                                break; /* answered store_unavailable */
                        *l = (ListAsk){ .next = c->answers, .seq = it->seq, .res = it->res };
                        c->answers = l;
                        it->res = NULL;
                        break;
                }
                case ITEM_RECONCILE:
                        c->hooks.reconcile(c->userdata);
                        break;
                }
                PQclear(it->res);
                free(it);
        }
}

static void wake(Cluster *c) {
        uint64_t one = 1;

        (void) !write(c->wake_fd, &one, sizeof(one));
}

void cluster_set_room(Cluster *c, const uint32_t room[CLUSTER_LANES]) {
        static const uint32_t none[CLUSTER_LANES];
        bool grew = false;

        if (memcmp(room, c->room_seen, sizeof(c->room_seen)) == 0 &&
            memcmp(c->taken, none, sizeof(none)) == 0)
                return;
        for (unsigned i = 0; i < CLUSTER_LANES; i++)
                grew |= room[i] > c->room_seen[i];
        memcpy(c->room_seen, room, sizeof(c->room_seen));
        pthread_mutex_lock(&c->lock);
        memcpy(c->room, room, sizeof(c->room));
        for (unsigned i = 0; i < CLUSTER_LANES; i++)
                c->transit[i] -= c->taken[i];
        pthread_mutex_unlock(&c->lock);
        memset(c->taken, 0, sizeof(c->taken));
        if (grew)
                wake(c);
}

void cluster_set_listeners(Cluster *c, int store_pid, bool subscribed) {
        if (store_pid == c->store_pid_seen && subscribed == c->subscribed_seen)
                return;
        c->store_pid_seen = store_pid;
        c->subscribed_seen = subscribed;
        pthread_mutex_lock(&c->lock);
        c->store_pid = store_pid;
        c->subscribed = subscribed;
        pthread_mutex_unlock(&c->lock);
}

void cluster_watch(Cluster *c, uint64_t id) {
        int r;

        pthread_mutex_lock(&c->lock);
        r = idset_add(&c->watched, id);
        pthread_mutex_unlock(&c->lock);
        if (r < 0)
                log_error("cluster: out of memory: the finish of job %" PRIu64 " is seen late",
                          id); /* a lookup or the reconciliation reads it */
}

void cluster_unwatch(Cluster *c, uint64_t id) {
        pthread_mutex_lock(&c->lock);
        (void) idset_remove(&c->watched, id);
        pthread_mutex_unlock(&c->lock);
}

uint64_t cluster_lookup(Cluster *c, const uint64_t *ids, size_t n) {
        uint64_t seq = 0;
        int r = 0;

        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < n && r >= 0; i++)
                r = idlist_add(&c->lookups, ids[i]);
        if (r >= 0)
                seq = ++c->lookup_seq;
        pthread_mutex_unlock(&c->lock);
        if (seq)
                wake(c);
        return seq;
}

uint64_t cluster_list(Cluster *c, int state, uint64_t after, uint32_t limit) {
        ListAsk *l = calloc(1, sizeof(*l));
        uint64_t seq;

        if (!l)
                return 0;
        *l = (ListAsk){ .state = state, .after = after, .limit = limit };
        pthread_mutex_lock(&c->lock);
        seq = l->seq = ++c->lookup_seq;
        QUEUE_APPEND(c->lists, c->lists_tail, l);
        pthread_mutex_unlock(&c->lock);
        wake(c);
        return seq;
}

/* The answer of list `seq`, or NULL. */
static ListAsk *answer(const Cluster *c, uint64_t seq) {
        for (ListAsk *l = c->answers; l; l = l->next)
                if (l->seq == seq && l->res)
                        return l;
        return NULL;
}

int cluster_listed(const Cluster *c, uint64_t seq, size_t *ret_n) {
        ListAsk *l = answer(c, seq);

        if (!l)
                return -ENOENT;
        *ret_n = (size_t) PQntuples(l->res);
        return 0;
}

void cluster_listed_row(const Cluster *c, uint64_t seq, size_t i, StoreJob *ret) {
        pgstore_job_at(answer(c, seq)->res, (int) i, ret);
}

void cluster_list_drop(Cluster *c, uint64_t seq) {
        for (ListAsk **p = &c->answers, *l; (l = *p); )
                if (l->seq == seq) {
                        *p = l->next;
                        PQclear(l->res);
                        free(l);
                } else
                        p = &l->next;
}

/* Queues `id` in `l` (under the lock) for the thread. Returns 0 or -ENOMEM. */
static int ask(Cluster *c, IdList *l, uint64_t id) {
        int r;

        pthread_mutex_lock(&c->lock);
        r = idlist_add(l, id);
        pthread_mutex_unlock(&c->lock);
        if (r >= 0)
                wake(c);
        return r;
}

int cluster_cancel(Cluster *c, uint64_t id) {
        return ask(c, &c->cancels, id);
}

int cluster_released(Cluster *c, uint64_t id) {
        return ask(c, &c->releases, id);
}

void cluster_stats(const Cluster *c, ClusterStats *ret) {
        pthread_mutex_lock((pthread_mutex_t *) &c->lock);
        *ret = c->stats;
        pthread_mutex_unlock((pthread_mutex_t *) &c->lock);
}

/* The failure map of a job taken back from a dead node without retries left. */
static int pack_interrupted(Cluster *c) {
        JobFailure failure = { .code = PROTO_F_INTERRUPTED };
        msgpack_packer pk;
        ProtoBuf buf;

        snprintf(failure.message, sizeof(failure.message),
                 "the node that ran the job stopped answering (its lease expired), and its "
                 "retries were used up");
        proto_buf_init(&buf);
        proto_buf_packer(&buf, &pk);
        frame_pack_failure(&pk, &failure);
        c->interrupted = buf.failed ? NULL : proto_buf_dup(&buf);
        c->interrupted_len = buf.size;
        proto_buf_deinit(&buf);
        return c->interrupted ? 0 : -ENOMEM;
}

int cluster_new(Cluster **ret, Loop *loop, const ClusterConfig *cfg, const ClusterHooks *hooks,
                void *userdata) {
        Cluster *c = calloc(1, sizeof(*c));
        int r = -ENOMEM, fd;

        if (!c)
                return -ENOMEM;
        c->loop = loop;
        c->hooks = *hooks;
        c->userdata = userdata;
        c->lease_ms = cfg->lease_ms;
        c->retain = cfg->retain;
        c->wake_fd = -1;
        loop_file_init(&c->done_file);
        pthread_mutex_init(&c->lock, NULL);
        c->uri = strdup(cfg->uri);
        c->owner = strdup(cfg->owner);
        for (unsigned i = 0; i < CLUSTER_LANES; i++)
                if (!(c->kinds[i] = strdup(cfg->kinds[i])))
                        goto fail;
        if (!c->uri || !c->owner || pack_interrupted(c) < 0)
                goto fail;
        if (connect_node(c) < 0) {
                log_error("cluster: cannot register this node in the database");
                r = -ECONNREFUSED;
                goto fail;
        }
        c->stats.connected = true;
        c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (c->wake_fd < 0 || fd < 0) {
                r = -errno;
                if (fd >= 0)
                        close(fd);
                goto fail;
        }
        if ((r = loop_add(loop, &c->done_file, fd, EPOLLIN, on_items)) < 0) {
                close(fd);
                goto fail;
        }
        r = thread_start(&c->thread, thread_main, c);
        if (r < 0)
                goto fail;
        c->thread_started = true;
        log_info("cluster: node %s, lease %.1f s", c->owner, c->lease_ms / 1000.0);
        *ret = c;
        return 0;
fail:
        cluster_free(c);
        return r;
}

Cluster *cluster_free(Cluster *c) {
        if (!c)
                return NULL;
        if (c->thread_started) {
                pthread_mutex_lock(&c->lock);
                c->stopping = true;
                pthread_mutex_unlock(&c->lock);
                wake(c);
                pthread_join(c->thread, NULL);
        }
        if (c->conn && PQstatus(c->conn) == CONNECTION_OK) {
                const char *values[1] = { c->owner };
                /* What this node leaves unfinished goes to the others at once. */
                PQclear(query(c, "DELETE FROM futured_nodes WHERE owner = $1", 1, values, -1,
                              0));
        }
        PQfinish(c->conn);
        if (c->done_file.fd >= 0) {
                int fd = c->done_file.fd;
                loop_remove(c->loop, &c->done_file);
                close(fd);
        }
        if (c->wake_fd >= 0)
                close(c->wake_fd);
        while (c->inbox) {
                Item *it = c->inbox;
                c->inbox = it->next;
                PQclear(it->res);
                free(it);
        }
        free(c->lookups.ids);
        free(c->cancels.ids);
        free(c->done.ids);
        free(c->releases.ids);
        idset_deinit(&c->watched);
        free(c->reannounce.ids);
        free_lists(c->lists);
        free_lists(c->answers);
        for (unsigned i = 0; i < CLUSTER_LANES; i++)
                free(c->kinds[i]);
        free(c->interrupted);
        free(c->uri);
        free(c->owner);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}
