/* Fuzz target: proto's checks of untrusted bytes against msgpack-c itself. Whatever the
 * pre-scan (proto_msgpack_check) accepts, msgpack-c decodes, ending where the pre-scan said, with
 * at most one object per byte of input; whatever the UTF-8 validator accepts, every prefix cut
 * by proto_utf8_prefix is valid too; and the id peek never reads past its window. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Counts the objects of `o` (its elements, recursively) up to `limit`. */
static size_t count_objects(const msgpack_object *o, size_t limit) {
        size_t n = 1;

        if (o->type == MSGPACK_OBJECT_ARRAY)
                for (uint32_t i = 0; i < o->via.array.size && n <= limit; i++)
                        n += count_objects(&o->via.array.ptr[i], limit);
        else if (o->type == MSGPACK_OBJECT_MAP)
                for (uint32_t i = 0; i < o->via.map.size && n <= limit; i++)
                        n += count_objects(&o->via.map.ptr[i].key, limit) +
                             count_objects(&o->via.map.ptr[i].val, limit);
        return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *s = (const char *) data;
        size_t end = 0, off = 0;
        uint64_t id;

        if (proto_msgpack_check(data, size, PROTO_MAX_DEPTH, &end) == 0) {
                msgpack_unpacked msg;
                msgpack_unpack_return r;

                if (end == 0 || end > size)
                        abort();
                msgpack_unpacked_init(&msg);
                r = msgpack_unpack_next(&msg, s, end, &off);
                /* msgpack-c has its own nesting limit (32 open containers): beyond it a parse
                 * error, never a crash or a wrong end. */
                if (r == MSGPACK_UNPACK_SUCCESS && (off != end || count_objects(&msg.data, end) > end))
                        abort();
                if (r != MSGPACK_UNPACK_SUCCESS && r != MSGPACK_UNPACK_PARSE_ERROR)
                        abort();
                msgpack_unpacked_destroy(&msg);
        }
        (void) proto_msgpack_peek_uint(data, size, "id", &id);

        if (proto_utf8_valid(s, size))
                for (size_t max = 0; max <= size && max < 80; max++) {
                        size_t n = proto_utf8_prefix(s, size, max);
                        if (n > max || !proto_utf8_valid(s, n))
                                abort();
                }
        return 0;
}
