/* proto: see proto.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "proto.h"

static const char *const state_names[_STATE_MAX] = {
        [STATE_PENDING] = "pending",     [STATE_RUNNING] = "running", [STATE_DONE] = "done",
        [STATE_FAILED] = "failed",       [STATE_CANCELLED] = "cancelled",
        [STATE_EXPIRED] = "expired",     [STATE_UNKNOWN] = "unknown",
};

const char *proto_state_name(FutureState s) {
        if ((unsigned) s >= _STATE_MAX)
                return "unknown";
        return state_names[s];
}

int proto_state_from_name(const char *name, size_t len) {
        for (int i = 0; i < _STATE_MAX; i++)
                if (strlen(state_names[i]) == len && memcmp(state_names[i], name, len) == 0)
                        return i;
        return -EINVAL;
}

/* The length of the one valid UTF-8 character that starts `s` (`left` bytes available), or 0 when
 * the bytes there are not one (RFC 3629, table 3-7 of the Unicode standard). */
static size_t utf8_char_len(const uint8_t *s, size_t left) {
        uint8_t c = s[0], lo = 0x80, hi = 0xbf;
        size_t n;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                n = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                n = 3;
                if (c == 0xe0)
                        lo = 0xa0; /* overlong */
                else if (c == 0xed)
                        hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
                n = 4;
                if (c == 0xf0)
                        lo = 0x90; /* overlong */
                else if (c == 0xf4)
                        hi = 0x8f; /* over U+10FFFF */
        } else
                return 0;
        if (left < n || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
        return n;
}

bool proto_utf8_valid(const char *s, size_t len) {
        const uint8_t *p = (const uint8_t *) s;

        for (size_t i = 0, n; i < len; i += n) {
                /* Runs of ASCII are the common case: take them a byte at a time without the call. */
                if (p[i] < 0x80) {
                        n = 1;
                        continue;
                }
                n = utf8_char_len(p + i, len - i);
                if (n == 0)
                        return false;
        }
        return true;
}

size_t proto_utf8_prefix(const char *s, size_t len, size_t max) {
        if (len <= max)
                return len;
        while (max > 0 && ((uint8_t) s[max] & 0xc0) == 0x80)
                max--;
        return max;
}

bool proto_is_text(const msgpack_object *o) {
        return o && o->type == MSGPACK_OBJECT_STR && proto_utf8_valid(o->via.str.ptr, o->via.str.size);
}

void proto_utf8_repair(char *buf, size_t size, int n) {
        size_t len;

        if (n < 0) {
                buf[0] = 0;
                return;
        }
        if ((size_t) n >= size) {
                /* Cut short: drop a character the cut split, rather than turn it into '?'s. */
                size_t end = size - 1, lead = end;
                while (lead > 0 && end - lead < 3 && ((uint8_t) buf[lead - 1] & 0xc0) == 0x80)
                        lead--;
                if (lead > 0 && utf8_char_len((const uint8_t *) buf + lead - 1, end - lead + 1) == 0)
                        buf[lead - 1] = 0;
        }
        len = strlen(buf);
        for (size_t i = 0, k; i < len; i += k) {
                k = utf8_char_len((const uint8_t *) buf + i, len - i);
                if (k == 0) {
                        buf[i] = '?';
                        k = 1;
                }
        }
}

int proto_error(ProtoError *e, const char *code, const char *field, const char *fmt, ...) {
        va_list ap;
        int n;

        e->code = code;
        e->field = field;
        va_start(ap, fmt);
        n = vsnprintf(e->message, sizeof(e->message), fmt, ap);
        va_end(ap);
        proto_utf8_repair(e->message, sizeof(e->message), n);
        return -EINVAL;
}

static bool str_is(const msgpack_object_str *s, const char *key, size_t keylen) {
        return s->size == keylen && memcmp(s->ptr, key, keylen) == 0;
}

const msgpack_object *proto_map_get(const msgpack_object *map, const char *key) {
        size_t keylen = strlen(key);

        if (!map || map->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < map->via.map.size; i++) {
                const msgpack_object_kv *kv = &map->via.map.ptr[i];
                if (kv->key.type == MSGPACK_OBJECT_STR && str_is(&kv->key.via.str, key, keylen))
                        return &kv->val;
        }
        return NULL;
}

