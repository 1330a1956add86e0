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
 * For now one futured uses a database at a time (a session advisory lock, as the SQLite file is
 * flock'ed): several nodes sharing one database is the cluster mode that docs/CLUSTER.md plans. */
#pragma once

#include <stdint.h>

#include "storebatch.h"

typedef struct PgStore PgStore;

/* The schema this futured writes. */
#define PGSTORE_VERSION 1

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
int pgstore_open(PgStore **ret, const char *uri, uint64_t *ret_next_id);

/* Closes both connections (the store thread has stopped). Accepts NULL; returns NULL. */
PgStore *pgstore_close(PgStore *db);

/* Calls `fn` for every job in ID order, one row at a time. Returns 0, what `fn` returned when
 * negative, or -EIO (logged). Main thread, before the store thread starts. */
int pgstore_recover(PgStore *db, StoreRecoverFn fn, void *userdata);

/* Commits the batch in one transaction. Returns 0, -ENOTCONN (the server cannot be reached: it
 * reconnects at the next commit, waiting longer each time up to 2 s), -ENOSPC (the server's
 * disk is full) or -EIO (logged). Nothing of a failed batch is kept, but for a connection lost
 * while COMMIT was under way, whose outcome nobody can know. Store thread. */
int pgstore_commit(PgStore *db, const StoreBatch *b);

/* Issues `n` (at most PGSTORE_ID_BLOCK) consecutive IDs: the first, or 0 when no new block could
 * be had from the database (it cannot be reached: one reconnection per second at most, given up
 * after 200 ms, so that the loop never waits longer). Loop thread. */
uint64_t pgstore_issue_ids(PgStore *db, uint32_t n);
