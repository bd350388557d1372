/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/breakers.h"

#include "core/stats.h"
#include "loop/worker.h"

#include <stdlib.h>
#include <string.h>

struct md_breakers *md_breakers_new(const struct md_snapshot *snap)
{
    size_t n = snap->n_clusters ? snap->n_clusters : 1;
    struct md_breakers *b = aligned_alloc(64, n * sizeof(*b));
    if (!b)
        return NULL;
    memset(b, 0, n * sizeof(*b));
    for (size_t i = 0; i < snap->n_clusters; i++) {
        const struct md_snap_breakers *l = &snap->clusters[i].breakers;
        b[i].max[MD_BREAKER_CONNECTIONS] = l->max_connections;
        b[i].max[MD_BREAKER_PENDING] = l->max_pending;
        b[i].max[MD_BREAKER_REQUESTS] = l->max_requests;
        b[i].max[MD_BREAKER_RETRIES] = l->max_retries;
    }
    return b;
}

void md_breakers_free(struct md_breakers *b)
{
    free(b);
}

bool md_breakers_take(struct md_breakers *b, enum md_breaker k)
{
    if (!b)
        return true;
    /* Compare-and-swap, not add-then-undo: a failed take never shows the
     * count above the limit to another worker. */
    uint32_t cur = __atomic_load_n(&b->open[k], __ATOMIC_RELAXED);
    do {
        if (cur >= b->max[k])
            return false;
    } while (!__atomic_compare_exchange_n(&b->open[k], &cur, cur + 1, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return true;
}

void md_breakers_put(struct md_breakers *b, enum md_breaker k)
{
    if (b)
        __atomic_sub_fetch(&b->open[k], 1, __ATOMIC_RELAXED);
}

uint32_t md_breakers_open(const struct md_breakers *b, enum md_breaker k)
{
    return __atomic_load_n(&b->open[k], __ATOMIC_RELAXED);
}

uint32_t md_breakers_remaining(const struct md_breakers *b, enum md_breaker k)
{
    uint32_t open = md_breakers_open(b, k);
    return open < b->max[k] ? b->max[k] - open : 0;
}

const char *md_breakers_name(enum md_breaker k)
{
    static const char *const names[MD_BREAKER__N] = {"connections", "pending", "requests",
                                                     "retries"};
    return (unsigned)k < MD_BREAKER__N ? names[k] : "?";
}

struct md_breakers *md_breakers_of(struct md_worker *w, size_t cluster)
{
    return w->breakers ? &w->breakers[cluster] : NULL;
}

void md_breakers_overflowed(struct md_worker *w, size_t cluster, enum md_breaker k)
{
    md_stats_add(md_stats_c(w->stats, cluster, MD_CSTAT_OVERFLOW_CONNECTIONS + k), 1);
}

bool md_breakers_retry_begin(struct md_worker *w, size_t cluster)
{
    if (md_breakers_take(md_breakers_of(w, cluster), MD_BREAKER_RETRIES))
        return true;
    md_breakers_overflowed(w, cluster, MD_BREAKER_RETRIES);
    return false;
}

void md_breakers_retry_end(struct md_worker *w, size_t cluster)
{
    md_breakers_put(md_breakers_of(w, cluster), MD_BREAKER_RETRIES);
}
