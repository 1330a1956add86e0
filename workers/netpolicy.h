/* netpolicy: which network addresses a download may connect to. A policy is a list of networks
 * (CIDR), each allowed or denied by the operator (futured --download-allow / --download-deny),
 * on top of built-in denials: loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16 with the
 * cloud metadata address 169.254.169.254, fe80::/10) and unspecified (0.0.0.0/8, ::).
 *
 * Every address is kept and matched as IPv6: an IPv4 address or network is its IPv4-mapped form
 * (::ffff:a.b.c.d, the prefix plus 96), so `::ffff:127.0.0.1` is caught by 127.0.0.0/8 exactly as
 * 127.0.0.1 is, and one comparison covers both families.
 *
 * Precedence: the rule with the longest prefix that contains the address decides; at equal
 * length an operator's rule beats a built-in one, and an operator's deny beats an operator's
 * allow. An address no rule contains is allowed. So `--download-allow 127.0.0.0/8` lifts the
 * built-in loopback denial, and `--download-deny 10.0.0.0/8 --download-allow 10.1.0.0/16` opens
 * one subnet of a denied network.
 *
 * A NetPolicy is a plain value (zero-initialised: the built-in rules only); its functions may be
 * called from any thread on a policy no other thread changes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* "ffff:ffff:...:255.255.255.255/128" and a NUL. */
#define NETPOLICY_TEXT_MAX 52

typedef struct NetRule {
        uint8_t net[16];  /* the network, as IPv6 (IPv4 mapped), host bits zero */
        uint8_t prefix;   /* 0..128 bits of `net` */
        bool allow;
        bool builtin;
        char text[NETPOLICY_TEXT_MAX]; /* canonical form, e.g. "127.0.0.0/8", "fe80::/10" */
} NetRule;

typedef struct NetPolicy {
        NetRule *rules; /* the operator's, in the order given */
        size_t n_rules;
} NetPolicy;

/* Parses `text`: an IPv4 or IPv6 address (a single host) or ADDRESS/PREFIX, with no bits set
 * past the prefix. Returns 0 with *ret filled (builtin false, allow as given), or -EINVAL with
 * *ret_why (static) saying what is wrong. */
int netpolicy_parse_rule(const char *text, bool allow, NetRule *ret, const char **ret_why);

/* Adds the rule in `text` to `p`. Returns 0; -EINVAL with *ret_why (static); or -ENOMEM. */
int netpolicy_add(NetPolicy *p, const char *text, bool allow, const char **ret_why);

/* Makes *ret a copy of `p` (borrowed). Returns 0 or -ENOMEM, leaving *ret untouched. */
int netpolicy_copy(NetPolicy *ret, const NetPolicy *p);

/* Frees the rules of `p` and empties it. */
void netpolicy_deinit(NetPolicy *p);

/* True when `a` and `b` hold the same rules in the same order. */
bool netpolicy_equal(const NetPolicy *a, const NetPolicy *b);

/* The rule that decides about `addr` (of `len` bytes; AF_INET or AF_INET6), or NULL when no rule
 * contains it (allowed). The result is `p`'s or a static built-in one; a family other than IPv4
 * and IPv6 gets a static denying rule named "non-IP". Writes the address's text into `ret_addr`
 * (NETPOLICY_TEXT_MAX bytes) when it is not NULL. */
const NetRule *netpolicy_match(const NetPolicy *p, const struct sockaddr *addr, size_t len,
                               char *ret_addr);

/* The built-in rules, for listings (--check-config): sets *ret_n and returns the static array. */
const NetRule *netpolicy_builtin(size_t *ret_n);
