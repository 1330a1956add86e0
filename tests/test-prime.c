/* Unit test of the prime arithmetic: the integer square root at its edges, and trial division,
 * Miller-Rabin and Pollard-Brent agreeing with each other and with a sieve. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "prime.h"
#include "test.h"

#define SIEVE 200000

int main(void) {
        static bool composite[SIEVE];
        static const uint64_t big_primes[] = { UINT64_C(18446744073709551557),
                                               UINT64_C(9999999999999917),
                                               UINT64_C(4294967291) };

        /* isqrt: exact at squares and their neighbours, up to the top of 64 bits. */
        CHECK(prime_isqrt(0) == 0 && prime_isqrt(1) == 1 && prime_isqrt(3) == 1);
        CHECK(prime_isqrt(4) == 2 && prime_isqrt(UINT64_MAX) == UINT64_C(4294967295));
        for (uint64_t r = 2; r < UINT64_C(4294967296); r = r * 3 + 1) {
                CHECK(prime_isqrt(r * r) == r);
                CHECK(prime_isqrt(r * r - 1) == r - 1);
                if (r < UINT64_C(4294967295))
                        CHECK(prime_isqrt(r * r + 2 * r) == r);
        }
        CHECK(prime_isqrt(UINT64_C(4294967295) * UINT64_C(4294967295)) == UINT64_C(4294967295));

        /* A sieve is the reference for small n. */
        composite[0] = composite[1] = true;
        for (size_t i = 2; i * i < SIEVE; i++)
                if (!composite[i])
                        for (size_t j = i * i; j < SIEVE; j += i)
                                composite[j] = true;
        for (uint64_t n = 0; n < SIEVE; n++) {
                uint64_t f = prime_trial(n);
                CHECK(prime_miller_rabin(n) == !composite[n]);
                CHECK((n >= 2 && f == n) == !composite[n]);
                CHECK(prime_smallest_factor(n) == f);
                if (n >= 2)
                        CHECK(f >= 2 && n % f == 0);
        }
        CHECK(prime_trial(0) == 0 && prime_trial(1) == 0 && prime_trial(2) == 2);

        for (size_t i = 0; i < sizeof big_primes / sizeof big_primes[0]; i++) {
                CHECK(prime_miller_rabin(big_primes[i]));
                CHECK(prime_smallest_factor(big_primes[i]) == big_primes[i]);
        }
        CHECK(prime_trial(UINT64_C(4294967291)) == UINT64_C(4294967291));
        /* Composites with large smallest factors, and Carmichael numbers. */
        CHECK(prime_smallest_factor(UINT64_C(4294967291) * 4294967279u) == 4294967279u);
        CHECK(!prime_miller_rabin(UINT64_C(4294967291) * 4294967279u));
        CHECK(prime_smallest_factor(UINT64_C(3825123056546413051)) == 149491);
        CHECK(!prime_miller_rabin(561) && !prime_miller_rabin(UINT64_C(3215031751)));
        CHECK(prime_trial(UINT64_C(1000000016000000063)) == 1000000007u);
        CHECK(prime_smallest_factor(UINT64_C(1000000016000000063)) == 1000000007u);
        CHECK(prime_smallest_factor(UINT64_MAX) == 3);
        return test_end();
}