bool proto_str_eq(const msgpack_object *o, const char *s) {
        return o && o->type == MSGPACK_OBJECT_STR && str_is(&o->via.str, s, strlen(s));
}

int proto_get_uint(const msgpack_object *o, uint64_t *ret) {
        if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return -EINVAL;
        *ret = o->via.u64;
        return 0;
}

int proto_get_int(const msgpack_object *o, int64_t *ret) {
        if (!o)
                return -EINVAL;
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                *ret = o->via.i64;
                return 0;
        }
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
                *ret = (int64_t) o->via.u64;
                return 0;
        }
        return -EINVAL;
}

int proto_get_number(const msgpack_object *o, double *ret) {
        if (!o)
                return -EINVAL;
        switch (o->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                *ret = (double) o->via.u64;
                return 0;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                *ret = (double) o->via.i64;
                return 0;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                if (!isfinite(o->via.f64))
                        return -EINVAL;
                *ret = o->via.f64;
                return 0;
        default:
                return -EINVAL;
        }
}

int proto_get_bool(const msgpack_object *o, bool *ret) {
        if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
                return -EINVAL;
        *ret = o->via.boolean;
        return 0;
}

char *proto_strdup(const msgpack_object *o, size_t max) {
        if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size > max ||
            memchr(o->via.str.ptr, 0, o->via.str.size))
                return NULL;
        return strndup(o->via.str.ptr, o->via.str.size);
}

int proto_check_fields(const msgpack_object *map, const char *const *allowed, ProtoError *e) {
        uint64_t seen = 0;

        for (uint32_t i = 0; i < map->via.map.size; i++) {
                const msgpack_object *key = &map->via.map.ptr[i].key;
                size_t a = 0;

                if (!proto_is_text(key))
                        return proto_error(e, PROTO_E_BAD_REQUEST, NULL,
                                           "map keys must be UTF-8 strings");
                while (allowed[a] && !str_is(&key->via.str, allowed[a], strlen(allowed[a])))
                        a++;
                if (allowed[a] && a < 64 && (seen & (UINT64_C(1) << a)))
                        return proto_error(e, PROTO_E_BAD_REQUEST, allowed[a],
                                           "field '%s' is given twice", allowed[a]);
                if (allowed[a]) {
                        seen |= a < 64 ? UINT64_C(1) << a : 0;
                        continue;
                }
                size_t n = proto_utf8_prefix(key->via.str.ptr, key->via.str.size, PROTO_MAX_QUOTE);
                if (n > 0) /* an empty key's pointer is NULL: memcpy must not see it */
                        memcpy(e->field_buf, key->via.str.ptr, n);
                e->field_buf[n] = 0;
                return proto_error(e, PROTO_E_UNKNOWN_FIELD, e->field_buf, "unknown field '%s'",
                                   e->field_buf);
        }
        return 0;
}

/* Reads the header of the msgpack value that starts `p` (`left` > 0 bytes available): how many
 * bytes the header takes (*ret_head), how many more its body takes (str, bin, ext payloads and
 * fixed-size numbers: *ret_body) and how many values follow as its elements (arrays n, maps 2n:
 * *ret_children). Returns 0, or -EBADMSG for 0xc1 or a header cut short. */
