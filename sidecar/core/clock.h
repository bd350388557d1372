/* SPDX-License-Identifier: Apache-2.0 */
/* The clock a module is given, so tests drive time instead of sleeping.
 *
 * A NULL clock is the real one: CLOCK_MONOTONIC, read inline (a vDSO call,
 * no syscall), so production pays one predictable branch and nothing else.
 * A manual clock is a value a test sets and advances; it may be read and
 * advanced from several threads. One clock orders one set of deadlines:
 * every reader and writer of those deadlines must be given the same one. */
#ifndef MD_CORE_CLOCK_H
#define MD_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

struct md_clock {
    uint64_t now_ns; /* atomic */
};

/* Monotonic nanoseconds of |c| (NULL: the real clock). */
static inline uint64_t md_clock_ns(const struct md_clock *c)
{
    if (c)
        return __atomic_load_n(&c->now_ns, __ATOMIC_RELAXED);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t md_clock_ms(const struct md_clock *c)
{
    return md_clock_ns(c) / 1000000u;
}

/* Moves a manual clock on by |ns|; returns the time it then names. */
static inline uint64_t md_clock_advance(struct md_clock *c, uint64_t ns)
{
    return __atomic_add_fetch(&c->now_ns, ns, __ATOMIC_RELAXED);
}

#endif
