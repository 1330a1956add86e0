/* cluster: what makes a futured a node of a cluster (`--cluster`, docs/CLUSTER.md): several
 * nodes share one PostgreSQL database through the postgresql store. The store commits each
 * node's own changes (fenced by owner and attempt: pgstore.c); this module does the rest, on a
 * thread of its own with a connection of its own, so that the loop never waits on the
 * database:
 *
 * - it LISTENs on channel `futured`, where every commit that finishes jobs notifies their IDs
 *   and every commit that adds open jobs says so;
 * - it claims open pending jobs for the lanes the loop has room in (one UPDATE ... FOR UPDATE
 *   SKIP LOCKED per lane, by priority then ID, only the kinds the node runs), at once when a
 *   notification says there are some, and once a second at least (the safety net), and
 *   notifies the IDs it claimed (the other nodes' copies show them running);
 * - it keeps the node's lease in futured_nodes (renewed every lease/3) and takes back, in one
 *   statement, the jobs of nodes whose lease expired: run again within their retries (open to
 *   any node), else failed `interrupted`;
 * - it reads the final rows of the jobs other nodes notified finished, once per batch of
 *   notifications: those the loop watches (the jobs it waits for another node to finish), or
 *   all while the node's events have subscribers (every node publishes every finish); the
 *   node's own finishes (notified by its store's connection) are the loop's already;
 * - it reads the rows the loop asks for (lookups: IDs this node does not hold);
 * - it sets cancel_requested on the rows of jobs other nodes run, and notifies them;
 * - it notifies the IDs released on this node (the other nodes drop their copies), again after
 *   an outage;
 * - after a reconnection it reads the rows the other nodes finished meanwhile (their
 *   notifications were missed), for the loop to publish their events.
 *
 * What it learns goes to the loop through an eventfd, and the loop hands it to the hooks (the
 * executor's), on the loop thread. Every function is the loop thread's. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"
#include "storebatch.h"

typedef struct Cluster Cluster;

/* The claim lanes (the scheduler's: thread, process, transfer, inline). */
#define CLUSTER_LANES 4

typedef struct ClusterHooks {
        /* A job this node claimed: its row is running with this node as owner, its attempt
         * counted (the job starts at once: claims fill free slots only). */
        void (*claimed)(void *userdata, const StoreJob *job);
        /* A row a lookup read. */
        void (*row)(void *userdata, const StoreJob *job);
        /* Every lookup up to `seq` (cluster_lookup's) is answered; `failed`: the last ones
         * could not be read (the database cannot be reached). */
        void (*looked_up)(void *userdata, uint64_t seq, bool failed);
        /* The final row of a job another node's commit finished (read after its notification,
         * before `finished` of its ID): a watched one's, or any while there are subscribers. */
        void (*finished_row)(void *userdata, const StoreJob *job);
        /* Another node's commit finished the job `id` (its row was read or not). */
        void (*finished)(void *userdata, uint64_t id);
        /* A node released the job `id` (its row is deleted). */
        void (*released)(void *userdata, uint64_t id);
        /* A node claimed the job `id` (it runs there now). */
        void (*started)(void *userdata, uint64_t id);
        /* A node asked that the job `id` be cancelled. */
        void (*cancel)(void *userdata, uint64_t id);
        /* The connection was lost and is back, or a while passed: notifications may have been
         * missed, the loop checks what it waits for. */
        void (*reconcile)(void *userdata);
} ClusterHooks;

typedef struct ClusterConfig {
        const char *uri;            /* borrowed for cluster_new() */
        const char *owner;          /* this node's, as the store writes it; borrowed */
        unsigned lease_ms;
        double retain;              /* seconds: finished rows older than this (and a lease)
                                     * are deleted by whichever node gets to them */
        const char *kinds[CLUSTER_LANES]; /* per lane, a PostgreSQL text array literal of the
                                           * kinds this node claims ("{}": none); borrowed */
} ClusterConfig;

typedef struct ClusterStats {
        uint64_t claimed;           /* jobs reserved by claims */
        uint64_t taken_back;        /* jobs of dead nodes this node took back */
        uint64_t expired;           /* expired rows of nodes gone that this node deleted */
        uint64_t notifications;     /* received */
        uint64_t lookups;           /* IDs read for the loop */
        uint64_t lease_lost;        /* times this node found its lease gone */
        bool connected;
} ClusterStats;

/* Connects, registers the node's lease and starts the thread. Logs why when it fails. Returns
 * 0 or -errno. */
int cluster_new(Cluster **ret, Loop *loop, const ClusterConfig *cfg, const ClusterHooks *hooks,
                void *userdata);

/* Stops the thread and closes the connection; the lease is deleted, so that the others take
 * back at once what the node did not finish. Accepts NULL; returns NULL. */
Cluster *cluster_free(Cluster *c);

/* The room of each lane now (jobs the node would start): claims fill it. Cheap; once per loop
 * turn, after the turn's claimed jobs are queued: the room counts them, and they stop counting
 * as claims on their way (without which a claim in between would take their slots again). */
void cluster_set_room(Cluster *c, const uint32_t room[CLUSTER_LANES]);

/* What the loop knows, each turn (cheap when nothing changed): the server process of its
 * store's commits (notifications from it are this node's own finishes: not read), and whether
 * its events have subscribers (the rows of every finish notified are read then). */
void cluster_set_listeners(Cluster *c, int store_pid, bool subscribed);

/* Watches job `id`, a job of this node that another node may finish (open to any): the final
 * row of a watched job is read when its finish is notified (it is unwatched then). The thread
 * watches the unfinished rows that lookups read itself. Missing one costs a lookup (`finished`)
 * or the reconciliation, never the completion. */
void cluster_watch(Cluster *c, uint64_t id);

/* Stops watching `id` (claimed by this node after all). */
void cluster_unwatch(Cluster *c, uint64_t id);

/* Asks for the rows of `ids`; returns the lookup's sequence number (hooks->looked_up), 0 when
 * out of memory. */
uint64_t cluster_lookup(Cluster *c, const uint64_t *ids, size_t n);

/* Asks for the rows of a `list` (docs/PROTOCOL.md): IDs above `after`, in state `state` (-1:
 * any), at most `limit`, in ID order. Returns the sequence number that looked_up() answers (as
 * a lookup's), 0 when out of memory. */
uint64_t cluster_list(Cluster *c, int state, uint64_t after, uint32_t limit);

/* The answer of list `seq` once looked_up() passed it: `*ret_n` rows, read with
 * cluster_listed_row(), borrowed until cluster_list_drop() (the loop drops it once it handled
 * the request, whether it used it or not). -ENOENT when it could not be read (the database
 * cannot be reached, or out of memory). */
int cluster_listed(const Cluster *c, uint64_t seq, size_t *ret_n);
void cluster_listed_row(const Cluster *c, uint64_t seq, size_t i, StoreJob *ret);
void cluster_list_drop(Cluster *c, uint64_t seq);

/* Asks the node that runs job `id` to cancel it. Returns 0 or -ENOMEM. */
int cluster_cancel(Cluster *c, uint64_t id);

/* Tells the other nodes that a client released the job `id` here (they drop their copies).
 * Returns 0 or -ENOMEM. */
int cluster_released(Cluster *c, uint64_t id);

void cluster_stats(const Cluster *c, ClusterStats *ret);
