/* download: see download.h.
 *
 * download_start() builds a transfer's easy handle and state; the transfer pool runs it on its
 * multi handle; download_finish() classifies the outcome and packs the result. The multi handle
 * reuses connections and DNS answers between transfers; the share handle adds TLS sessions. A
 * cancel removes the handle from the multi handle, which aborts the transfer at once. A file
 * download goes to a temporary name beside its target and is renamed when complete, so a partial
 * file is never visible and a failed or cancelled one leaves nothing behind. All paths resolve
 * with openat2(RESOLVE_BENEATH) under the download directory: an absolute path, `..`, or a
 * symlink that leaves the directory fails.
 *
 * Every address a transfer connects to passes the daemon's network policy (netpolicy.h) first:
 * libcurl's open-socket callback sees the resolved address of each connection it makes (each DNS
 * answer it tries, each redirect, a proxy), and refuses a denied one before the socket exists;
 * a connection reused from the multi handle's cache is checked again before each request (the
 * pre-request callback), so a policy narrowed at reload applies to it too. A transfer that
 * could connect nowhere else fails with `download_denied`, naming the address and the rule.
 *
 * The quota on bytes held (download_set_quota; docs/SECURITY.md): every body byte a transfer keeps
 * (a 2xx body, inline or in its temporary file) is added to its principal's counter (JobContext's
 * download_held) as it arrives, and taken off again when the transfer ends, whatever its outcome
 * (for an inline body the result holds it then, for a file the file system). Bytes that would
 * take the counter past the quota are refused: that transfer fails with `download_quota`, the
 * others go on. Only the transfer thread moves the counters; the loop may read them.
 *
 * Ownership: a Download belongs to whoever holds the pointer download_start() returned through
 * ret_state, until download_finish() frees it. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "download.h"
#include "macro.h"
#include "netpolicy.h"
#include "now.h"

#define DEFAULT_TIMEOUT 3.1
#define DEFAULT_MAX_BYTES (64ull << 20)
#define DEFAULT_MAX_REDIRECTS 5
#define URL_MAX 8192
#define PATH_MAX_LEN 4096
/* The temporary file is ".NAME.PID.COUNTER.part" in the target's directory: NAME may take what
 * NAME_MAX (255) leaves after the 1 + 1 + 10 + 1 + 20 + 5 bytes around it. */
#define FILE_NAME_MAX (255 - 38)

/* Only the transfer thread uses it: it needs no lock callbacks. */
static CURLSH *share;
static int download_dir_fd = -1;

/* A network policy shared by the transfers started under it. */
typedef struct Policy {
        NetPolicy rules;
        unsigned refs; /* transfer thread only, once handed over */
} Policy;

/* The built-in rules alone: the policy until download_set_policy() says otherwise. */
static Policy builtin_policy = { .refs = 1 };
/* The transfer thread's current policy; each Download holds a reference to the one it began
 * with. */
static Policy *policy = &builtin_policy;
/* A new policy from the loop thread (download_set_policy), taken by the transfer thread at its
 * next download_start(): the hand-over needs no lock, and a policy is freed only by the thread
 * that uses it. */
static _Atomic(Policy *) policy_next;
/* Body bytes one principal's running downloads may hold at once; 0: no quota. */
static _Atomic uint64_t quota_bytes;

static void policy_unref(Policy *p) {
        if (p && p != &builtin_policy && --p->refs == 0) {
                netpolicy_deinit(&p->rules);
                free(p);
        }
}

int download_set_policy(const NetPolicy *rules) {
        Policy *p = calloc(1, sizeof(*p)), *old;

        if (!p)
                return -ENOMEM;
        if (netpolicy_copy(&p->rules, rules) < 0) {
                free(p);
                return -ENOMEM;
        }
        p->refs = 1;
        /* One the transfer thread has not taken yet was never seen by it: ours to free. */
        old = atomic_exchange(&policy_next, p);
        policy_unref(old);
        return 0;
}

