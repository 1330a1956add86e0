/* kind: the registry's lookup and the generic argument checks. The tables themselves live with
 * the executables (see kind.h). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kind.h"
#include "macro.h"

const char *pool_name(PoolType pool) {
        static const char *const names[_POOL_MAX] = {
                [POOL_THREAD] = "thread",
                [POOL_PROCESS] = "process",
                [POOL_TRANSFER] = "transfer",
        };
        return names[pool];
}

const JobKind *kind_lookup(const JobKind *const *table, const char *name, size_t len) {
        for (size_t i = 0; table[i]; i++)
                if (strlen(table[i]->name) == len && memcmp(table[i]->name, name, len) == 0)
                        return table[i];
        return NULL;
}

static const JobParam *param_find(const JobKind *kind, const msgpack_object *key) {
        if (key->type != MSGPACK_OBJECT_STR)
                return NULL;
        for (const JobParam *p = kind->params; p && p->name; p++)
                if (strlen(p->name) == key->via.str.size &&
                    memcmp(p->name, key->via.str.ptr, key->via.str.size) == 0)
                        return p;
        return NULL;
}

/* True if `o` holds a value of type `t`. A float parameter takes integers too; a uint parameter
 * takes only msgpack's positive integers, so -1, 1.5 and 1e30 are all refused. */
static bool param_type_ok(ParamType t, const msgpack_object *o) {
        switch (t) {
        case PARAM_UINT:
                return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        case PARAM_FLOAT:
                if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
                        return isfinite(o->via.f64);
                return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                       o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
        case PARAM_STR:
                return o->type == MSGPACK_OBJECT_STR;
        case PARAM_BOOL:
                return o->type == MSGPACK_OBJECT_BOOLEAN;
        }
        return false;
}

static const char *param_type_name(ParamType t) {
        static const char *const names[] = {
                [PARAM_UINT] = "an unsigned integer",
                [PARAM_FLOAT] = "a number",
                [PARAM_STR] = "a string",
                [PARAM_BOOL] = "a boolean",
        };
        return names[t];
}

int kind_validate(const JobKind *kind, const msgpack_object *args, ProtoError *e) {
        static const msgpack_object empty = { .type = MSGPACK_OBJECT_MAP };

        if (!args)
                args = &empty;
        if (args->type != MSGPACK_OBJECT_MAP)
                return proto_error(e, PROTO_E_BAD_ARGS, "args", "'args' must be a map");

        for (uint32_t i = 0; i < args->via.map.size; i++) {
                const msgpack_object_kv *kv = &args->via.map.ptr[i];
                const JobParam *p = param_find(kind, &kv->key);

                if (!p) {
                        if (kv->key.type != MSGPACK_OBJECT_STR)
                                return proto_error(e, PROTO_E_BAD_ARGS, "args",
                                                   "argument names must be strings");
                        return proto_error(e, PROTO_E_BAD_ARGS, "args",
                                           "kind '%s' has no argument '%.*s'", kind->name,
                                           (int) proto_utf8_prefix(kv->key.via.str.ptr,
                                                                   kv->key.via.str.size,
                                                                   PROTO_MAX_QUOTE),
                                           kv->key.via.str.ptr);
                }
                if (!param_type_ok(p->type, &kv->val))
                        return proto_error(e, PROTO_E_BAD_ARGS, p->name,
                                           "argument '%s' must be %s", p->name,
                                           param_type_name(p->type));
        }
        for (const JobParam *p = kind->params; p && p->name; p++)
                if (p->required && !proto_map_get(args, p->name))
                        return proto_error(e, PROTO_E_BAD_ARGS, p->name,
                                           "kind '%s' needs argument '%s'", kind->name, p->name);
        return kind->check ? kind->check(args, e) : 0;
}

int job_failure(JobFailure *f, const char *code, const char *fmt, ...) {
        va_list ap;
        int n;

        f->code = code;
        va_start(ap, fmt);
        n = vsnprintf(f->message, sizeof f->message, fmt, ap);
        va_end(ap);
        /* Messages quote servers (an HTTP reason phrase) and paths: they go out as a str. */
        proto_utf8_repair(f->message, sizeof f->message, n);
        return -EIO;
}
