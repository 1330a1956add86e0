/* test-netpolicy: parsing of CIDR rules, the built-in denials, IPv4-mapped addresses and the
 * precedence of rules (longest prefix; operator over built-in; deny over allow). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "netpolicy.h"
#include "test.h"

/* The rule deciding about the address `text` under `p`, or NULL (allowed by no rule). */
static const NetRule *match(const NetPolicy *p, const char *text) {
        struct sockaddr_in a4 = { .sin_family = AF_INET };
        struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
        char addr[NETPOLICY_TEXT_MAX];

        if (inet_pton(AF_INET, text, &a4.sin_addr) == 1)
                return netpolicy_match(p, (struct sockaddr *) &a4, sizeof(a4), addr);
        REQUIRE(inet_pton(AF_INET6, text, &a6.sin6_addr) == 1);
        return netpolicy_match(p, (struct sockaddr *) &a6, sizeof(a6), addr);
}

static bool allowed(const NetPolicy *p, const char *text) {
        const NetRule *r = match(p, text);
        return !r || r->allow;
}

/* The text of the rule that decides about `text`, or "" when none does. */
static const char *rule_of(const NetPolicy *p, const char *text) {
        const NetRule *r = match(p, text);
        return r ? r->text : "";
}

static void test_parse(void) {
        static const struct {
                const char *in, *canonical;
        } good[] = {
                { "127.0.0.0/8", "127.0.0.0/8" },
                { "10.1.2.3", "10.1.2.3/32" },
                { "0.0.0.0/0", "0.0.0.0/0" },
                { "::1", "::1/128" },
                { "fe80::/10", "fe80::/10" },
                { "::/0", "::/0" },
                { "::ffff:0:0/96", "0.0.0.0/0" },
                { "::ffff:127.0.0.0/104", "127.0.0.0/8" },
                { "2001:db8::/32", "2001:db8::/32" },
        };
        static const char *const bad[] = {
                "", "/8", "127.0.0.1/8", "127.0.0.0/33", "::1/129", "::1/64", "1.2.3", "2130706433",
                "0/0", "127.0.0.0/", "127.0.0.0/+8", "127.0.0.0/ 8", "127.0.0.0/0x8",
                "127.0.0.0/08x", "127.0.0.0/0008", "localhost", "fe80::1%eth0", "1.2.3.4/8/8",
                "::ffff:0:0/80",
        };
        const char *why;
        NetRule r;

        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                why = NULL;
                CHECK(netpolicy_parse_rule(good[i].in, true, &r, &why) == 0);
                CHECK(strcmp(r.text, good[i].canonical) == 0);
                CHECK(r.allow && !r.builtin);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                why = NULL;
                r.prefix = 77;
                CHECK(netpolicy_parse_rule(bad[i], false, &r, &why) == -EINVAL);
                CHECK(why && why[0]);
                CHECK(r.prefix == 77); /* untouched */
        }
}

static void test_builtin(void) {
        NetPolicy p = {};
        size_t n;

        CHECK(netpolicy_builtin(&n) && n == 6);
        CHECK(!allowed(&p, "127.0.0.1"));
        CHECK(!allowed(&p, "127.255.255.254"));
        CHECK(strcmp(rule_of(&p, "127.0.0.1"), "127.0.0.0/8") == 0);
        CHECK(match(&p, "127.0.0.1")->builtin);
        CHECK(!allowed(&p, "::1"));
        CHECK(!allowed(&p, "169.254.169.254"));
        CHECK(strcmp(rule_of(&p, "169.254.169.254"), "169.254.0.0/16") == 0);
        CHECK(!allowed(&p, "fe80::1"));
        CHECK(!allowed(&p, "febf:ffff::1"));
        CHECK(allowed(&p, "fec0::1"));
        CHECK(!allowed(&p, "0.0.0.0"));
        CHECK(!allowed(&p, "0.1.2.3"));
        CHECK(!allowed(&p, "::"));
        /* IPv4-mapped forms are matched as the IPv4 address they map. */
        CHECK(!allowed(&p, "::ffff:127.0.0.1"));
        CHECK(strcmp(rule_of(&p, "::ffff:127.0.0.1"), "127.0.0.0/8") == 0);
        CHECK(!allowed(&p, "::ffff:169.254.169.254"));
        CHECK(!allowed(&p, "::ffff:0.0.0.0"));
        CHECK(allowed(&p, "::ffff:192.0.2.1"));
        CHECK(allowed(&p, "192.0.2.1"));
        CHECK(allowed(&p, "128.0.0.1"));
        CHECK(allowed(&p, "126.255.255.255"));
        CHECK(allowed(&p, "2001:db8::1"));
        CHECK(allowed(&p, "::2"));
        CHECK(match(&p, "192.0.2.1") == NULL);
}

