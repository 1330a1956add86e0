/* json: msgpack to JSON text. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

void json_print_string(FILE *f, const char *s, size_t len) {
        fputc('"', f);
        for (size_t i = 0; i < len; i++) {
                unsigned char ch = (unsigned char) s[i];
                switch (ch) {
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '\r':
                        fputs("\\r", f);
                        break;
                case '\t':
                        fputs("\\t", f);
                        break;
                default:
                        if (ch < 0x20)
                                fprintf(f, "\\u%04x", ch);
                        else
                                fputc(ch, f);
                }
        }
        fputc('"', f);
}

static void print_base64(FILE *f, const unsigned char *p, size_t len) {
        static const char digits[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

        fputc('"', f);
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                if (i + 1 < len)
                        v |= (uint32_t) p[i + 1] << 8;
                if (i + 2 < len)
                        v |= p[i + 2];
                fputc(digits[(v >> 18) & 63], f);
                fputc(digits[(v >> 12) & 63], f);
                fputc(i + 1 < len ? digits[(v >> 6) & 63] : '=', f);
                fputc(i + 2 < len ? digits[v & 63] : '=', f);
        }
        fputc('"', f);
}

void json_print(FILE *f, const msgpack_object *o) {
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                fputs("null", f);
                break;
        case MSGPACK_OBJECT_BOOLEAN:
                fputs(o->via.boolean ? "true" : "false", f);
                break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                fprintf(f, "%" PRIu64, o->via.u64);
                break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                fprintf(f, "%" PRId64, o->via.i64);
                break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                if (isfinite(o->via.f64)) {
                        /* The shortest of 15 and 17 digits that reads back the same. */
                        char buf[40];
                        snprintf(buf, sizeof buf, "%.15g", o->via.f64);
                        if (strtod(buf, NULL) != o->via.f64)
                                snprintf(buf, sizeof buf, "%.17g", o->via.f64);
                        fputs(buf, f);
                        if (!strpbrk(buf, ".eEn"))
                                fputs(".0", f);
                } else
                        fputs("null", f);
                break;
        case MSGPACK_OBJECT_STR:
                json_print_string(f, o->via.str.ptr, o->via.str.size);
                break;
        case MSGPACK_OBJECT_BIN:
                print_base64(f, (const unsigned char *) o->via.bin.ptr, o->via.bin.size);
                break;
        case MSGPACK_OBJECT_EXT:
                fputs("null", f);
                break;
        case MSGPACK_OBJECT_ARRAY:
                fputc('[', f);
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        if (i)
                                fputc(',', f);
                        json_print(f, &o->via.array.ptr[i]);
                }
                fputc(']', f);
                break;
        case MSGPACK_OBJECT_MAP:
                fputc('{', f);
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        const msgpack_object *k = &o->via.map.ptr[i].key;
                        if (i)
                                fputc(',', f);
                        if (k->type == MSGPACK_OBJECT_STR)
                                json_print_string(f, k->via.str.ptr, k->via.str.size);
                        else {
                                fputc('"', f);
                                json_print(f, k);
                                fputc('"', f);
                        }
                        fputc(':', f);
                        json_print(f, &o->via.map.ptr[i].val);
                }
                fputc('}', f);
                break;
        }
}

void json_print_packed(FILE *f, const void *buf, size_t len) {
        msgpack_unpacked u;

        msgpack_unpacked_init(&u);
        if (buf && msgpack_unpack_next(&u, buf, len, NULL) == MSGPACK_UNPACK_SUCCESS)
                json_print(f, &u.data);
        else
                fputs("null", f);
        msgpack_unpacked_destroy(&u);
}
