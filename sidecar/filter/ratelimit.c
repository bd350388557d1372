/* SPDX-License-Identifier: Apache-2.0 */
#include "filter/ratelimit.h"

#include "core/clock.h"
#include "core/gcra.h"
#include "core/hash.h"
#include "core/list.h"

#include <pthread.h>
#include <strings.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One keyed bucket. Owned by its limit; guarded by md_ratelimit.mu. */
struct rl_entry {
    struct rl_entry *chain; /* next in the same hash slot */
    struct md_list lru;     /* in md_ratelimit.lru: least recent first */
    uint64_t hash;          /* of the whole key */
    uint64_t tat;           /* theoretical arrival time, ns */
    size_t len;             /* the whole key's length; key[] holds at most KEY_MAX */
    char key[];
};

struct md_ratelimit {
    const struct md_snap_rate_limit *cfg; /* borrowed from the snapshot */
    uint64_t interval_ns;                 /* one token per this */
    uint64_t tolerance_ns;                /* burst × interval: how far TAT may run ahead */
    uint64_t tat;                         /* atomic: the shared bucket's TAT */
    uint64_t seed;
    pthread_mutex_t mu; /* guards everything below */
    struct rl_entry **table;
    size_t mask; /* table size - 1 (a power of two) */
    size_t n_keys;
    struct md_list lru;
};

uint64_t md_ratelimit_now(void)
{
    return md_clock_ns(NULL);
}

static bool gcra(const struct md_ratelimit *rl, uint64_t tat, uint64_t now, uint64_t *next,
                 uint64_t *wait)
{
    return md_gcra(tat, now, rl->interval_ns, rl->tolerance_ns, next, wait);
}

struct md_ratelimit *md_ratelimit_new(const struct md_snap_rate_limit *cfg)
{
    struct md_ratelimit *rl = calloc(1, sizeof(*rl));
    if (!rl)
        return NULL;
    rl->cfg = cfg;
    /* 1e9 / per_second truncated: at most 1 ns short per token (per_second
     * ≤ 1e6 by validation, so under 0.1 % fast). */
    rl->interval_ns = 1000000000u / (cfg->per_second ? cfg->per_second : 1);
    rl->tolerance_ns = (uint64_t)(cfg->burst ? cfg->burst : 1) * rl->interval_ns;
    rl->seed = md_hash_mix(md_ratelimit_now() ^ (uint64_t)(uintptr_t)rl);
    md_list_init(&rl->lru);
    if (cfg->header || cfg->by_spiffe_id) {
        rl->mask = 15;
        if (!(rl->table = calloc(rl->mask + 1, sizeof(*rl->table)))) {
            free(rl);
            return NULL;
        }
    }
    pthread_mutex_init(&rl->mu, NULL);
    return rl;
}

