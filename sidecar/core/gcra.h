/* SPDX-License-Identifier: Apache-2.0 */
/* GCRA, the token bucket as one number: a "theoretical arrival time" (TAT)
 * per bucket, in the caller's time unit. At most tolerance / interval
 * tokens at once, then one every interval. The caller owns the TAT's
 * storage (a plain word, or an atomic one it updates by CAS). */
#ifndef MESHD_CORE_GCRA_H
#define MESHD_CORE_GCRA_H

#include <stdbool.h>
#include <stdint.h>

/* Taking a token at |now| from a bucket whose TAT is |tat|: true with the
 * new TAT in |*next|, or false with the wait until a token is due in
 * |*wait|. */
static inline bool md_gcra(uint64_t tat, uint64_t now, uint64_t interval, uint64_t tolerance,
                           uint64_t *next, uint64_t *wait)
{
    uint64_t n = (tat > now ? tat : now) + interval;
    if (n - now > tolerance) {
        *wait = n - now - tolerance;
        return false;
    }
    *next = n;
    return true;
}

#endif
