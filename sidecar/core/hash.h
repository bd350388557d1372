/* SPDX-License-Identifier: Apache-2.0 */
/* One 64-bit hash for the data plane's tables and balancers: FNV-1a with a
 * splitmix64 finish (FNV alone leaves nearby inputs close in the high bits).
 * Tables keyed by what clients send take a random seed, so that their slots
 * cannot be aimed at. */
#ifndef MESHD_CORE_HASH_H
#define MESHD_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* splitmix64's finish: every input bit moves every output bit. */
uint64_t md_hash_mix(uint64_t x);

uint64_t md_hash64_seeded(uint64_t seed, const void *p, size_t n);

/* Unseeded: the same on every run and every worker (consistent hashing). */
static inline uint64_t md_hash64(const void *p, size_t n)
{
    return md_hash64_seeded(0, p, n);
}

/* A fast pseudo-random number (xorshift64*) from |*state| (never 0), which
 * advances: one state per thread or owner, no locks. */
static inline uint64_t md_xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

#endif
