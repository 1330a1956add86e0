/* Fuzz target: frame_parse(), the daemon's reader of what futured-worker processes send. A frame
 * that parses must describe itself consistently: its payload lies inside the frame and is itself
 * one msgpack map. */
#include <stdlib.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FrameHeader h;
        size_t end;

        if (frame_parse(data, size, &h) < 0)
                return 0;
        if (h.payload < data || h.payload + h.payload_len != data + size || h.payload_len == 0)
                abort();
        if ((h.payload[0] & 0xf0) != 0x80 && h.payload[0] != 0xde && h.payload[0] != 0xdf)
                abort();
        if (proto_msgpack_check(h.payload, h.payload_len, PROTO_MAX_DEPTH, &end) < 0 ||
            end != h.payload_len || (h.hello == 0) == (h.job == 0))
                abort();
        return 0;
}
