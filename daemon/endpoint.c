/* endpoint: see endpoint.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "endpoint.h"

bool endpoint_is_network(const char *endpoint) {
        return strncmp(endpoint, "ipc://", 6) != 0 && strncmp(endpoint, "inproc://", 9) != 0;
}

int endpoint_check_keys(const char *const *endpoints, size_t n, const char *key_file) {
        if (key_file)
                return 0;
        for (size_t i = 0; i < n; i++)
                if (endpoints[i] && endpoint_is_network(endpoints[i])) {
                        fprintf(stderr,
                                "futured: refusing to serve %s without authentication: a network "
                                "endpoint needs the daemon's CURVE key pair (--curve-secret-key "
                                "FILE, written by 'futurectl keygen') and the clients' public "
                                "keys (--curve-allow FILE)\n",
                                endpoints[i]);
                        return -EINVAL;
                }
        return 0;
}

int endpoint_keys_load(EndpointKeys *ret, const char *key_file) {
        int r;

        *ret = (EndpointKeys){};
        if (!key_file)
                return 0;
        r = keyfile_read(key_file, ret->public_key, ret->secret_key);
        if (r < 0) {
                fprintf(stderr, "futured: cannot use the key pair %s: %s\n", key_file,
                        r == -EPERM    ? "it is readable by group or others (chmod 600 it)"
                        : r == -ENOKEY ? "it lacks a 'public' or 'secret' line"
                        : r == -EBADMSG ? "a line is not 'public KEY' or 'secret KEY' (Z85)"
                                        : strerror(-r));
                *ret = (EndpointKeys){};
                return -EINVAL;
        }
        return 0;
}

int endpoint_secure(void *socket, const char *endpoint, const EndpointKeys *keys) {
        int one = 1, zero = 0;

        /* ZeroMQ cannot unset a ZAP domain: the caller binds local endpoints first. */
        if (!endpoint_is_network(endpoint))
                return zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &zero, sizeof(zero)) < 0
                               ? -zmq_errno()
                               : 0;
        if (!keys->secret_key[0])
                return -EINVAL;
        if (zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &one, sizeof(one)) < 0 ||
            zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, keys->secret_key, KEYFILE_KEY_LEN) < 0 ||
            zmq_setsockopt(socket, ZMQ_ZAP_DOMAIN, ENDPOINT_ZAP_DOMAIN,
                           strlen(ENDPOINT_ZAP_DOMAIN)) < 0)
                return -zmq_errno();
        return 0;
}

int endpoint_own_ipc(const char *endpoint, const EndpointAccess *access) {
        const char *path = endpoint + 6;
        gid_t gid = (gid_t) -1;
        int r;

        if (path[0] == '@')
                return 0;
        if (access->group) {
                struct group *gr = getgrnam(access->group);
                if (!gr) {
                        fprintf(stderr, "futured: --socket-group %s: no such group\n",
                                access->group);
                        return -EINVAL;
                }
                gid = gr->gr_gid;
        }
        if ((gid != (gid_t) -1 && chown(path, (uid_t) -1, gid) < 0) ||
            chmod(path, access->mode) < 0) {
                r = -errno;
                fprintf(stderr, "futured: cannot set the %s of %s: %s\n",
                        gid != (gid_t) -1 ? "group or mode" : "mode", path, strerror(-r));
                return r;
        }
        return 0;
}

int endpoint_bind_ipc(void *socket, const char *endpoint, const EndpointAccess *access) {
        mode_t old;
        int r = 0;

        /* The umask is the process's, but no other thread makes files yet: the pools start after
         * the sockets are bound. */
        old = umask(ENDPOINT_UMASK);
        if (zmq_bind(socket, endpoint) < 0)
                r = -zmq_errno();
        umask(old);
        if (r < 0) {
                fprintf(stderr, "futured: cannot bind %s: %s\n", endpoint, zmq_strerror(-r));
                return r;
        }
        return endpoint_own_ipc(endpoint, access);
}