void md_ratelimit_free(struct md_ratelimit *rl)
{
    if (!rl)
        return;
    while (!md_list_empty(&rl->lru)) {
        struct rl_entry *e = MD_CONTAINER_OF(rl->lru.next, struct rl_entry, lru);
        md_list_remove(&e->lru);
        free(e);
    }
    free(rl->table);
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static uint64_t take_shared(struct md_ratelimit *rl, uint64_t now)
{
    uint64_t tat = __atomic_load_n(&rl->tat, __ATOMIC_RELAXED), next, wait;
    for (;;) {
        if (!gcra(rl, tat, now, &next, &wait))
            return wait;
        /* one word holds the whole bucket, so relaxed CAS is exact */
        if (__atomic_compare_exchange_n(&rl->tat, &tat, next, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return 0;
    }
}

static void unchain(struct md_ratelimit *rl, struct rl_entry *e)
{
    struct rl_entry **p = &rl->table[e->hash & rl->mask];
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
}

/* Doubles the table while keys outnumber 3/4 of its slots (up to what
 * max_keys needs); a failed allocation keeps the chains longer. */
static void maybe_grow(struct md_ratelimit *rl)
{
    size_t cap = rl->mask + 1;
    if (rl->n_keys * 4 <= cap * 3 || cap * 3 >= (size_t)rl->cfg->max_keys * 4)
        return;
    struct rl_entry **t = calloc(cap * 2, sizeof(*t));
    if (!t)
        return;
    for (size_t i = 0; i < cap; i++)
        for (struct rl_entry *e = rl->table[i], *nx; e; e = nx) {
            nx = e->chain;
            e->chain = t[e->hash & (cap * 2 - 1)];
            t[e->hash & (cap * 2 - 1)] = e;
        }
    free(rl->table);
    rl->table = t;
    rl->mask = cap * 2 - 1;
}

/* Finds or makes |key|'s bucket (|h| its hash), most recently used from now
 * on. NULL when a new one cannot be allocated. Called with mu held. */
static struct rl_entry *lookup(struct md_ratelimit *rl, uint64_t h, const char *key, size_t len)
{
    size_t stored = len < MD_RATELIMIT_KEY_MAX ? len : MD_RATELIMIT_KEY_MAX;
    for (struct rl_entry *e = rl->table[h & rl->mask]; e; e = e->chain)
        if (e->hash == h && e->len == len && memcmp(e->key, key, stored) == 0) {
            md_list_remove(&e->lru);
            md_list_insert_tail(&rl->lru, &e->lru);
            return e;
        }
    if (rl->n_keys >= rl->cfg->max_keys && !md_list_empty(&rl->lru)) {
        struct rl_entry *old = MD_CONTAINER_OF(rl->lru.next, struct rl_entry, lru);
        unchain(rl, old);
        md_list_remove(&old->lru);
        free(old);
        rl->n_keys--;
    }
    struct rl_entry *e = malloc(sizeof(*e) + stored);
    if (!e)
        return NULL;
    e->hash = h;
    e->tat = 0;
    e->len = len;
    memcpy(e->key, key, stored);
    md_list_insert_tail(&rl->lru, &e->lru);
    rl->n_keys++;
    maybe_grow(rl);
    e->chain = rl->table[h & rl->mask];
    rl->table[h & rl->mask] = e;
    return e;
}

uint64_t md_ratelimit_take(struct md_ratelimit *rl, const char *key, size_t key_len,
                           uint64_t now_ns)
{
    if (!key || !rl->table)
        return take_shared(rl, now_ns);
    uint64_t h = md_hash64_seeded(rl->seed, key, key_len); /* outside the lock: keys are long */
    pthread_mutex_lock(&rl->mu);
    struct rl_entry *e = lookup(rl, h, key, key_len);
    uint64_t next, wait = 0;
    if (e && gcra(rl, e->tat, now_ns, &next, &wait))
        e->tat = next;
    pthread_mutex_unlock(&rl->mu);
    return e ? wait : take_shared(rl, now_ns);
}

const char *md_ratelimit_key(const struct md_snap_rate_limit *cfg, const struct md_hdr *hdrs,
                             size_t n_hdrs, const char *peer_id, size_t *len)
{
    *len = 0;
    if (cfg->by_spiffe_id) {
        if (peer_id)
            *len = strlen(peer_id);
        return peer_id;
    }
    if (!cfg->header)
        return NULL;
    for (size_t i = 0; i < n_hdrs; i++)
        if (hdrs[i].name_len == cfg->header_len &&
            strncasecmp(hdrs[i].name, cfg->header, cfg->header_len) == 0) {
            *len = hdrs[i].value_len;
            return hdrs[i].value;
        }
    return NULL;
}

size_t md_ratelimit_keys(struct md_ratelimit *rl)
{
    pthread_mutex_lock(&rl->mu);
    size_t n = rl->n_keys;
    pthread_mutex_unlock(&rl->mu);
    return n;
}

struct md_ratelimit **md_ratelimit_new_all(const struct md_snapshot *snap)
{
    struct md_ratelimit **all = calloc(snap->n_rate_limits + 1, sizeof(*all));
    if (!all)
        return NULL;
    for (size_t i = 0; i < snap->n_rate_limits; i++)
        if (!(all[i] = md_ratelimit_new(snap->rate_limits[i]))) {
            md_ratelimit_free_all(all, i);
            return NULL;
        }
    return all;
}

void md_ratelimit_free_all(struct md_ratelimit **all, size_t n)
{
    if (!all)
        return;
    for (size_t i = 0; i < n; i++)
        md_ratelimit_free(all[i]);
    free(all);
}
