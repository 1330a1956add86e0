/* download: see download.h.
 *
 * A transfer runs on a pool thread in its own multi handle, polled in 50 ms slices so that a
 * cancel (the daemon sets ctx->cancel) aborts it within about 50 ms whatever the network does;
 * the easy handles share one connection cache, DNS cache and TLS session cache through the share
 * handle. A file download goes to a temporary name beside its target and is renamed when complete,
 * so a partial file is never visible and a failed or cancelled one leaves nothing behind. All
 * paths resolve with openat2(RESOLVE_BENEATH) under the download directory: an absolute path,
 * `..`, or a symlink that leaves the directory fails. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "download.h"
#include "macro.h"

#define DEFAULT_TIMEOUT 3.1
#define DEFAULT_MAX_BYTES (64ull << 20)
#define DEFAULT_MAX_REDIRECTS 5
#define URL_MAX 8192
#define PATH_MAX_LEN 4096

static CURLSH *share;
static pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
static int download_dir_fd = -1;

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userdata) {
        pthread_mutex_lock(&share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userdata) {
        pthread_mutex_unlock(&share_locks[data]);
}

int download_global_init(const char *dir) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return -EIO;
        for (size_t i = 0; i < ELEMENTSOF(share_locks); i++)
                pthread_mutex_init(&share_locks[i], NULL);
        share = curl_share_init();
        if (!share)
                return -ENOMEM;
        curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
        curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        if (dir) {
                download_dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (download_dir_fd < 0)
                        return -errno;
        }
        return 0;
}

void download_global_cleanup(void) {
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
        }
        if (download_dir_fd < 0)
                return proto_error(e, PROTO_E_BAD_ARGS, "path",
                                   "futured has no download directory (--download-dir)");
        fd = open_parent(path, &base);
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
                r = proto_error(e, PROTO_E_BAD_URL, "url", "'%.100s' is not a valid URL", url);
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
        if ((o = proto_map_get(args, "inline")) && proto_get_bool(o, &inl) == 0 && inl && path)
                return proto_error(e, PROTO_E_BAD_ARGS, "inline",
                                   "a download goes inline or to a 'path', not both");
        if ((o = proto_map_get(args, "inline")) && proto_get_bool(o, &inl) == 0 && !inl && !path)
                return proto_error(e, PROTO_E_BAD_ARGS, "inline",
                                   "'inline: false' needs a 'path' for the body");
        if (path)
                return check_path(path, e);
        return 0;
}

/* One transfer's state, shared by the callbacks on the running thread. */
typedef struct Transfer {
        CURL *h;
        const JobContext *ctx;
        uint64_t max_bytes;
        uint64_t bytes;
        bool too_large;
        int write_errno;
        int fd;              /* file target, or -1 */
        char *body;          /* inline target */
        size_t body_cap;
        char reason[128];    /* reason phrase of the last status line */
} Transfer;

static size_t on_header(char *line, size_t size, size_t n, void *userdata) {
        Transfer *t = userdata;
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
                t->bytes = 0;
        }
        return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userdata) {
        Transfer *t = userdata;
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
        Transfer *t = userdata;

        if (t->ctx->progress_done) {
                atomic_store(t->ctx->progress_done, (uint64_t) dlnow);
                atomic_store(t->ctx->progress_total, (uint64_t) dltotal);
        }
        return atomic_load(t->ctx->cancel) ? 1 : 0;
}