/* Transfer thread: the policy a transfer starting now uses, with a reference for it. */
static Policy *policy_take(void) {
        Policy *next = atomic_exchange(&policy_next, NULL);

        if (next) {
                policy_unref(policy);
                policy = next;
        }
        policy->refs++;
        return policy;
}

void download_set_quota(uint64_t bytes) {
        atomic_store(&quota_bytes, bytes);
}

int download_global_init(const char *dir) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return -EIO;
        share = curl_share_init();
        if (!share)
                return -ENOMEM;
        /* Connections and DNS answers are shared by the transfer pool's multi handle already. */
        curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        if (dir) {
                download_dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (download_dir_fd < 0)
                        return -errno;
        }
        return 0;
}

int download_set_dir(const char *dir) {
        int fd;

        if (!dir)
                return download_dir_fd < 0 ? 0 : -EBUSY;
        fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (download_dir_fd < 0) {
                download_dir_fd = fd;
                return 0;
        }
        if (dup3(fd, download_dir_fd, O_CLOEXEC) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        close(fd);
        return 0;
}

void download_global_cleanup(void) {
        policy_unref(atomic_exchange(&policy_next, NULL));
        policy_unref(policy);
        policy = &builtin_policy;
        if (share)
                curl_share_cleanup(share);
        share = NULL;
        if (download_dir_fd >= 0)
                close(download_dir_fd);
        download_dir_fd = -1;
        curl_global_cleanup();
}

/* Opens the directory that holds `path` (relative to the download directory) as an O_PATH fd,
 * beneath the download directory, and points *ret_base at the last component. */
static int open_parent(const char *path, const char **ret_base) {
        struct open_how how = {
                .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        const char *slash = strrchr(path, '/');
        char parent[PATH_MAX_LEN + 1];
        long fd;

        if (download_dir_fd < 0)
                return -ENOTDIR;
        if (!slash) {
                *ret_base = path;
                fd = fcntl(download_dir_fd, F_DUPFD_CLOEXEC, 3);
                return fd < 0 ? -errno : (int) fd;
        }
        memcpy(parent, path, (size_t) (slash - path));
        parent[slash - path] = 0;
        *ret_base = slash + 1;
        fd = syscall(SYS_openat2, download_dir_fd, parent, &how, sizeof(how));
        return fd < 0 ? -errno : (int) fd;
}

/* Checks a `path` argument: relative, no empty, `.` or `..` component, its directory inside the
 * download directory. */
static int check_path(const msgpack_object *o, ProtoError *e) {
        char path[PATH_MAX_LEN + 1];
        const char *base;
        int fd;

        if (o->via.str.size == 0 || o->via.str.size > PATH_MAX_LEN ||
            memchr(o->via.str.ptr, 0, o->via.str.size))
                return proto_error(e, PROTO_E_BAD_ARGS, "path", "'path' must be 1 to %d bytes",
                                   PATH_MAX_LEN);
        memcpy(path, o->via.str.ptr, o->via.str.size);
        path[o->via.str.size] = 0;
        if (path[0] == '/')
                return proto_error(e, PROTO_E_BAD_ARGS, "path",
                                   "'path' must be relative to the download directory");
        for (char *c = path, *end; c; c = end ? end + 1 : NULL) {
                end = strchr(c, '/');
                size_t n = end ? (size_t) (end - c) : strlen(c);
                if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
                        return proto_error(e, PROTO_E_BAD_ARGS, "path",
                                           "'path' must not have empty, '.' or '..' components");
                /* Checked here, not when the transfer creates its temporary file. */
                if (n > (end ? 255u : (size_t) FILE_NAME_MAX))
                        return proto_error(e, PROTO_E_BAD_ARGS, "path",
                                           "a directory name in 'path' may have 255 bytes, the "
                                           "file name %d", FILE_NAME_MAX);
        }
        if (download_dir_fd < 0)
                return proto_error(e, PROTO_E_BAD_ARGS, "path",
                                   "futured has no download directory (--download-dir)");
        fd = open_parent(path, &base);
        if (fd == -ENOENT)
                return proto_error(e, PROTO_E_BAD_ARGS, "path",
                                   "the directory of 'path' does not exist in the download "
                                   "directory (futured creates no directories)");
        if (fd < 0)
                return proto_error(e, PROTO_E_BAD_ARGS, "path",
                                   "the directory of 'path' is not inside the download directory: %s",
                                   strerror(-fd));
        close(fd);
        return 0;
}

static int check_url(const msgpack_object *o, ProtoError *e) {
        char url[URL_MAX + 1], *scheme = NULL, *host = NULL;
        CURLU *u;
        int r = 0;

        if (o->via.str.size == 0 || o->via.str.size > URL_MAX ||
            memchr(o->via.str.ptr, 0, o->via.str.size))
                return proto_error(e, PROTO_E_BAD_URL, "url", "'url' must be 1 to %d bytes", URL_MAX);
        memcpy(url, o->via.str.ptr, o->via.str.size);
        url[o->via.str.size] = 0;
        u = curl_url();
        if (!u)
                return proto_error(e, PROTO_E_BAD_URL, "url", "out of memory");
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
                r = proto_error(e, PROTO_E_BAD_URL, "url", "'%.*s' is not a valid URL",
                                (int) proto_utf8_prefix(url, o->via.str.size, 100), url);
        else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
                r = proto_error(e, PROTO_E_BAD_URL, "url",
                                "only http and https URLs are allowed, not %.20s:", scheme);
        curl_free(scheme);
        curl_free(host);
        curl_url_cleanup(u);
        return r;
}

static int download_check(const msgpack_object *args, ProtoError *e) {
        const msgpack_object *url = proto_map_get(args, "url"), *path = proto_map_get(args, "path");
        const msgpack_object *o;
        double timeout;
        uint64_t v;
        bool inl;
        int r;

        r = check_url(url, e);
        if (r < 0)
                return r;
        if ((o = proto_map_get(args, "timeout")) &&
            (proto_get_number(o, &timeout) < 0 || timeout <= 0 || timeout > 86400))
                return proto_error(e, PROTO_E_BAD_ARGS, "timeout",
                                   "'timeout' must be more than 0 and at most 86400 seconds");
        if ((o = proto_map_get(args, "max_bytes")) &&
            (proto_get_uint(o, &v) < 0 || v == 0 || v > (1ull << 40)))
                return proto_error(e, PROTO_E_BAD_ARGS, "max_bytes",
                                   "'max_bytes' must be from 1 to 2^40");
        if ((o = proto_map_get(args, "max_redirects")) && (proto_get_uint(o, &v) < 0 || v > 50))
                return proto_error(e, PROTO_E_BAD_ARGS, "max_redirects",
                                   "'max_redirects' must be from 0 to 50");
        if ((o = proto_map_get(args, "inline")) && proto_get_bool(o, &inl) == 0 && inl == !!path)
                return proto_error(e, PROTO_E_BAD_ARGS, "inline",
                                   inl ? "a download goes inline or to a 'path', not both"
                                       : "'inline: false' needs a 'path' for the body");
        if (path)
                return check_path(path, e);
        return 0;
}

/* One transfer's state, shared by the callbacks on the transfer thread. */
typedef struct Download {
        CURL *h;
        const JobContext *ctx;
        char *url;
        char *path;          /* relative to the download directory, or NULL: inline */
        int parent_fd;       /* the directory `path` names a file in, or -1 */
        const char *base;    /* path's last component */
        char tmp[PATH_MAX_LEN + 64]; /* the temporary file's name in parent_fd, "" once gone */
        double start, timeout;
        uint64_t max_redirects;
        uint64_t max_bytes;
        uint64_t bytes;
        uint64_t held;       /* bytes this transfer added to ctx->download_held */
        uint64_t over_quota; /* the quota it would have passed, or 0 */
        uint64_t held_others; /* ... and what the principal's other transfers held then */
        bool too_large;
        int write_errno;
        int fd;              /* file target, or -1 */
        char *body;          /* inline target */
        size_t body_cap;
        char reason[128];    /* reason phrase of the last status line */
        Policy *policy;      /* a reference */
        const NetRule *denied; /* the first rule that refused a connection (in policy), or NULL */
        char denied_addr[NETPOLICY_TEXT_MAX];
        char errbuf[CURL_ERROR_SIZE];
} Download;

/* Counts `len` more body bytes against the principal's quota; false when they would pass it.
 * Transfer thread. */
static bool hold(Download *t, size_t len) {
        uint64_t quota = atomic_load(&quota_bytes), before;

        if (!t->ctx->download_held)
                return true;
        before = atomic_fetch_add(t->ctx->download_held, len);
        if (quota && before + len > quota) {
                atomic_fetch_sub(t->ctx->download_held, len);
                t->over_quota = quota;
                t->held_others = before - t->held;
                return false;
        }
        t->held += len;
        return true;
}

/* Gives back every byte this transfer holds (its body was dropped, or it ended). */
static void unhold(Download *t) {
        if (t->ctx && t->ctx->download_held && t->held)
                atomic_fetch_sub(t->ctx->download_held, t->held);
        t->held = 0;
}

static size_t on_header(char *line, size_t size, size_t n, void *userdata) {
        Download *t = userdata;
        size_t len = size * n;

        /* "HTTP/1.1 418 I'm a Teapot\r\n": keep what follows the status code. */
        if (len > 5 && memcmp(line, "HTTP/", 5) == 0) {
                const char *sp = memchr(line, ' ', len);
                const char *sp2 = sp ? memchr(sp + 1, ' ', len - (size_t) (sp + 1 - line)) : NULL;
                size_t r = 0;
                if (sp2) {
                        const char *end = line + len;
                        sp2++;
                        while (end > sp2 && (end[-1] == '\r' || end[-1] == '\n'))
                                end--;
                        r = MIN((size_t) (end - sp2), sizeof(t->reason) - 1);
                        memcpy(t->reason, sp2, r);
                }
                t->reason[r] = 0;
                /* A new response (after a redirect or a 1xx): the body so far was not kept. */
                t->bytes = 0;
                unhold(t);
        }
        return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userdata) {
        Download *t = userdata;
        size_t len = size * n;
        long code = 0;

        /* Only a 2xx body is kept; an error page is counted against max_bytes and dropped. */
        curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &code);
        if (t->bytes + len > t->max_bytes) {
                t->too_large = true;
                return 0;
        }
        t->bytes += len;
        if (code < 200 || code > 299)
                return len;
        if (!hold(t, len))
                return 0;
        if (t->fd >= 0) {
                for (size_t off = 0; off < len;) {
                        ssize_t w = write(t->fd, data + off, len - off);
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w < 0) {
                                t->write_errno = errno;
                                return 0;
                        }
                        off += (size_t) w;
                }
                return len;
        }
        if (t->bytes > t->body_cap) {
                size_t cap = MAX(t->bytes, t->body_cap * 2);
                char *b = realloc(t->body, cap);
                if (!b) {
                        t->write_errno = ENOMEM;
                        return 0;
                }
                t->body = b;
                t->body_cap = cap;
        }
        memcpy(t->body + t->bytes - len, data, len);
        return len;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
        Download *t = userdata;

        if (t->ctx->progress_done) {
                atomic_store(t->ctx->progress_done, (uint64_t) dlnow);
                atomic_store(t->ctx->progress_total, (uint64_t) dltotal);
        }
        return atomic_load(t->ctx->cancel) ? 1 : 0;
}

