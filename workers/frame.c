/* frame: see frame.h. */
#include <errno.h>
#include <string.h>

#include "frame.h"
#include "proto.h"

void frame_pack_job(msgpack_sbuffer *sbuf, uint64_t job, const char *kind, const void *args,
                    size_t args_len) {
        msgpack_packer pk;

        msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 2);
        proto_pack_str(&pk, "job");
        msgpack_pack_uint64(&pk, job);
        proto_pack_str(&pk, "kind");
        proto_pack_str(&pk, kind);
        msgpack_sbuffer_write(sbuf, args, args_len);
}

void frame_pack_reply_header(msgpack_packer *pk, uint64_t job, bool ok) {
        msgpack_pack_map(pk, 2);
        proto_pack_str(pk, "job");
        msgpack_pack_uint64(pk, job);
        proto_pack_str(pk, "ok");
        if (ok)
                msgpack_pack_true(pk);
        else
                msgpack_pack_false(pk);
}

static void pack_int_field(msgpack_packer *pk, const char *key, int v) {
        if (v) {
                proto_pack_str(pk, key);
                msgpack_pack_int(pk, v);
        }
}

void frame_pack_failure(msgpack_packer *pk, const JobFailure *f) {
        msgpack_pack_map(pk, 2 + (f->signal != 0) + (f->exit_status != 0) + (f->http_status != 0) +
                                     2 * (f->rule[0] != 0));
        proto_pack_str(pk, "code");
        proto_pack_str(pk, f->code ? f->code : PROTO_F_INTERNAL);
        proto_pack_str(pk, "message");
        proto_pack_str(pk, f->message);
        pack_int_field(pk, "signal", f->signal);
        pack_int_field(pk, "exit_status", f->exit_status);
        pack_int_field(pk, "http_status", f->http_status);
        if (f->rule[0]) {
                proto_pack_str(pk, "rule");
                proto_pack_str(pk, f->rule);
                proto_pack_str(pk, "address");
                proto_pack_str(pk, f->address);
        }
}

int frame_parse(const uint8_t *buf, size_t len, FrameHeader *ret) {
        msgpack_unpacked head, body;
        const msgpack_object *o;
        size_t off = 0, payload_off, head_len, body_len;
        int r = -EBADMSG;

        if (len == 0 || len > FRAME_MAX)
                return -EBADMSG;
        /* A worker is another process, and may be broken: the pre-scan keeps msgpack-c from
         * allocating by lengths the frame declares but does not hold. */
        if (proto_msgpack_check(buf, len, PROTO_MAX_DEPTH, &head_len) < 0 ||
            proto_msgpack_check(buf + head_len, len - head_len, PROTO_MAX_DEPTH, &body_len) < 0 ||
            head_len + body_len != len)
                return -EBADMSG;
        msgpack_unpacked_init(&head);
        msgpack_unpacked_init(&body);
        *ret = (FrameHeader){};
        if (msgpack_unpack_next(&head, (const char *) buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
            head.data.type != MSGPACK_OBJECT_MAP)
                goto out;
        payload_off = off;
        if (msgpack_unpack_next(&body, (const char *) buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
            body.data.type != MSGPACK_OBJECT_MAP || off != len)
                goto out;

        if ((o = proto_map_get(&head.data, "hello"))) {
                if (proto_get_uint(o, &ret->hello) < 0 || ret->hello == 0)
                        goto out;
        } else if (proto_get_uint(proto_map_get(&head.data, "job"), &ret->job) < 0 || ret->job == 0)
                goto out;
        if ((o = proto_map_get(&head.data, "ok")) && proto_get_bool(o, &ret->ok) < 0)
                goto out;
        if ((o = proto_map_get(&head.data, "kind"))) {
                if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof(ret->kind))
                        goto out;
                memcpy(ret->kind, o->via.str.ptr, o->via.str.size);
                ret->kind[o->via.str.size] = 0;
        }
        ret->payload = buf + payload_off;
        ret->payload_len = len - payload_off;
        r = 0;
out:
        msgpack_unpacked_destroy(&head);
        msgpack_unpacked_destroy(&body);
        return r;
}
