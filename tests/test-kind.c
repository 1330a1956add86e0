/* Unit test of the kind registry and kind_validate(): every type rule, required and unknown
 * arguments, and the kinds' own range checks, each with the error code and field it must give. */
#include <errno.h>
#include <string.h>

#include "kind.h"
#include "test.h"

/* Packs `n` key/value pairs given as printf-free builders into a map and validates it. */
typedef void (*Packer)(msgpack_packer *pk);

static int validate(const char *kind, Packer build, ProtoError *e) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_unpacked u;
        int r;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        build(&pk);
        msgpack_unpacked_init(&u);
        REQUIRE(msgpack_unpack_next(&u, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS);
        *e = (ProtoError){ .index = -1 };
        r = kind_validate(kind_find(kind, strlen(kind)), &u.data, e);
        msgpack_unpacked_destroy(&u);
        msgpack_sbuffer_destroy(&sb);
        return r;
}

static void key(msgpack_packer *pk, const char *k) {
        proto_pack_str(pk, k);
}

static void n_ok(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), key(pk, "n"), msgpack_pack_uint64(pk, UINT64_MAX);
}
static void n_negative(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), key(pk, "n"), msgpack_pack_int64(pk, -1);
}
static void n_string(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), key(pk, "n"), proto_pack_str(pk, "abc");
}
static void n_float(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), key(pk, "n"), msgpack_pack_double(pk, 1e30);
}
static void n_missing(msgpack_packer *pk) {
        msgpack_pack_map(pk, 0);
}
static void n_extra(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2), key(pk, "n"), msgpack_pack_uint8(pk, 7), key(pk, "nn"),
                msgpack_pack_uint8(pk, 7);
}
static void bad_method(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2), key(pk, "n"), msgpack_pack_uint8(pk, 7), key(pk, "method"),
                proto_pack_str(pk, "guess");
}
static void mr_method(msgpack_packer *pk) {
        msgpack_pack_map(pk, 2), key(pk, "n"), msgpack_pack_uint8(pk, 7), key(pk, "method"),
                proto_pack_str(pk, "miller-rabin");
}
static void not_map(msgpack_packer *pk) {
        msgpack_pack_array(pk, 0);
}
static void int_key(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), msgpack_pack_uint8(pk, 1), msgpack_pack_uint8(pk, 7);
}
static void sleep_int(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), key(pk, "seconds"), msgpack_pack_uint8(pk, 2);
}
static void sleep_negative(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), key(pk, "seconds"), msgpack_pack_double(pk, -0.5);
}
static void sleep_nan(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), key(pk, "seconds"), msgpack_pack_double(pk, 0.0 / 0.0);
}
static void sleep_bool(msgpack_packer *pk) {
        msgpack_pack_map(pk, 1), key(pk, "seconds"), msgpack_pack_true(pk);
}

static void expect(const char *kind, Packer build, const char *code, const char *field) {
        ProtoError e;
        int r = validate(kind, build, &e);

        if (!code) {
                CHECK(r == 0);
                return;
        }
        CHECK(r == -EINVAL);
        CHECK(e.code && strcmp(e.code, code) == 0);
        CHECK(field ? e.field && strcmp(e.field, field) == 0 : true);
        CHECK(e.message[0] != '\0');
}

int main(void) {
        const JobKind *const *all = kind_all();
        size_t n = 0;

        for (; all[n]; n++)
                CHECK(kind_find(all[n]->name, strlen(all[n]->name)) == all[n]);
        CHECK(n >= 4);
        CHECK(kind_find("prim", 4) == NULL && kind_find("primes", 6) == NULL);
        CHECK(kind_find("prime", 5)->pool == POOL_PROCESS);
        CHECK(kind_find("sleep", 5)->pool == POOL_THREAD);

        expect("prime", n_ok, NULL, NULL);
        expect("prime", mr_method, NULL, NULL);
        expect("prime", n_negative, PROTO_E_BAD_ARGS, "n");
        expect("prime", n_string, PROTO_E_BAD_ARGS, "n");
        expect("prime", n_float, PROTO_E_BAD_ARGS, "n");
        expect("prime", n_missing, PROTO_E_BAD_ARGS, "n");
        expect("prime", n_extra, PROTO_E_BAD_ARGS, "args");
        expect("prime", bad_method, PROTO_E_BAD_ARGS, "method");
        expect("prime", not_map, PROTO_E_BAD_ARGS, "args");
        expect("prime", int_key, PROTO_E_BAD_ARGS, "args");
        expect("sleep", sleep_int, NULL, NULL);
        expect("sleep", sleep_negative, PROTO_E_BAD_ARGS, "seconds");
        expect("sleep", sleep_nan, PROTO_E_BAD_ARGS, "seconds");
        expect("sleep", sleep_bool, PROTO_E_BAD_ARGS, "seconds");
        expect("noop", n_missing, NULL, NULL);
        expect("noop", n_ok, PROTO_E_BAD_ARGS, "args");
        return test_end();
}
