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

int proto_error(ProtoError *e, const char *code, const char *field, const char *fmt, ...) {
        va_list ap;

        e->code = code;
        e->field = field;
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
        va_end(ap);
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
        for (uint32_t i = 0; i < map->via.map.size; i++) {
                const msgpack_object *key = &map->via.map.ptr[i].key;
                bool found = false;

                if (key->type != MSGPACK_OBJECT_STR)
                        return proto_error(e, PROTO_E_BAD_REQUEST, NULL, "map keys must be strings");
                for (const char *const *a = allowed; *a && !found; a++)
                        found = str_is(&key->via.str, *a, strlen(*a));
                if (!found) {
                        size_t n = key->via.str.size < PROTO_MAX_GROUP ? key->via.str.size
                                                                       : PROTO_MAX_GROUP;
                        memcpy(e->field_buf, key->via.str.ptr, n);
                        e->field_buf[n] = 0;
                        return proto_error(e, PROTO_E_UNKNOWN_FIELD, e->field_buf,
                                           "unknown field '%s'", e->field_buf);
                }
        }
        return 0;
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