static void test_precedence(void) {
        NetPolicy p = {}, q = {};
        const char *why;

        /* An operator's allow of the same network lifts a built-in denial. */
        REQUIRE(netpolicy_add(&p, "127.0.0.0/8", true, &why) == 0);
        CHECK(allowed(&p, "127.0.0.1"));
        CHECK(allowed(&p, "::ffff:127.0.0.1"));
        CHECK(!allowed(&p, "::1"));
        CHECK(!allowed(&p, "169.254.169.254"));
        /* A longer prefix wins, either way. */
        REQUIRE(netpolicy_add(&p, "127.0.0.2", false, &why) == 0);
        CHECK(!allowed(&p, "127.0.0.2"));
        CHECK(strcmp(rule_of(&p, "127.0.0.2"), "127.0.0.2/32") == 0);
        CHECK(allowed(&p, "127.0.0.3"));
        REQUIRE(netpolicy_add(&p, "10.0.0.0/8", false, &why) == 0);
        REQUIRE(netpolicy_add(&p, "10.1.0.0/16", true, &why) == 0);
        CHECK(!allowed(&p, "10.2.0.1"));
        CHECK(allowed(&p, "10.1.0.1"));
        CHECK(!allowed(&p, "::ffff:10.2.0.1"));
        /* Between the operator's rules of equal length, deny wins, whatever the order. */
        REQUIRE(netpolicy_add(&p, "192.0.2.0/24", true, &why) == 0);
        REQUIRE(netpolicy_add(&p, "192.0.2.0/24", false, &why) == 0);
        CHECK(!allowed(&p, "192.0.2.7"));
        REQUIRE(netpolicy_add(&q, "192.0.2.0/24", false, &why) == 0);
        REQUIRE(netpolicy_add(&q, "192.0.2.0/24", true, &why) == 0);
        CHECK(!allowed(&q, "192.0.2.7"));
        /* A shorter allow does not lift a longer built-in denial. */
        REQUIRE(netpolicy_add(&q, "0.0.0.0/0", true, &why) == 0);
        CHECK(!allowed(&q, "169.254.169.254"));
        CHECK(allowed(&q, "198.51.100.1"));
        /* IPv6 ::/0 covers the mapped IPv4 space too: a deny of all of it. */
        netpolicy_deinit(&q);
        REQUIRE(netpolicy_add(&q, "::/0", false, &why) == 0);
        CHECK(!allowed(&q, "198.51.100.1"));
        CHECK(!allowed(&q, "2001:db8::1"));
        CHECK(strcmp(rule_of(&q, "127.0.0.1"), "127.0.0.0/8") == 0);

        /* Copies are equal and independent. */
        NetPolicy c;
        REQUIRE(netpolicy_copy(&c, &p) == 0);
        CHECK(netpolicy_equal(&c, &p));
        CHECK(!netpolicy_equal(&c, &q));
        netpolicy_deinit(&p);
        CHECK(!allowed(&c, "127.0.0.2") && allowed(&c, "127.0.0.1"));
        CHECK(p.n_rules == 0 && allowed(&p, "10.2.0.1"));
        netpolicy_deinit(&c);
        netpolicy_deinit(&q);
}

static void test_family(void) {
        NetPolicy p = {};
        struct sockaddr_in short_addr = { .sin_family = AF_INET };
        struct sockaddr un = { .sa_family = AF_UNIX };
        char addr[NETPOLICY_TEXT_MAX];
        const NetRule *r;

        r = netpolicy_match(&p, &un, sizeof(un), addr);
        CHECK(r && !r->allow && strcmp(r->text, "non-IP") == 0);
        /* A length too short for the family is not read past. */
        r = netpolicy_match(&p, (struct sockaddr *) &short_addr, 4, NULL);
        CHECK(r && !r->allow);
        inet_pton(AF_INET, "169.254.169.254", &short_addr.sin_addr);
        r = netpolicy_match(&p, (struct sockaddr *) &short_addr, sizeof(short_addr), addr);
        CHECK(r && strcmp(addr, "169.254.169.254") == 0);
}

int main(void) {
        test_parse();
        test_builtin();
        test_precedence();
        test_family();
        return test_end();
}
