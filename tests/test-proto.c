/* Unit test of proto's checks on untrusted bytes: the msgpack pre-scan (proto_msgpack_check), the
 * bounded id peek, the UTF-8 validator and the error messages that quote client text. */
#include <errno.h>
#include <string.h>

#include "proto.h"
#include "test.h"

#define CHK(lit, depth) proto_msgpack_check(lit, sizeof(lit) - 1, depth, NULL)

static void test_msgpack_check(void) {
        msgpack_sbuffer sbuf;
        msgpack_packer pk;
        size_t end = 0;
        char deep[100];

        /* Everything a real request holds passes, and the end is where the value ends. */
        msgpack_sbuffer_init(&sbuf);
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 6);
        proto_pack_str(&pk, "v");
        msgpack_pack_uint64(&pk, UINT64_MAX);
        proto_pack_str(&pk, "neg");
        msgpack_pack_int64(&pk, INT64_MIN);
        proto_pack_str(&pk, "f");
        msgpack_pack_double(&pk, 1.5);
        proto_pack_str(&pk, "a");
        msgpack_pack_array(&pk, 3);
        msgpack_pack_nil(&pk);
        msgpack_pack_true(&pk);
        msgpack_pack_float(&pk, 2.5f);
        proto_pack_str(&pk, "bin");
        msgpack_pack_bin(&pk, 3);
        msgpack_pack_bin_body(&pk, "xyz", 3);
        proto_pack_str(&pk, "ext");
        msgpack_pack_ext(&pk, 5, 7);
        msgpack_pack_ext_body(&pk, "12345", 5);
        CHECK(proto_msgpack_check(sbuf.data, sbuf.size, 32, &end) == 0 && end == sbuf.size);
        for (size_t cut = 0; cut < sbuf.size; cut++)
                CHECK(proto_msgpack_check(sbuf.data, cut, 32, NULL) == -EBADMSG);
        /* Trailing bytes are the caller's to judge: the end says where the value stopped. */
        msgpack_pack_nil(&pk);
        CHECK(proto_msgpack_check(sbuf.data, sbuf.size, 32, &end) == 0 && end == sbuf.size - 1);
        msgpack_sbuffer_destroy(&sbuf);

        CHECK(CHK("\xc0", 32) == 0);
        CHECK(CHK("\xc1", 32) == -EBADMSG);
        CHECK(CHK("", 32) == -EBADMSG);
        /* Containers that declare more elements than there are bytes left. */
        CHECK(CHK("\xdd\xff\xff\xff\xff", 32) == -EBADMSG);
        CHECK(CHK("\xdf\xff\xff\xff\xff", 32) == -EBADMSG);
        CHECK(CHK("\xdc\x00\x03\xc0\xc0", 32) == -EBADMSG);
        CHECK(CHK("\xdc\x00\x03\xc0\xc0\xc0", 32) == 0);
        CHECK(CHK("\x82\xa1k\xc0\xa1l", 32) == -EBADMSG);
        /* Each alone would fit, but not together with what the outer array still owes. */
        CHECK(CHK("\x93\x93\xc0\xc0\xc0\x93", 32) == -EBADMSG);
        CHECK(CHK("\x92\xcd\x01\x02\xc0", 32) == 0);
        CHECK(CHK("\x93\xcd\x01\x02\xc0", 32) == -EBADMSG);
        /* Strings, bins and exts longer than the frame. */
        CHECK(CHK("\xdb\xff\xff\xff\xff", 32) == -EBADMSG);
        CHECK(CHK("\xc6\x00\x00\x00\x02x", 32) == -EBADMSG);
        CHECK(CHK("\xc6\x00\x00\x00\x01x", 32) == 0);
        CHECK(CHK("\xc9\x00\x00\x00\x01\x05", 32) == -EBADMSG);
        CHECK(CHK("\xd8\x01" "0123456789abcde", 32) == -EBADMSG);
        CHECK(CHK("\xd8\x01" "0123456789abcdef", 32) == 0);

        /* Nesting: 32 levels are fine, 33 are not. */
        memset(deep, 0x91, sizeof(deep));
        deep[32] = (char) 0xc0;
        CHECK(proto_msgpack_check(deep, 33, 32, NULL) == 0);
        deep[32] = (char) 0x91;
        deep[33] = (char) 0xc0;
        CHECK(proto_msgpack_check(deep, 34, 32, NULL) == -ELOOP);
        memset(deep, 0x90, sizeof(deep)); /* empty arrays do not nest */
        CHECK(proto_msgpack_check(deep, 1, 0, NULL) == -ELOOP);
        CHECK(proto_msgpack_check(deep, 1, 1, NULL) == 0);
}