static int msgpack_head(const uint8_t *p, size_t left, size_t *ret_head, uint64_t *ret_body,
                        uint64_t *ret_children) {
        /* For 0xc4..0xdf: the bytes of the length field (0: none), the fixed body size, and
         * whether the length counts elements (1: array, 2: map) rather than body bytes. */
        static const struct {
                uint8_t len_bytes, fixed, per_child;
        } t[] = {
                [0xc4 - 0xc4] = { 1, 0, 0 }, [0xc5 - 0xc4] = { 2, 0, 0 }, /* bin */
                [0xc6 - 0xc4] = { 4, 0, 0 },
                [0xc7 - 0xc4] = { 1, 1, 0 }, [0xc8 - 0xc4] = { 2, 1, 0 }, /* ext: + type byte */
                [0xc9 - 0xc4] = { 4, 1, 0 },
                [0xca - 0xc4] = { 0, 4, 0 }, [0xcb - 0xc4] = { 0, 8, 0 }, /* float */
                [0xcc - 0xc4] = { 0, 1, 0 }, [0xcd - 0xc4] = { 0, 2, 0 }, /* uint */
                [0xce - 0xc4] = { 0, 4, 0 }, [0xcf - 0xc4] = { 0, 8, 0 },
                [0xd0 - 0xc4] = { 0, 1, 0 }, [0xd1 - 0xc4] = { 0, 2, 0 }, /* int */
                [0xd2 - 0xc4] = { 0, 4, 0 }, [0xd3 - 0xc4] = { 0, 8, 0 },
                [0xd4 - 0xc4] = { 0, 2, 0 }, [0xd5 - 0xc4] = { 0, 3, 0 }, /* fixext */
                [0xd6 - 0xc4] = { 0, 5, 0 }, [0xd7 - 0xc4] = { 0, 9, 0 },
                [0xd8 - 0xc4] = { 0, 17, 0 },
                [0xd9 - 0xc4] = { 1, 0, 0 }, [0xda - 0xc4] = { 2, 0, 0 }, /* str */
                [0xdb - 0xc4] = { 4, 0, 0 },
                [0xdc - 0xc4] = { 2, 0, 1 }, [0xdd - 0xc4] = { 4, 0, 1 }, /* array */
                [0xde - 0xc4] = { 2, 0, 2 }, [0xdf - 0xc4] = { 4, 0, 2 }, /* map */
        };
        uint8_t c = p[0];
        uint64_t n = 0;

        *ret_head = 1;
        *ret_body = *ret_children = 0;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
                return 0;
        if (c <= 0x8f) {
                *ret_children = 2u * (c & 0x0f);
                return 0;
        }
        if (c <= 0x9f) {
                *ret_children = c & 0x0f;
                return 0;
        }
        if (c <= 0xbf) {
                *ret_body = c & 0x1f;
                return 0;
        }
        if (c == 0xc1)
                return -EBADMSG;
        if (left < 1u + t[c - 0xc4].len_bytes)
                return -EBADMSG;
        for (unsigned i = 0; i < t[c - 0xc4].len_bytes; i++)
                n = n << 8 | p[1 + i];
        *ret_head = 1u + t[c - 0xc4].len_bytes;
        if (t[c - 0xc4].per_child)
                *ret_children = n * t[c - 0xc4].per_child;
        else
                *ret_body = n + t[c - 0xc4].fixed;
        return 0;
}

int proto_msgpack_check(const void *buf, size_t len, unsigned max_depth, size_t *ret_end) {
        const uint8_t *p = buf;
        uint64_t owed[65]; /* values still owed by each open container; [0]: the one top value */
        uint64_t total = 1; /* their sum: each needs at least one more byte */
        unsigned depth = 1; /* open levels in owed[] */
        size_t pos = 0;

        max_depth = MIN(max_depth, (unsigned) ELEMENTSOF(owed) - 1);
        owed[0] = 1;
        while (depth > 0) {
                size_t head;
                uint64_t body, children;
                uint8_t c;

                if (owed[depth - 1] == 0) {
                        depth--;
                        continue;
                }
                owed[depth - 1]--;
                total--;
                if (pos >= len || msgpack_head(p + pos, len - pos, &head, &body, &children) < 0)
                        return -EBADMSG;
                c = p[pos];
                pos += head;
                if (body > len - pos)
                        return -EBADMSG;
                pos += body;
                if (total > len - pos)
                        return -EBADMSG; /* the values still owed cannot fit */
                if ((c >= 0x80 && c <= 0x9f) || (c >= 0xdc && c <= 0xdf)) {
                        /* A container: `depth` open levels means it sits at nesting depth `depth`. */
                        if (depth > max_depth)
                                return -ELOOP;
                        if (children > len - pos - total)
                                return -EBADMSG;
                        total += children;
                        owed[depth++] = children;
                }
        }
        if (ret_end)
                *ret_end = pos;
        return 0;
}

