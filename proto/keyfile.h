/* keyfile: CurveZMQ key files, read by futured, futurectl and libfutured, written by
 * `futurectl keygen`. A key is the 40-character Z85 text of a 32-byte Curve25519 key, which
 * ZeroMQ's ZMQ_CURVE_* options take as it is. The format (docs/SECURITY.md):
 *
 *     # comment
 *     public  <40 Z85 characters>
 *     secret  <40 Z85 characters>
 *
 * PREFIX.key holds both lines and must be readable by its owner only (mode 0600 or stricter);
 * PREFIX.pub holds the public line alone. An allow list is a file of public lines (or bare
 * keys), so that `cat client.pub >> allow` adds a client; anything after the key is a label.
 * Pure functions of their arguments and the files; any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define KEYFILE_KEY_LEN 40

/* Whether `s` (`len` bytes) is a Z85 key: 40 characters of the Z85 alphabet. */
bool keyfile_key_valid(const char *s, size_t len);

/* Parses one line of a key file or an allow list (NUL-terminated, without its newline).
 * Returns 0 with `*ret_name` "public" or "secret" (a bare key is "public") and the key copied
 * into `ret_key` (41 bytes), 1 for a blank or comment line, -EBADMSG for anything else. */
int keyfile_parse_line(const char *line, const char **ret_name, char ret_key[KEYFILE_KEY_LEN + 1]);

/* Called for each key line of a file, in order: `name` "public" or "secret", `key` its 40
 * characters (both borrowed for the call). Returns 0, or a negative errno that stops the read. */
typedef int (*KeyfileLineFn)(void *userdata, const char *name, const char *key);

/* Reads `path` line by line (keyfile_parse_line), calling `fn` for each key. Returns 0, -errno
 * from open/read, -EBADMSG for a malformed line, or what `fn` returned; `*ret_line` is the
 * number of the last line read and `*ret_mode` the file's mode (either may be NULL). */
int keyfile_foreach(const char *path, KeyfileLineFn fn, void *userdata, unsigned *ret_line,
                    mode_t *ret_mode);

/* Reads the key file `path`. `ret_public` and `ret_secret` (41 bytes each, either NULL when
 * not wanted) receive the keys. A file with a secret line must not be readable or writable by
 * group or others. Returns 0, -errno from open/read, -EPERM for such a file, -EBADMSG for a
 * malformed line, or -ENOKEY when a wanted key is missing. */
int keyfile_read(const char *path, char *ret_public, char *ret_secret);

/* Takes a public key given by a user: the 40 Z85 characters themselves, or a key file holding a
 * public line. Returns 0 with the key in `ret_key` (41 bytes) or keyfile_read()'s errors. */
int keyfile_public(const char *arg, char ret_key[KEYFILE_KEY_LEN + 1]);

/* Writes PREFIX.key (mode 0600, both keys) and PREFIX.pub (mode 0644, the public key); neither
 * may exist yet. Returns 0 or -errno (-EEXIST: one of them exists; nothing is written then). */
int keyfile_write(const char *prefix, const char *public_key, const char *secret_key);