static void test_peek(void) {
        uint64_t v = 0;

        CHECK(proto_msgpack_peek_uint("\x82\xa1v\x01\xa2id\x2a", 8, "id", &v) == 0 && v == 42);
        CHECK(proto_msgpack_peek_uint("\x82\xa1v\x01\xa2id\xcd\x01\x02", 10, "id", &v) == 0 &&
              v == 0x102);
        /* Skips values of any shape before it, also non-str keys. */
        CHECK(proto_msgpack_peek_uint("\x83\x07\x92\xc0\xc0\xa1v\x91\x01\xa2id\x05", 14, "id", &v) ==
                      0 &&
              v == 5);
        CHECK(proto_msgpack_peek_uint("\x82\xa1v\x01\xa2id\xa1x", 9, "id", &v) == -ENOENT);
        CHECK(proto_msgpack_peek_uint("\x82\xa1v\x01\xa2id\xcd\x01", 9, "id", &v) == -ENOENT);
        CHECK(proto_msgpack_peek_uint("\x81\xa1v\x01", 4, "id", &v) == -ENOENT);
        CHECK(proto_msgpack_peek_uint("\x92\x01\x02", 3, "id", &v) == -ENOENT);
        CHECK(proto_msgpack_peek_uint("", 0, "id", &v) == -ENOENT);
        CHECK(proto_msgpack_peek_uint("\xdf\xff\xff\xff\xff\xa1v\x01", 8, "id", &v) == -ENOENT);
}

static void test_utf8(void) {
        static const char *const good[] = { "", "abc", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                            "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf", "\xef\xbf\xbf" };
        static const char *const bad[] = {
                "\x80",             /* a stray continuation byte */
                "\xc3",             /* cut short */
                "\xe2\x82",         /* cut short */
                "\xc0\xaf",         /* overlong '/' */
                "\xc1\xbf",         /* overlong */
                "\xe0\x80\xaf",     /* overlong */
                "\xf0\x80\x80\xaf", /* overlong */
                "\xed\xa0\x80",     /* a surrogate */
                "\xf4\x90\x80\x80", /* over U+10FFFF */
                "\xf5\x80\x80\x80", "\xff", "a\xc3(", "\xe2\x28\xa1",
        };
        ProtoError e = { .index = -1 };
        char quote[100];

        for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
                CHECK(proto_utf8_valid(good[i], strlen(good[i])));
        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
                CHECK(!proto_utf8_valid(bad[i], strlen(bad[i])));
        CHECK(proto_utf8_valid("a\0b", 3));

        /* A prefix never splits a character. */
        CHECK(proto_utf8_prefix("\xc3\xa9\xc3\xa9", 4, 3) == 2);
        CHECK(proto_utf8_prefix("\xc3\xa9\xc3\xa9", 4, 4) == 4);
        CHECK(proto_utf8_prefix("\xf0\x9f\x98\x80", 4, 3) == 0);
        CHECK(proto_utf8_prefix("abc", 3, 2) == 2);

        /* A message cut by its buffer loses the split character; stray bytes become '?'. */
        memset(quote, 'a', sizeof(quote));
        for (size_t i = 1; i + 1 < sizeof(quote); i += 2)
                memcpy(quote + i, "\xc3\xa9", 2);
        proto_error(&e, PROTO_E_BAD_REQUEST, NULL, "%.*s%.*s", 99, quote, 99, quote);
        CHECK(proto_utf8_valid(e.message, strlen(e.message)));
        CHECK(strlen(e.message) >= sizeof(e.message) - 2);
        proto_error(&e, PROTO_E_BAD_REQUEST, NULL, "x%sy", "\xc3(\xff");
        CHECK(strcmp(e.message, "x?(?y") == 0);
}

static void test_check_fields(void) {
        static const char *const allowed[] = { "v", "id", "op", NULL };
        msgpack_object_kv kv[3];
        msgpack_object map = { .type = MSGPACK_OBJECT_MAP, .via.map = { 3, kv } };
        ProtoError e = { .index = -1 };
        char key[80];

        for (int i = 0; i < 3; i++)
                kv[i].key = (msgpack_object){ .type = MSGPACK_OBJECT_STR,
                                              .via.str = { (uint32_t) strlen(allowed[i]),
                                                           allowed[i] } };
        CHECK(proto_check_fields(&map, allowed, &e) == 0);
        kv[2].key.via.str = (msgpack_object_str){ 1, "v" };
        CHECK(proto_check_fields(&map, allowed, &e) == -EINVAL);
        CHECK(strcmp(e.code, PROTO_E_BAD_REQUEST) == 0 && strcmp(e.field, "v") == 0);
        kv[2].key.via.str = (msgpack_object_str){ 2, "\xc3(" };
        CHECK(proto_check_fields(&map, allowed, &e) == -EINVAL);
        CHECK(strcmp(e.code, PROTO_E_BAD_REQUEST) == 0);
        /* An unknown key is quoted whole characters only. */
        memset(key, 'k', sizeof(key));
        memcpy(key + 63, "\xc3\xa9", 2);
        kv[2].key.via.str = (msgpack_object_str){ sizeof(key), key };
        CHECK(proto_check_fields(&map, allowed, &e) == -EINVAL);
        CHECK(strcmp(e.code, PROTO_E_UNKNOWN_FIELD) == 0 && strlen(e.field) == 63);
}

int main(void) {
        test_msgpack_check();
        test_peek();
        test_utf8();
        test_check_fields();
        return test_end();
}
