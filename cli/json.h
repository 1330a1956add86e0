/* json: prints msgpack values as JSON for futurectl's output. bin values become base64 strings;
 * map keys that are not strings are printed as their JSON text in a string. Any thread. */
#pragma once

#include <msgpack.h>
#include <stdio.h>

/* Writes `o` as compact JSON (no newline) to `f`. */
void json_print(FILE *f, const msgpack_object *o);

/* Writes the `len` bytes at `s` as a JSON string literal. */
void json_print_string(FILE *f, const char *s, size_t len);

/* Unpacks the msgpack value in buf[0..len) and prints it as json_print() does; prints `null` for
 * bytes that do not decode. */
void json_print_packed(FILE *f, const void *buf, size_t len);
