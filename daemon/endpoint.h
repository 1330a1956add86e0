/* endpoint: the access rules of futured's endpoints (docs/SECURITY.md). An ipc:// socket that
 * futured makes itself gets an explicit mode and group, whatever the umask; an adopted one
 * (socket activation) keeps what its socket unit set. Every other transport (tcp://, and
 * anything but ipc:// and inproc://) reaches beyond this machine's permission checks, so it is
 * served with CurveZMQ only: the daemon's key pair, and a ZAP domain so that the ZAP handler
 * (zap.h) decides who is admitted. Main thread, while the sockets are bound. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "keyfile.h"

#define ENDPOINT_DEFAULT_MODE 0660
#define ENDPOINT_ZAP_DOMAIN "futured"

/* The daemon's CURVE key pair (Z85), or empty strings without one. */
typedef struct EndpointKeys {
        char public_key[KEYFILE_KEY_LEN + 1];
        char secret_key[KEYFILE_KEY_LEN + 1];
} EndpointKeys;

/* Whether `endpoint` needs CURVE: everything but ipc:// and inproc://. */
bool endpoint_is_network(const char *endpoint);

/* Checks that a key file is given when any of the `n` endpoints (NULLs skipped) needs one.
 * Returns 0, or -EINVAL after printing why (futured then exits 2). */
int endpoint_check_keys(const char *const *endpoints, size_t n, const char *key_file);

/* Reads the daemon's key pair from `key_file` (NULL: none) into `ret`. Returns 0 or -EINVAL
 * after printing why. */
int endpoint_keys_load(EndpointKeys *ret, const char *key_file);

/* Sets the options of `socket` that the next bind of `endpoint` copies: CURVE server with `keys`
 * and the ZAP domain for a network endpoint, the NULL mechanism otherwise. A ZAP domain once set
 * cannot be unset: bind every local endpoint of a socket before its network ones (then ZeroMQ
 * does not ask the ZAP handler about ipc:// connections). Returns 0 or -errno (-EINVAL: a
 * network endpoint but no keys). */
int endpoint_secure(void *socket, const char *endpoint, const EndpointKeys *keys);

/* The access of an ipc:// socket file futured makes: `mode`, and `group` (NULL: the daemon's
 * own). */
typedef struct EndpointAccess {
        mode_t mode;
        const char *group; /* borrowed */
} EndpointAccess;

/* Gives the socket file of the ipc:// `endpoint` its group, then its mode; the caller made it
 * under ENDPOINT_UMASK (owner only), so that no one else can connect in between. An abstract
 * socket (ipc://@name) has no file. Returns 0 or -errno, having printed why. */
#define ENDPOINT_UMASK 0177
int endpoint_own_ipc(const char *endpoint, const EndpointAccess *access);

/* Binds the ipc:// `endpoint` of `socket` by name under ENDPOINT_UMASK, then endpoint_own_ipc().
 * Returns 0 or -errno, having printed why. */
int endpoint_bind_ipc(void *socket, const char *endpoint, const EndpointAccess *access);