/* Packs `key` and `value`, or nil for a NULL value or one that is not UTF-8 (a server's
 * Content-Type may hold any bytes; a reply's str must be text). */
static void pack_kv_str(msgpack_packer *pk, const char *key, const char *value) {
        proto_pack_str(pk, key);
        if (value && proto_utf8_valid(value, strlen(value)))
                proto_pack_str(pk, value);
        else
                msgpack_pack_nil(pk);
}

/* Whether the policy lets `t` connect to `a`; notes the transfer's first denial, for its
 * failure. Transfer thread. */
static bool check_address(Download *t, const struct sockaddr *a, size_t len) {
        char addr[NETPOLICY_TEXT_MAX];
        const NetRule *rule = netpolicy_match(&t->policy->rules, a, len, addr);

        if (!rule || rule->allow)
                return true;
        if (!t->denied) {
                t->denied = rule;
                memcpy(t->denied_addr, addr, sizeof(addr));
        }
        return false;
}

/* CURLOPT_OPENSOCKETFUNCTION: every new connection, to each address libcurl tries. A refused one
 * fails that attempt (CURLE_COULDNT_CONNECT once no address is left). The socket is close-on-exec:
 * the daemon starts worker processes. */
static curl_socket_t on_open_socket(void *userdata, curlsocktype purpose,
                                    struct curl_sockaddr *a) {
        Download *t = userdata;

        (void) purpose;
        if (!check_address(t, &a->addr, a->addrlen))
                return CURL_SOCKET_BAD;
        return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* CURLOPT_PREREQFUNCTION: before each request, on a new or a reused connection (whose socket a
 * policy in effect earlier may have let through). */
static int on_prereq(void *userdata, char *ip, char *local_ip, int port, int local_port) {
        Download *t = userdata;
        struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
        struct sockaddr_in a4 = { .sin_family = AF_INET };

        (void) local_ip, (void) port, (void) local_port;
        if (inet_pton(AF_INET, ip, &a4.sin_addr) == 1)
                return check_address(t, (struct sockaddr *) &a4, sizeof(a4))
                               ? CURL_PREREQFUNC_OK
                               : CURL_PREREQFUNC_ABORT;
        if (inet_pton(AF_INET6, ip, &a6.sin6_addr) == 1)
                return check_address(t, (struct sockaddr *) &a6, sizeof(a6))
                               ? CURL_PREREQFUNC_OK
                               : CURL_PREREQFUNC_ABORT;
        return CURL_PREREQFUNC_OK; /* not an IP address: checked when its socket was opened */
}

static Download *download_free(Download *t) {
        unhold(t);
        if (t->fd >= 0)
                close(t->fd);
        if (t->tmp[0])
                (void) unlinkat(t->parent_fd, t->tmp, 0);
        if (t->parent_fd >= 0)
                close(t->parent_fd);
        if (t->h)
                curl_easy_cleanup(t->h);
        free(t->body);
        free(t->url);
        free(t->path);
        policy_unref(t->policy);
        free(t);
        return NULL;
}

static void *download_start(const msgpack_object *args, const JobContext *ctx, void **ret_state,
                            JobFailure *failure) {
        Download *t = calloc(1, sizeof(*t));
        uint64_t max_bytes = DEFAULT_MAX_BYTES;

        if (!t) {
                job_failure(failure, PROTO_F_INTERNAL, "out of memory");
                return NULL;
        }
        t->ctx = ctx;
        t->fd = t->parent_fd = -1;
        t->policy = policy_take();
        t->start = now_seconds();
        t->timeout = DEFAULT_TIMEOUT;
        t->max_redirects = DEFAULT_MAX_REDIRECTS;
        t->url = proto_strdup(proto_map_get(args, "url"), URL_MAX);
        t->path = proto_strdup(proto_map_get(args, "path"), PATH_MAX_LEN);
        if (!t->url) {
                job_failure(failure, PROTO_F_INTERNAL, "out of memory");
                return download_free(t);
        }
        (void) proto_get_number(proto_map_get(args, "timeout"), &t->timeout);
        (void) proto_get_uint(proto_map_get(args, "max_bytes"), &max_bytes);
        (void) proto_get_uint(proto_map_get(args, "max_redirects"), &t->max_redirects);
        t->max_bytes = t->path ? max_bytes : MIN(max_bytes, (uint64_t) DOWNLOAD_INLINE_MAX);

        if (t->path) {
                static atomic_ulong counter;
                t->parent_fd = open_parent(t->path, &t->base);
                if (t->parent_fd < 0) {
                        job_failure(failure, PROTO_F_IO, "cannot open the directory of %s: %s",
                                    t->path, strerror(-t->parent_fd));
                        return download_free(t);
                }
                /* Unique among this daemon's transfers; O_EXCL refuses anything else's. */
                snprintf(t->tmp, sizeof(t->tmp), ".%s.%d.%lu.part", t->base, (int) getpid(),
                         atomic_fetch_add(&counter, 1));
                t->fd = openat(t->parent_fd, t->tmp,
                               O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (t->fd < 0) {
                        t->tmp[0] = 0;
                        job_failure(failure, PROTO_F_IO, "cannot create %s: %m", t->path);
                        return download_free(t);
                }
        }

        t->h = curl_easy_init();
        if (!t->h) {
                job_failure(failure, PROTO_F_INTERNAL, "out of memory");
                return download_free(t);
        }
        curl_easy_setopt(t->h, CURLOPT_URL, t->url);
        curl_easy_setopt(t->h, CURLOPT_SHARE, share);
        curl_easy_setopt(t->h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(t->h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(t->h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(t->h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(t->h, CURLOPT_MAXREDIRS, (long) t->max_redirects);
        /* At least 1 ms: 0 would mean no timeout at all, and download_check() admits 0.0001 s. */
        curl_easy_setopt(t->h, CURLOPT_TIMEOUT_MS, MAX((long) (t->timeout * 1000.0), 1L));
        curl_easy_setopt(t->h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) t->max_bytes);
        curl_easy_setopt(t->h, CURLOPT_USERAGENT, "futured/" "0.1");
        curl_easy_setopt(t->h, CURLOPT_ERRORBUFFER, t->errbuf);
        curl_easy_setopt(t->h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(t->h, CURLOPT_HEADERDATA, t);
        curl_easy_setopt(t->h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(t->h, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(t->h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(t->h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(t->h, CURLOPT_XFERINFODATA, t);
        curl_easy_setopt(t->h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
        curl_easy_setopt(t->h, CURLOPT_OPENSOCKETDATA, t);
        curl_easy_setopt(t->h, CURLOPT_PREREQFUNCTION, on_prereq);
        curl_easy_setopt(t->h, CURLOPT_PREREQDATA, t);
        *ret_state = t;
        return t->h;
}

/* Classifies a finished transfer into `failure`; returns 0 when it is a result (2xx or 404). */
static int classify(Download *t, int rc, long http, JobFailure *failure) {
        if (rc < 0 || (rc == CURLE_ABORTED_BY_CALLBACK && atomic_load(t->ctx->cancel)))
                return job_failure(failure, PROTO_F_CANCELLED, "the download was cancelled");
        /* Refused on every address it tried (or aborted by on_prereq). */
        if (t->denied && (rc == CURLE_COULDNT_CONNECT || rc == CURLE_ABORTED_BY_CALLBACK)) {
                snprintf(failure->rule, sizeof(failure->rule), "%s", t->denied->text);
                snprintf(failure->address, sizeof(failure->address), "%s", t->denied_addr);
                return job_failure(failure, PROTO_F_DOWNLOAD_DENIED,
                                   "connecting to %s is denied by %s %s%s", t->denied_addr,
                                   t->denied->builtin ? "the built-in rule" : "--download-deny",
                                   t->denied->text,
                                   t->denied->builtin ? " (lift it with --download-allow)" : "");
        }
        if (rc == CURLE_ABORTED_BY_CALLBACK)
                return job_failure(failure, PROTO_F_CANCELLED, "the download was cancelled");
        if (t->over_quota)
                return job_failure(failure, PROTO_F_DOWNLOAD_QUOTA,
                                   "the running downloads of %s would hold more than %llu bytes "
                                   "at once (its other downloads held %llu, this one %llu; "
                                   "--quota-download-bytes)",
                                   t->ctx->principal ? t->ctx->principal : "its principal",
                                   (unsigned long long) t->over_quota,
                                   (unsigned long long) t->held_others,
                                   (unsigned long long) t->held);
        if (t->too_large || rc == CURLE_FILESIZE_EXCEEDED)
                return job_failure(failure, PROTO_F_TOO_LARGE, "the body is larger than %llu bytes",
                                   (unsigned long long) t->max_bytes);
        if (t->write_errno)
                return job_failure(failure, PROTO_F_IO, "cannot write %s: %s",
                                   t->path ? t->path : "the body", strerror(t->write_errno));
        if (rc == CURLE_OPERATION_TIMEDOUT)
                return job_failure(failure, PROTO_F_TIMEOUT, "no complete answer within %.3g s: %s",
                                   t->timeout, t->errbuf);
        if (rc == CURLE_TOO_MANY_REDIRECTS)
                return job_failure(failure, PROTO_F_TOO_MANY_REDIRECTS, "more than %llu redirects",
                                   (unsigned long long) t->max_redirects);
        if (rc == CURLE_UNSUPPORTED_PROTOCOL)
                return job_failure(failure, PROTO_F_BAD_URL,
                                   "redirected to a URL that is not http or https: %s", t->errbuf);
        if (rc != CURLE_OK)
                return job_failure(failure, PROTO_F_CONNECTION, "%s: %s",
                                   curl_easy_strerror((CURLcode) rc), t->errbuf);
        if (http != 404 && (http < 200 || http > 299)) {
                failure->http_status = (int) http;
                return job_failure(failure, PROTO_F_HTTP_ERROR, "HTTP error %ld - %s", http,
                                   t->reason);
        }
        return 0;
}

static int download_finish(void *state, int rc, msgpack_packer *pk, JobFailure *failure) {
        Download *t = state;
        const char *content_type = NULL;
        long http = 0;
        bool found;
        int r;

        curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &http);
        curl_easy_getinfo(t->h, CURLINFO_CONTENT_TYPE, &content_type);
        r = classify(t, rc, http, failure);
        if (r < 0)
                goto out;
        found = http != 404;
        if (t->fd >= 0 && found) {
                r = close(t->fd);
                t->fd = -1;
                if (r < 0) {
                        r = job_failure(failure, PROTO_F_IO, "cannot write %s: %m", t->path);
                        goto out;
                }
                if (renameat(t->parent_fd, t->tmp, t->parent_fd, t->base) < 0) {
                        r = job_failure(failure, PROTO_F_IO, "cannot rename into %s: %m", t->path);
                        goto out;
                }
                t->tmp[0] = 0;
        }
        msgpack_pack_map(pk, 6 + found);
        pack_kv_str(pk, "url", t->url);
        pack_kv_str(pk, "status", found ? "ok" : "not_found");
        proto_pack_str(pk, "http_status");
        msgpack_pack_int(pk, (int) http);
        proto_pack_str(pk, "bytes");
        msgpack_pack_uint64(pk, found ? t->bytes : 0);
        pack_kv_str(pk, "content_type", content_type);
        proto_pack_str(pk, "elapsed");
        msgpack_pack_double(pk, now_seconds() - t->start);
        if (found && t->path)
                pack_kv_str(pk, "path", t->path);
        else if (found) {
                proto_pack_str(pk, "body");
                msgpack_pack_bin(pk, t->bytes);
                msgpack_pack_bin_body(pk, t->body, t->bytes);
        }
out:
        download_free(t);
        return r;
}
static const JobParam download_params[] = {
        { "url", PARAM_STR, true },
        { "path", PARAM_STR, false },
        { "timeout", PARAM_FLOAT, false },
        { "max_bytes", PARAM_UINT, false },
        { "max_redirects", PARAM_UINT, false },
        { "inline", PARAM_BOOL, false },
        {},
};

const JobKind download_kind = {
        .name = "download",
        .pool = POOL_TRANSFER,
        .params = download_params,
        .check = download_check,
        .start = download_start,
        .finish = download_finish,
};