static double now_seconds(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Runs the transfer in a private multi handle so that it can be abandoned between 50 ms polls.
 * Returns the transfer's CURLcode, or -1 when cancelled. */
static int perform(CURL *h, const JobContext *ctx) {
        CURLM *m = curl_multi_init();
        CURLcode result = CURLE_OUT_OF_MEMORY;
        int running = 1, q;
        CURLMsg *msg;

        if (!m)
                return CURLE_OUT_OF_MEMORY;
        curl_multi_add_handle(m, h);
        for (;;) {
                if (curl_multi_perform(m, &running) != CURLM_OK || !running)
                        break;
                if (atomic_load(ctx->cancel)) {
                        result = (CURLcode) -1;
                        goto out;
                }
                curl_multi_poll(m, NULL, 0, 50, NULL);
        }
        while ((msg = curl_multi_info_read(m, &q)))
                if (msg->msg == CURLMSG_DONE)
                        result = msg->data.result;
out:
        curl_multi_remove_handle(m, h);
        curl_multi_cleanup(m);
        return (int) result;
}

static void pack_kv_str(msgpack_packer *pk, const char *key, const char *value) {
        proto_pack_str(pk, key);
        if (value)
                proto_pack_str(pk, value);
        else
                msgpack_pack_nil(pk);
}

static int download_run(const msgpack_object *args, const JobContext *ctx, msgpack_packer *pk,
                        JobFailure *failure) {
        _cleanup_free_ char *url = proto_strdup(proto_map_get(args, "url"), URL_MAX);
        _cleanup_free_ char *path = proto_strdup(proto_map_get(args, "path"), PATH_MAX_LEN);
        _cleanup_close_ int parent_fd = -1;
        char tmp[PATH_MAX_LEN + 64] = "", errbuf[CURL_ERROR_SIZE] = "";
        const char *base = NULL, *content_type = NULL;
        double timeout = DEFAULT_TIMEOUT, start = now_seconds();
        uint64_t max_bytes = DEFAULT_MAX_BYTES, max_redirects = DEFAULT_MAX_REDIRECTS;
        Transfer t = { .ctx = ctx, .fd = -1 };
        long http = 0;
        int rc, r = 0;

        if (!url)
                return job_failure(failure, PROTO_F_INTERNAL, "out of memory");
        (void) proto_get_number(proto_map_get(args, "timeout"), &timeout);
        (void) proto_get_uint(proto_map_get(args, "max_bytes"), &max_bytes);
        (void) proto_get_uint(proto_map_get(args, "max_redirects"), &max_redirects);
        t.max_bytes = path ? max_bytes : MIN(max_bytes, (uint64_t) DOWNLOAD_INLINE_MAX);

        if (path) {
                static atomic_ulong counter;
                parent_fd = open_parent(path, &base);
                if (parent_fd < 0)
                        return job_failure(failure, PROTO_F_IO, "cannot open the directory of %s: %s",
                                           path, strerror(-parent_fd));
                /* Unique among this daemon's transfers; O_EXCL refuses anything else's. */
                snprintf(tmp, sizeof(tmp), ".%s.%d.%lu.part", base, (int) getpid(),
                         atomic_fetch_add(&counter, 1));
                t.fd = openat(parent_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                              0644);
                if (t.fd < 0)
                        return job_failure(failure, PROTO_F_IO, "cannot create %s: %m", path);
        }

        t.h = curl_easy_init();
        if (!t.h) {
                r = job_failure(failure, PROTO_F_INTERNAL, "out of memory");
                goto out;
        }
        curl_easy_setopt(t.h, CURLOPT_URL, url);
        curl_easy_setopt(t.h, CURLOPT_SHARE, share);
        curl_easy_setopt(t.h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(t.h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(t.h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(t.h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(t.h, CURLOPT_MAXREDIRS, (long) max_redirects);
        /* At least 1 ms: 0 would mean no timeout at all, and download_check() admits 0.0001 s. */
        curl_easy_setopt(t.h, CURLOPT_TIMEOUT_MS, MAX((long) (timeout * 1000.0), 1L));
        curl_easy_setopt(t.h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) t.max_bytes);
        curl_easy_setopt(t.h, CURLOPT_USERAGENT, "futured/" "0.1");
        curl_easy_setopt(t.h, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(t.h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(t.h, CURLOPT_HEADERDATA, &t);
        curl_easy_setopt(t.h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(t.h, CURLOPT_WRITEDATA, &t);
        curl_easy_setopt(t.h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(t.h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(t.h, CURLOPT_XFERINFODATA, &t);

        rc = perform(t.h, ctx);
        curl_easy_getinfo(t.h, CURLINFO_RESPONSE_CODE, &http);
        curl_easy_getinfo(t.h, CURLINFO_CONTENT_TYPE, &content_type);
        if (rc < 0 || rc == CURLE_ABORTED_BY_CALLBACK)
                r = job_failure(failure, PROTO_F_CANCELLED, "the download was cancelled");
        else if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED)
                r = job_failure(failure, PROTO_F_TOO_LARGE, "the body is larger than %llu bytes",
                                (unsigned long long) t.max_bytes);
        else if (t.write_errno)
                r = job_failure(failure, PROTO_F_IO, "cannot write %s: %s", path ? path : "the body",
                                strerror(t.write_errno));
        else if (rc == CURLE_OPERATION_TIMEDOUT)
                r = job_failure(failure, PROTO_F_TIMEOUT, "no complete answer within %.3g s: %s",
                                timeout, errbuf);
        else if (rc == CURLE_TOO_MANY_REDIRECTS)
                r = job_failure(failure, PROTO_F_TOO_MANY_REDIRECTS, "more than %llu redirects",
                                (unsigned long long) max_redirects);
        else if (rc == CURLE_UNSUPPORTED_PROTOCOL)
                r = job_failure(failure, PROTO_F_BAD_URL, "redirected to a URL that is not http or https: %s",
                                errbuf);
        else if (rc != CURLE_OK)
                r = job_failure(failure, PROTO_F_CONNECTION, "%s: %s", curl_easy_strerror(rc), errbuf);
        else if (http != 404 && (http < 200 || http > 299)) {
                r = job_failure(failure, PROTO_F_HTTP_ERROR, "HTTP error %ld - %s", http, t.reason);
                failure->http_status = (int) http;
        }
        if (r < 0)
                goto out;

        bool found = http != 404;
        if (t.fd >= 0 && found) {
                if (close(t.fd) < 0) {
                        t.fd = -1;
                        r = job_failure(failure, PROTO_F_IO, "cannot write %s: %m", path);
                        goto out;
                }
                t.fd = -1;
                if (renameat(parent_fd, tmp, parent_fd, base) < 0) {
                        r = job_failure(failure, PROTO_F_IO, "cannot rename into %s: %m", path);
                        goto out;
                }
                tmp[0] = 0;
        }
        msgpack_pack_map(pk, 6 + found);
        pack_kv_str(pk, "url", url);
        pack_kv_str(pk, "status", found ? "ok" : "not_found");
        proto_pack_str(pk, "http_status");
        msgpack_pack_int(pk, (int) http);
        proto_pack_str(pk, "bytes");
        msgpack_pack_uint64(pk, found ? t.bytes : 0);
        pack_kv_str(pk, "content_type", content_type);
        proto_pack_str(pk, "elapsed");
        msgpack_pack_double(pk, now_seconds() - start);
        if (found && path)
                pack_kv_str(pk, "path", path);
        else if (found) {
                proto_pack_str(pk, "body");
                msgpack_pack_bin(pk, t.bytes);
                msgpack_pack_bin_body(pk, t.body, t.bytes);
        }
out:
        if (t.fd >= 0)
                close(t.fd);
        if (tmp[0])
                (void) unlinkat(parent_fd, tmp, 0);
        if (t.h)
                curl_easy_cleanup(t.h);
        free(t.body);
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
        .pool = POOL_THREAD,
        .params = download_params,
        .check = download_check,
        .run = download_run,
};