int proto_msgpack_peek_uint(const void *buf, size_t len, const char *key, uint64_t *ret) {
        const uint8_t *p = buf;
        size_t keylen = strlen(key), pos, head, end;
        uint64_t body, children, n_pairs;

        if (len == 0 || msgpack_head(p, len, &head, &body, &children) < 0 ||
            !((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
                return -ENOENT;
        pos = head;
        n_pairs = children / 2;
        for (uint64_t i = 0; i < n_pairs && pos < len; i++) {
                bool is_str = (p[pos] >= 0xa0 && p[pos] <= 0xbf) || (p[pos] >= 0xd9 && p[pos] <= 0xdb);
                bool match = false;

                if (is_str && msgpack_head(p + pos, len - pos, &head, &body, &children) == 0 &&
                    body == keylen && head + body <= len - pos)
                        match = memcmp(p + pos + head, key, keylen) == 0;
                if (proto_msgpack_check(p + pos, len - pos, PROTO_MAX_DEPTH, &end) < 0)
                        return -ENOENT;
                pos += end;
                if (match) {
                        uint8_t c = pos < len ? p[pos] : 0xc1;
                        uint64_t v = 0;
                        if (c <= 0x7f) {
                                *ret = c;
                                return 0;
                        }
                        if (c < 0xcc || c > 0xcf ||
                            msgpack_head(p + pos, len - pos, &head, &body, &children) < 0 ||
                            body > len - pos - 1)
                                return -ENOENT;
                        for (uint64_t b = 0; b < body; b++)
                                v = v << 8 | p[pos + 1 + b];
                        *ret = v;
                        return 0;
                }
                if (proto_msgpack_check(p + pos, len - pos, PROTO_MAX_DEPTH, &end) < 0)
                        return -ENOENT;
                pos += end;
        }
        return -ENOENT;
}

void proto_pack_strn(msgpack_packer *pk, const char *s, size_t len) {
        msgpack_pack_str(pk, len);
        msgpack_pack_str_body(pk, s, len);
}

void proto_pack_str(msgpack_packer *pk, const char *s) {
        proto_pack_strn(pk, s, strlen(s));
}

#define PROTO_SYSTEM_ENDPOINT "ipc:///run/futured/futured.sock"

char *proto_default_endpoint(void) {
        const char *runtime = getenv("XDG_RUNTIME_DIR");
        char *s;

        if (geteuid() != 0 && runtime && runtime[0] == '/') {
                if (asprintf(&s, "ipc://%s/futured/futured.sock", runtime) < 0)
                        return NULL;
                return s;
        }
        return strdup(PROTO_SYSTEM_ENDPOINT);
}

char *proto_client_endpoint(void) {
        char *s = proto_default_endpoint();
        struct stat st;

        if (!s || strcmp(s, PROTO_SYSTEM_ENDPOINT) == 0 || stat(s + 6, &st) == 0)
                return s;
        free(s);
        return strdup(PROTO_SYSTEM_ENDPOINT);
}

uint8_t *proto_sbuffer_take(msgpack_sbuffer *sbuf) {
        uint8_t *copy = malloc(sbuf->size ? sbuf->size : 1);

        if (copy && sbuf->size)
                memcpy(copy, sbuf->data, sbuf->size);
        msgpack_sbuffer_destroy(sbuf);
        msgpack_sbuffer_init(sbuf); /* empty again: destroying it once more is harmless */
        return copy;
}

void proto_buf_deinit(ProtoBuf *b) {
        if (b->data != b->small)
                free(b->data);
        proto_buf_init(b);
}

int proto_buf_write(void *data, const char *buf, size_t len) {
        ProtoBuf *b = data;

        if (len > b->cap - b->size) {
                size_t cap = b->cap * 2;
                char *p;
                while (cap - b->size < len)
                        cap *= 2;
                p = b->data == b->small ? malloc(cap) : realloc(b->data, cap);
                if (!p) {
                        b->failed = true;
                        return -1;
                }
                if (b->data == b->small)
                        memcpy(p, b->small, b->size);
                b->data = p;
                b->cap = cap;
        }
        memcpy(b->data + b->size, buf, len);
        b->size += len;
        return 0;
}

uint8_t *proto_buf_dup(const ProtoBuf *b) {
        uint8_t *copy = malloc(b->size ? b->size : 1);

        if (copy && b->size)
                memcpy(copy, b->data, b->size);
        return copy;
}
