/* netpolicy: see netpolicy.h. Parsing is inet_pton's; matching is a linear scan, since a policy
 * holds a handful of rules and a connection is made far more rarely than a byte is received. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "netpolicy.h"

#define MAPPED 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff

static const NetRule builtin_rules[] = {
        { { MAPPED, 127, 0, 0, 0 }, 96 + 8, false, true, "127.0.0.0/8" },
        { { [15] = 1 }, 128, false, true, "::1/128" },
        { { MAPPED, 169, 254, 0, 0 }, 96 + 16, false, true, "169.254.0.0/16" },
        { { 0xfe, 0x80 }, 10, false, true, "fe80::/10" },
        { { MAPPED, 0, 0, 0, 0 }, 96 + 8, false, true, "0.0.0.0/8" },
        { {}, 128, false, true, "::/128" },
};

static const NetRule non_ip_rule = { .builtin = true, .text = "non-IP" };

const NetRule *netpolicy_builtin(size_t *ret_n) {
        *ret_n = ELEMENTSOF(builtin_rules);
        return builtin_rules;
}

/* Whether the first `bits` bits of `a` and `b` agree. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits) {
        unsigned bytes = bits / 8, rest = bits % 8;

        if (memcmp(a, b, bytes) != 0)
                return false;
        return rest == 0 || ((a[bytes] ^ b[bytes]) & (0xff00u >> rest) & 0xff) == 0;
}

/* Writes the text of the IPv6 (or mapped IPv4) address `a` into `out`. */
static void format_addr(const uint8_t *a, char *out, size_t size) {
        static const uint8_t mapped[12] = { MAPPED };

        if (memcmp(a, mapped, sizeof(mapped)) == 0)
                inet_ntop(AF_INET, a + 12, out, (socklen_t) size);
        else
                inet_ntop(AF_INET6, a, out, (socklen_t) size);
}

int netpolicy_parse_rule(const char *text, bool allow, NetRule *ret, const char **ret_why) {
        NetRule rule = { .allow = allow };
        char addr[INET6_ADDRSTRLEN + 1], *end;
        const char *slash = strchr(text, '/');
        size_t n = slash ? (size_t) (slash - text) : strlen(text);
        unsigned long prefix, max;

        *ret_why = "expected an IPv4 or IPv6 address or network, e.g. 127.0.0.0/8 or ::1/128";
        if (n == 0 || n >= sizeof(addr))
                return -EINVAL;
        memcpy(addr, text, n);
        addr[n] = 0;
        if (inet_pton(AF_INET, addr, rule.net + 12) == 1) {
                memset(rule.net, 0, 10);
                rule.net[10] = rule.net[11] = 0xff;
                max = 32;
        } else if (inet_pton(AF_INET6, addr, rule.net) == 1)
                max = 128;
        else
                return -EINVAL;
        prefix = max;
        if (slash) {
                /* Digits only: strtoul would take a sign, spaces or "0x". */
                if (slash[1] < '0' || slash[1] > '9' || strspn(slash + 1, "0123456789") > 3)
                        return -EINVAL;
                prefix = strtoul(slash + 1, &end, 10);
                if (*end || prefix > max) {
                        *ret_why = max == 32 ? "an IPv4 prefix length is 0 to 32"
                                             : "an IPv6 prefix length is 0 to 128";
                        return -EINVAL;
                }
        }
        rule.prefix = (uint8_t) (prefix + 128 - max);
        /* 127.0.0.1/8 is refused rather than read as 127.0.0.0/8: it may be a typo for /32. */
        for (unsigned bit = rule.prefix; bit < 128; bit++)
                if (rule.net[bit / 8] & (0x80u >> (bit % 8))) {
                        *ret_why = "the address has bits set past the prefix length (write the "
                                   "network's first address, e.g. 127.0.0.0/8)";
                        return -EINVAL;
                }
        /* IPv4-mapped networks read as IPv4: ::ffff:0:0/96 is 0.0.0.0/0. */
        format_addr(rule.net, rule.text, sizeof(rule.text));
        if (rule.prefix < 96)
                inet_ntop(AF_INET6, rule.net, rule.text, sizeof(rule.text));
        snprintf(rule.text + strlen(rule.text), sizeof(rule.text) - strlen(rule.text), "/%u",
                 strchr(rule.text, ':') ? rule.prefix : rule.prefix - 96u);
        *ret = rule;
        return 0;
}

int netpolicy_add(NetPolicy *p, const char *text, bool allow, const char **ret_why) {
        NetRule rule, *rules;
        int r = netpolicy_parse_rule(text, allow, &rule, ret_why);

        if (r < 0)
                return r;
        rules = realloc(p->rules, (p->n_rules + 1) * sizeof(*rules));
        if (!rules)
                return -ENOMEM;
        rules[p->n_rules++] = rule;
        p->rules = rules;
        return 0;
}

int netpolicy_copy(NetPolicy *ret, const NetPolicy *p) {
        NetRule *rules = NULL;

        if (p->n_rules > 0) {
                rules = malloc(p->n_rules * sizeof(*rules));
                if (!rules)
                        return -ENOMEM;
                memcpy(rules, p->rules, p->n_rules * sizeof(*rules));
        }
        *ret = (NetPolicy){ .rules = rules, .n_rules = p->n_rules };
        return 0;
}

void netpolicy_deinit(NetPolicy *p) {
        free(p->rules);
        *p = (NetPolicy){};
}

bool netpolicy_equal(const NetPolicy *a, const NetPolicy *b) {
        if (a->n_rules != b->n_rules)
                return false;
        for (size_t i = 0; i < a->n_rules; i++)
                if (a->rules[i].allow != b->rules[i].allow ||
                    strcmp(a->rules[i].text, b->rules[i].text) != 0)
                        return false;
        return true;
}

/* Whether `r` decides over `best` (NULL: none yet), both containing the address. */
static bool beats(const NetRule *r, const NetRule *best) {
        if (!best || r->prefix != best->prefix)
                return !best || r->prefix > best->prefix;
        if (r->builtin != best->builtin)
                return !r->builtin;
        return !r->allow && best->allow;
}

const NetRule *netpolicy_match(const NetPolicy *p, const struct sockaddr *addr, size_t len,
                               char *ret_addr) {
        const NetRule *best = NULL;
        uint8_t a[16] = { MAPPED };

        if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
                memcpy(a + 12, &((const struct sockaddr_in *) addr)->sin_addr, 4);
        else if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
                memcpy(a, &((const struct sockaddr_in6 *) addr)->sin6_addr, 16);
        else {
                if (ret_addr)
                        snprintf(ret_addr, NETPOLICY_TEXT_MAX, "(address family %d)",
                                 (int) addr->sa_family);
                return &non_ip_rule;
        }
        if (ret_addr)
                format_addr(a, ret_addr, NETPOLICY_TEXT_MAX);
        for (size_t i = 0; i < ELEMENTSOF(builtin_rules); i++)
                if (prefix_equal(a, builtin_rules[i].net, builtin_rules[i].prefix) &&
                    beats(&builtin_rules[i], best))
                        best = &builtin_rules[i];
        for (size_t i = 0; i < p->n_rules; i++)
                if (prefix_equal(a, p->rules[i].net, p->rules[i].prefix) &&
                    beats(&p->rules[i], best))
                        best = &p->rules[i];
        return best;
}
