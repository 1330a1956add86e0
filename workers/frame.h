/* frame: the messages between the daemon and a futured-worker process.
 *
 * A frame is one SOCK_SEQPACKET message (or, for a remote worker later, one ZeroMQ frame) of at
 * most FRAME_MAX bytes holding exactly two msgpack values back to back:
 *
 *   daemon -> worker  job:    {job: uint, kind: str}   then the args map
 *   worker -> daemon  reply:  {job: uint, ok: bool}    then the result map (ok) or the failure
 *                                                      map {code: str, message: str} (not ok)
 *   worker -> daemon  hello:  {hello: uint (pid)}      then {} (sent once at start)
 *
 * Keeping the payload as a second value lets each side pass the map on as raw bytes, without
 * re-encoding. Every parser checks every length and type; a malformed frame from a worker makes
 * the daemon kill that worker. Pure functions: any thread. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kind.h"

#define FRAME_MAX (128u << 10)

typedef struct FrameHeader {
        uint64_t job;   /* job and reply frames */
        uint64_t hello; /* hello frames: the worker's pid; 0 otherwise */
        bool ok;
        char kind[64];  /* job frames: NUL-terminated kind name */
        /* The payload: a slice of the frame buffer holding one msgpack map. */
        const uint8_t *payload;
        size_t payload_len;
} FrameHeader;

/* Appends a job frame for `kind` with the packed `args` map to `sbuf`. */
void frame_pack_job(msgpack_sbuffer *sbuf, uint64_t job, const char *kind, const void *args,
                    size_t args_len);

/* Writes the header of a reply frame; the caller then packs the result or failure map into the
 * same buffer. */
void frame_pack_reply_header(msgpack_packer *pk, uint64_t job, bool ok);

/* Packs a failure map {code, message} plus signal, exit_status and http_status where they are
 * non-zero, and rule and address where rule is not empty (docs/PROTOCOL.md, `failure`). A NULL
 * code packs `internal`. */
void frame_pack_failure(msgpack_packer *pk, const JobFailure *f);

/* Parses `buf` (borrowed; `ret->payload` points into it). Returns 0, or -EBADMSG when the frame
 * is not a header map of the expected shape followed by exactly one map. */
int frame_parse(const uint8_t *buf, size_t len, FrameHeader *ret);
