/* Unit test of the worker frames: what one side packs the other parses, and malformed frames
 * (truncated, trailing bytes, wrong types) are refused. */
#include <errno.h>
#include <string.h>

#include "frame.h"
#include "proto.h"
#include "test.h"

int main(void) {
        msgpack_sbuffer sbuf, args;
        msgpack_packer pk;
        FrameHeader h;

        msgpack_sbuffer_init(&args);
        msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        proto_pack_str(&pk, "n");
        msgpack_pack_uint64(&pk, 97);

        msgpack_sbuffer_init(&sbuf);
        frame_pack_job(&sbuf, 42, "prime", args.data, args.size);
        REQUIRE(frame_parse((uint8_t *) sbuf.data, sbuf.size, &h) == 0);
        CHECK(h.job == 42 && strcmp(h.kind, "prime") == 0);
        CHECK(h.payload_len == args.size && memcmp(h.payload, args.data, args.size) == 0);
        CHECK(frame_parse((uint8_t *) sbuf.data, sbuf.size - 1, &h) < 0);
        msgpack_sbuffer_write(&sbuf, "\x01", 1);
        CHECK(frame_parse((uint8_t *) sbuf.data, sbuf.size, &h) < 0);

        sbuf.size = 0;
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        frame_pack_reply_header(&pk, 7, false);
        frame_pack_failure(&pk, &(JobFailure){ .code = "timeout", .message = "too slow" });
        REQUIRE(frame_parse((uint8_t *) sbuf.data, sbuf.size, &h) == 0);
        CHECK(h.job == 7 && !h.ok);

        /* A header whose job is not an unsigned integer. */
        sbuf.size = 0;
        msgpack_pack_map(&pk, 1);
        proto_pack_str(&pk, "job");
        proto_pack_str(&pk, "seven");
        msgpack_pack_map(&pk, 0);
        CHECK(frame_parse((uint8_t *) sbuf.data, sbuf.size, &h) < 0);
        /* A payload that is not a map. */
        sbuf.size = 0;
        frame_pack_reply_header(&pk, 7, true);
        msgpack_pack_array(&pk, 0);
        CHECK(frame_parse((uint8_t *) sbuf.data, sbuf.size, &h) < 0);
        CHECK(frame_parse((const uint8_t *) "", 0, &h) < 0);

        msgpack_sbuffer_destroy(&sbuf);
        msgpack_sbuffer_destroy(&args);
        /* Declared lengths the frame does not hold are refused before msgpack-c allocates by
         * them: a header, then a map claiming 2^32 - 1 pairs in 5 bytes. */
        CHECK(frame_parse((const uint8_t *) "\x81\xa3job\x01\xdf\xff\xff\xff\xff", 11, &h) ==
              -EBADMSG);
        CHECK(frame_parse((const uint8_t *) "\x81\xa3job\x01\x80", 7, &h) == 0 && h.job == 1);
        return test_end();
}
