/* prime: primality of 64-bit integers, by trial division (the classic benchmark) or by
 * deterministic Miller-Rabin with a Pollard-Brent search for the smallest factor. */
#include <errno.h>

#include "now.h"
#include "prime.h"

uint64_t prime_isqrt(uint64_t n) {
        uint64_t x, y;

        if (n < 2)
                return n;
        /* Start from a power of two not below the root; Newton's step then only decreases. */
        x = UINT64_C(1) << ((64 - __builtin_clzll(n) + 1) / 2);
        for (;;) {
                y = (x + n / x) / 2;
                if (y >= x)
                        return x;
                x = y;
        }
}

uint64_t prime_trial(uint64_t n) {
        uint64_t root;

        if (n < 2)
                return 0;
        if (n % 2 == 0)
                return 2;
        root = prime_isqrt(n);
        for (uint64_t i = 3; i <= root; i += 2)
                if (n % i == 0)
                        return i;
        return n;
}

static uint64_t mulmod(uint64_t a, uint64_t b, uint64_t m) {
        return (uint64_t) ((unsigned __int128) a * b % m);
}

static uint64_t powmod(uint64_t b, uint64_t e, uint64_t m) {
        uint64_t r = 1;

        b %= m;
        for (; e; e >>= 1) {
                if (e & 1)
                        r = mulmod(r, b, m);
                b = mulmod(b, b, m);
        }
        return r;
}

bool prime_miller_rabin(uint64_t n) {
        /* These twelve bases decide every n < 3.3e24, so all of 64 bits. */
        static const uint64_t bases[] = { 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37 };
        uint64_t d = n - 1;
        int s = 0;

        if (n < 2)
                return false;
        for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++)
                if (n % bases[i] == 0)
                        return n == bases[i];
        while (d % 2 == 0) {
                d /= 2;
                s++;
        }
        for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
                uint64_t x = powmod(bases[i], d, n);
                int r;

                if (x == 1 || x == n - 1)
                        continue;
                for (r = 1; r < s; r++) {
                        x = mulmod(x, x, n);
                        if (x == n - 1)
                                break;
                }
                if (r == s)
                        return false;
        }
        return true;
}

static uint64_t gcd(uint64_t a, uint64_t b) {
        while (b) {
                uint64_t t = a % b;
                a = b;
                b = t;
        }
        return a;
}

/* Some nontrivial factor of the odd composite n (Brent's cycle finding). */
static uint64_t pollard_brent(uint64_t n) {
        for (uint64_t c = 1;; c++) {
                uint64_t y = 2, x = 2, g = 1, q = 1, ys = 2;
                const uint64_t m = 128;

                for (uint64_t r = 1; g == 1; r *= 2) {
                        x = y;
                        for (uint64_t i = 0; i < r; i++)
                                y = (mulmod(y, y, n) + c) % n;
                        for (uint64_t k = 0; k < r && g == 1; k += m) {
                                ys = y;
                                for (uint64_t i = 0; i < m && i < r - k; i++) {
                                        y = (mulmod(y, y, n) + c) % n;
                                        q = mulmod(q, x > y ? x - y : y - x, n);
                                }
                                g = gcd(q, n);
                        }
                }
                if (g == n)
                        do {
                                ys = (mulmod(ys, ys, n) + c) % n;
                                g = gcd(x > ys ? x - ys : ys - x, n);
                        } while (g == 1);
                if (g != n)
                        return g;
        }
}

uint64_t prime_smallest_factor(uint64_t n) {
        uint64_t f, a, b;

        if (n < 2)
                return 0;
        for (uint64_t p = 2; p < 64; p++)
                if (n % p == 0)
                        return p;
        if (prime_miller_rabin(n))
                return n;
        f = pollard_brent(n);
        a = prime_smallest_factor(f);
        b = prime_smallest_factor(n / f);
        return a < b ? a : b;
}

static int prime_check(const msgpack_object *args, ProtoError *e) {
        const msgpack_object *m = proto_map_get(args, "method");

        if (m && !proto_str_eq(m, "trial") && !proto_str_eq(m, "miller-rabin"))
                return proto_error(e, PROTO_E_BAD_ARGS, "method",
                                   "'method' must be \"trial\" or \"miller-rabin\"");
        return 0;
}

static int prime_run(const msgpack_object *args, const JobContext *ctx, msgpack_packer *pk,
                     JobFailure *failure) {
        const msgpack_object *m = proto_map_get(args, "method");
        uint64_t n, factor;
        double start;

        if (proto_get_uint(proto_map_get(args, "n"), &n) < 0)
                return job_failure(failure, PROTO_F_INTERNAL, "argument 'n' lost its type");
        start = now_seconds();
        factor = m && proto_str_eq(m, "miller-rabin") ? prime_smallest_factor(n) : prime_trial(n);

        msgpack_pack_map(pk, 4);
        proto_pack_str(pk, "n");
        msgpack_pack_uint64(pk, n);
        proto_pack_str(pk, "is_prime");
        if (n >= 2 && factor == n)
                msgpack_pack_true(pk);
        else
                msgpack_pack_false(pk);
        proto_pack_str(pk, "smallest_factor");
        msgpack_pack_uint64(pk, factor);
        proto_pack_str(pk, "elapsed");
        msgpack_pack_double(pk, now_seconds() - start);
        return 0;
}

static const JobParam prime_params[] = {
        { "n", PARAM_UINT, true },
        { "method", PARAM_STR, false },
        {},
};

const JobKind prime_kind = {
        .name = "prime",
        .pool = POOL_PROCESS,
        .params = prime_params,
        .check = prime_check,
        .run = prime_run,
};
