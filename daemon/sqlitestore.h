/* sqlitestore: the SQLite backend of the store: one database file in WAL mode, one table of
 * jobs and one of settings (the next ID), the schema version in PRAGMA user_version
 * (docs/DURABILITY.md says how a newer futured migrates an older file; a file from a newer
 * futured is refused). The file is locked (flock on the file itself) for as long as it is open,
 * so a second futured on the same state directory refuses to start instead of sharing it.
 *
 * Threads: open and recover run on the main thread before the loop starts; commit runs on the
 * store thread only; size may be called from any thread (it only stat()s the files); close runs
 * once the store thread has stopped. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "storebatch.h"

typedef struct SqliteStore SqliteStore;

/* The schema this futured writes. */
#define SQLITESTORE_VERSION 2

/* Opens (or creates) the database at `path` (borrowed), with synchronous=FULL when `full_sync`,
 * else NORMAL. Puts the next ID to issue. Logs why when it fails, naming the file: -EBUSY (locked
 * by another futured), -EBADMSG (not a futured database, or damaged), -EPROTO (written by a newer
 * futured), -EACCES (it cannot be opened for reading and writing), or another -errno. The file
 * is never modified when opening fails. Returns 0 or -errno. */
int sqlitestore_open(SqliteStore **ret, const char *path, bool full_sync, uint64_t *ret_next_id);

SqliteStore *sqlitestore_close(SqliteStore *db);

/* Calls `fn` for every job in ID order. Returns 0, what `fn` returned when negative, or -EBADMSG
 * (the file is damaged: logged). */
int sqlitestore_recover(SqliteStore *db, StoreRecoverFn fn, void *userdata);

/* Commits the batch in one transaction. Returns 0, -ENOSPC (the disk is full), or -EIO (logged).
 * Nothing of a failed batch is kept. */
int sqlitestore_commit(SqliteStore *db, const StoreBatch *b);

/* The size of the database and its WAL in bytes. */
uint64_t sqlitestore_size(const SqliteStore *db);
