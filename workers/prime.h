/* prime: the `prime` job kind (process pool) and the integer arithmetic behind it. The functions
 * are pure: any thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "kind.h"

extern const JobKind prime_kind;

/* The integer square root: the largest r with r * r <= n. No floating point. */
uint64_t prime_isqrt(uint64_t n);

/* The classic benchmark's test: 2, then odd trial divisors up to prime_isqrt(n). Returns the
 * smallest factor of n: n itself for a prime, 0 for n < 2. */
uint64_t prime_trial(uint64_t n);

/* Deterministic Miller-Rabin for all 64-bit n. */
bool prime_miller_rabin(uint64_t n);

/* Smallest prime factor by Miller-Rabin and Pollard-Brent, as prime_trial() reports it but fast
 * for every 64-bit n. */
uint64_t prime_smallest_factor(uint64_t n);
