/* conffile: the configuration file, /etc/futured/futured.conf (libinih). One [futured] section
 * whose keys are futured's long option names (`listen` may repeat), each value parsed exactly as
 * the option's argument by the caller's function, so the file and the command line can never
 * disagree about what a value means. The command line wins: main() applies the file first.
 *
 * Also the checks of a whole configuration that main() runs at start and at reload, and
 * --check-config's listing. Main thread only. */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "daemon.h"

/* Applies option `key` (an option's `val`) with `value` to `cfg`. Returns 0; -EINVAL with
 * *ret_why saying what the value should be; or -ENOMEM. */
typedef int (*ConffileSetFn)(int key, const char *value, DaemonConfig *cfg, const char **ret_why);

/* Reads `path` into `cfg` through `set`, looking each key up in `options` (borrowed; options
 * without an argument, and `config`, are not keys). A missing file is fine unless `must_exist`.
 * Returns 0, or -EINVAL / -ENOENT / -ENOMEM having printed `PATH:LINE: KEY: why`. */
int conffile_load(const char *path, bool must_exist, const struct option *options, ConffileSetFn set,
                DaemonConfig *cfg);

/* Prints every effective setting as `key = value`, in the file's syntax. */
void conffile_dump(const DaemonConfig *cfg, FILE *f);

/* At reload: logs a warning naming each setting that changed but takes a restart. */
void conffile_warn_restart_only(const DaemonConfig *old, const DaemonConfig *cfg);

/* Checks what must hold before futured runs with `cfg`: the download directory is writable.
 * Returns 0 or -EINVAL, having logged why. */
int conffile_check_paths(const DaemonConfig *cfg);
