/* zap: see zap.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "macro.h"
#include "zap.h"

typedef char ZapKey[KEYFILE_KEY_LEN + 1];

static int key_cmp(const void *a, const void *b) {
        return strcmp(a, b);
}

/* The allow list being read. */
typedef struct List {
        ZapKey *keys;
        size_t n, cap;
} List;

static int add_key(void *userdata, const char *name, const char *key) {
        List *l = userdata;

        if (strcmp(name, "public") != 0)
                return -EBADMSG; /* a secret key has no place in an allow list */
        if (l->n == ZAP_MAX_KEYS)
                return -E2BIG;
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 16;
                ZapKey *k = reallocarray(l->keys, cap, sizeof(ZapKey));
                if (!k)
                        return -ENOMEM;
                l->keys = k;
                l->cap = cap;
        }
        memcpy(l->keys[l->n++], key, sizeof(ZapKey));
        return 0;
}

/* Reads the allow list at `path` into a sorted array. Returns 0 or -errno (-EBADMSG with the
 * line in `*ret_line`). */
static int read_list(const char *path, ZapKey **ret, size_t *ret_n, unsigned *ret_line) {
        List l = {};
        int r = keyfile_foreach(path, add_key, &l, ret_line, NULL);

        if (r < 0) {
                free(l.keys);
                return r;
        }
        if (l.n > 0)
                qsort(l.keys, l.n, sizeof(ZapKey), key_cmp);
        *ret = l.keys;
        *ret_n = l.n;
        return 0;
}

static int load(Zap *z, const char *path) {
        ZapKey *keys = NULL;
        size_t n = 0;
        unsigned line = 0;
        int r;

        if (path) {
                r = read_list(path, &keys, &n, &line);
                if (r < 0) {
                        if (r == -EBADMSG)
                                log_error("%s:%u: expected a Z85 public key ('public KEY', or the "
                                          "key alone)",
                                          path, line);
                        else
                                log_error("cannot read the allow list %s: %s", path, strerror(-r));
                        return r;
                }
        }
        free(z->keys);
        z->keys = keys;
        z->n_keys = n;
        return 0;
}

bool zap_allowed(const Zap *z, const char *key) {
        return z->n_keys > 0 && bsearch(key, z->keys, z->n_keys, sizeof(ZapKey), key_cmp);
}

/* Sends one frame of a reply; `more` unless it is the last. */
static void send_frame(void *socket, const void *data, size_t len, bool more) {
        (void) zmq_send(socket, data, len, (more ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
}

/* Answers one request: [version, request id, domain, address, routing id, mechanism,
 * credentials...]. A CURVE client is admitted when its key is listed; the NULL mechanism (ipc://,
 * should ZeroMQ ever ask about it) is admitted, since the socket file's mode decides there. */
static void answer(Zap *z, zmq_msg_t *parts, int n) {
        char key[KEYFILE_KEY_LEN + 1] = "";
        const char *status = "400", *text = "not on the allow list";
        bool curve = n == 7 && zmq_msg_size(&parts[5]) == 5 &&
                     memcmp(zmq_msg_data(&parts[5]), "CURVE", 5) == 0 &&
                     zmq_msg_size(&parts[6]) == 32;
        bool null = n == 6 && zmq_msg_size(&parts[5]) == 4 &&
                    memcmp(zmq_msg_data(&parts[5]), "NULL", 4) == 0;

        if (n < 2)
                return; /* no request id to answer with: ZeroMQ never sends that */
        if (curve) {
                zmq_z85_encode(key, zmq_msg_data(&parts[6]), 32);
                if (zap_allowed(z, key)) {
                        status = "200";
                        text = "OK";
                }
        } else if (null) {
                status = "200";
                text = "OK";
        } else
                text = "unsupported mechanism";
        if (status[0] == '2')
                z->admitted++;
        else {
                z->refused++;
                log_notice("refused a %s client from %.*s: %s", curve ? "CURVE" : "non-CURVE",
                           n > 3 ? (int) MIN(zmq_msg_size(&parts[3]), 64) : 0,
                           n > 3 ? (const char *) zmq_msg_data(&parts[3]) : "", text);
        }
        send_frame(z->socket, "1.0", 3, true);
        send_frame(z->socket, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), true);
        send_frame(z->socket, status, 3, true);
        send_frame(z->socket, text, strlen(text), true);
        send_frame(z->socket, key, curve && status[0] == '2' ? KEYFILE_KEY_LEN : 0, true);
        send_frame(z->socket, "", 0, false);
}

static bool readable(void *socket) {
        uint32_t events = 0;
        size_t len = sizeof(events);

        return zmq_getsockopt(socket, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

/* ZMQ_FD fired: answer every request waiting. All of this socket's traffic happens here, and the
 * loop ends with ZMQ_EVENTS saying nothing is left, so the edge is armed again. */
static void on_zap(LoopFile *lf, uint32_t events) {
        Zap *z = container_of(lf, Zap, file);

        while (readable(z->socket)) {
                zmq_msg_t parts[8];
                int n = 0, more = 1;

                while (more) {
                        zmq_msg_t *m = &parts[n < 8 ? n : 7];
                        if (n >= 8)
                                zmq_msg_close(m);
                        zmq_msg_init(m);
                        if (zmq_msg_recv(m, z->socket, ZMQ_DONTWAIT) < 0) {
                                zmq_msg_close(m);
                                break;
                        }
                        more = zmq_msg_more(m);
                        n++;
                }
                answer(z, parts, MIN(n, 8));
                for (int i = 0; i < MIN(n, 8); i++)
                        zmq_msg_close(&parts[i]);
        }
}

int zap_init(Zap *z, void *zctx, Loop *loop, const char *path) {
        int fd, r, zero = 0;
        size_t len = sizeof(fd);

        *z = (Zap){ .loop = loop };
        loop_file_init(&z->file);
        r = load(z, path);
        if (r < 0)
                return r;
        z->socket = zmq_socket(zctx, ZMQ_REP);
        if (!z->socket || zmq_setsockopt(z->socket, ZMQ_LINGER, &zero, sizeof(zero)) < 0 ||
            zmq_bind(z->socket, ZAP_ENDPOINT) < 0 ||
            zmq_getsockopt(z->socket, ZMQ_FD, &fd, &len) < 0) {
                r = -zmq_errno();
                fprintf(stderr, "futured: cannot start the ZAP handler: %s\n", zmq_strerror(-r));
                return r;
        }
        r = loop_add(loop, &z->file, fd, EPOLLIN | EPOLLET, on_zap);
        if (r < 0)
                return r;
        if (path && z->n_keys == 0)
                log_warning("the allow list %s is empty: no CURVE client is admitted", path);
        return 0;
}

int zap_reload(Zap *z, const char *path) {
        int r = load(z, path);

        if (r >= 0)
                log_info("allow list: %zu client keys", z->n_keys);
        return r;
}

void zap_deinit(Zap *z) {
        if (z->loop)
                loop_remove(z->loop, &z->file);
        if (z->socket)
                zmq_close(z->socket);
        free(z->keys);
        *z = (Zap){};
        loop_file_init(&z->file);
}
