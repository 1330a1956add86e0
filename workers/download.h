/* download: the `download` job kind (a transfer kind: it runs in the transfer pool) and the
 * process-wide libcurl state it shares between transfers: a share handle for TLS sessions (the
 * transfer pool's multi handle shares connections and DNS answers) and the daemon's download
 * directory.
 *
 * download_global_init() runs once in the main thread before any other thread starts (libcurl's
 * rule for curl_global_init); the kind's start() and finish() run on the transfer thread, one easy
 * handle per transfer; download_check() runs on the loop thread. */
#pragma once

#include "kind.h"
#include "netpolicy.h"

/* Largest body returned inline in a result. */
#define DOWNLOAD_INLINE_MAX (8u << 20)

extern const JobKind download_kind;

/* Initialises libcurl and the share handle. `dir` (borrowed; may be NULL: file downloads are then
 * refused) is the download directory, opened here once. Returns 0 or -errno. */
int download_global_init(const char *dir);

/* Points file downloads at `dir` (borrowed) from now on (reload; loop thread). The directory's
 * fd number stays the same (dup3), so a check or a transfer that uses it meanwhile sees the old
 * directory or the new one, never a closed fd. Returns 0, or -errno when `dir` cannot be opened,
 * or -EBUSY for NULL once a directory was set (unsetting takes a restart). */
int download_set_dir(const char *dir);

/* Makes `rules` (borrowed; copied) the network policy of downloads that start from now on
 * (netpolicy.h; without a call, the built-in rules alone). Loop thread, at start and at reload;
 * transfers already running keep the policy they started with. Returns 0 or -ENOMEM. */
int download_set_policy(const NetPolicy *rules);

/* Sets the body bytes that the running downloads of one principal may hold at once (0: no
 * limit; docs/SECURITY.md). Any thread; it applies at once, to the next bytes of every transfer.
 * A transfer whose next bytes would pass it fails with `download_quota`. */
void download_set_quota(uint64_t bytes);

/* Releases what download_global_init() made; no transfer may be running. */
void download_global_cleanup(void);
