/* pgstore: the PostgreSQL backend of the store (`--store postgresql://...`): the same jobs as
 * the SQLite file, in the tables futured_jobs and futured_version of a database that
 * futured creates and migrates itself (docs/CLUSTER.md gives the SQL and the grants). IDs come
 * from the database sequence futured_ids, which issues blocks of PGSTORE_ID_BLOCK IDs: a node
 * takes one block per round trip and issues IDs from it locally, so IDs are unique across every
 * node of the database and a batch's IDs are consecutive.
 *
 * It holds two connections. The commit connection belongs to the store thread (commits, in
 * pipeline mode: one round trip per 1024 changes) and, before the thread starts, to open and
 * recover on the main thread. The ID connection belongs to the loop thread (pgstore_issue_ids).
 *
 * Without cluster mode one futured uses a database at a time (a session advisory lock, as the
 * SQLite file is flock'ed). In cluster mode (`--cluster`) several nodes share it: each adds its
 * jobs reserved for itself or open to any node, fences every change of a job it runs by owner
 * and attempt, and notifies the other nodes of its commits (docs/CLUSTER.md; cluster.c claims,
 * listens and keeps the lease). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "storebatch.h"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

typedef struct PgStore PgStore;

/* The schema this futured writes. */
#define PGSTORE_VERSION 3

/* IDs per block of the sequence: at least the largest submit (PROTO_MAX_BATCH), so that a
 * batch's IDs always come from one block. */
#define PGSTORE_ID_BLOCK 16384

/* Connects to the database at `uri` (borrowed; a libpq URI or conninfo string), creates or
 * checks the schema, takes the database for this futured and the first block of IDs: puts the
 * first ID. Logs why when it fails: -EINVAL (the URI is malformed or carries a password),
 * -EBUSY (another futured uses the database), -EBADMSG (tables of that name that are not
 * futured's), -EPROTO (written by a newer futured), -EACCES (refused by the server: role,
 * password, grants), -ECONNREFUSED (the server cannot be reached), or another -errno. Main
 * thread. Returns 0 or -errno. */
int pgstore_open(PgStore **ret, const char *uri, bool cluster, uint64_t *ret_next_id);

/* The owner this node writes on the jobs it runs: "HOST:PID", or "HOST:PID:BOOT" in cluster
 * mode (BOOT: a random nonce of this run). */
const char *pgstore_owner(const PgStore *db);

/* The columns of a job's row, in the order pgstore_job_at() reads them (binary format);
 * a 14th, `owner`, is read when there. */
#define PGSTORE_JOB_COLUMNS "id, kind, args, grp, group_limit, priority, timeout_ms, retries, " \
                            "attempt, state, outcome, finished_at, idempotency_key"

/* Puts row `row` of `res` (PGSTORE_JOB_COLUMNS, binary format) into `job`, whose pointers
 * borrow `res`. Any thread. */
void pgstore_job_at(const PGresult *res, int row, StoreJob *job);

/* A connection to `uri` with futured's defaults (connect_timeout=5, the application's name),
 * blocking; check PQstatus(). Any thread. */
PGconn *pgstore_connect(const char *uri);

/* Closes both connections (the store thread has stopped). Accepts NULL; returns NULL. */
PgStore *pgstore_close(PgStore *db);

/* Calls `fn` for every job in ID order, one row at a time. Returns 0, what `fn` returned when
 * negative, or -EIO (logged). Main thread, before the store thread starts. */
int pgstore_recover(PgStore *db, StoreRecoverFn fn, void *userdata);

/* Commits the batch in one transaction. Returns 0, -ENOTCONN (the server cannot be reached: it
 * reconnects at the next commit, waiting longer each time up to 2 s), -ENOSPC (the server's
 * disk is full) or -EIO (logged). Nothing of a failed batch is kept, but for a connection lost
 * while COMMIT was under way, whose outcome nobody can know. In cluster mode the starts and
 * finishes the database refused (fenced out: the job is no longer this node's) are put in
 * b->fenced. Store thread. */
int pgstore_commit(PgStore *db, StoreBatch *b);

/* The process ID of the server process of the commit connection (PGnotify.be_pid of the
 * notifications its commits send), changed at each reconnection; 0 before the first. Any
 * thread. */
int pgstore_commit_pid(const PgStore *db);

/* Issues `n` (at most PGSTORE_ID_BLOCK) consecutive IDs: the first, or 0 when no new block could
 * be had from the database (it cannot be reached: one reconnection per second at most, given up
 * after 200 ms, so that the loop never waits longer). Loop thread. */
uint64_t pgstore_issue_ids(PgStore *db, uint32_t n);
