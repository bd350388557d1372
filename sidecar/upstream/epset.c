/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/epset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Priority first; then by address, so that the same endpoints in another
 * DNS answer order make the same set (and the same tables). */
static int ep_cmp(const void *a, const void *b)
{
    const struct md_ep *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    if (x->addr.len != y->addr.len)
        return x->addr.len < y->addr.len ? -1 : 1;
    return memcmp(&x->addr.ss, &y->addr.ss, x->addr.len);
}

static int point_cmp(const void *a, const void *b)
{
    const struct md_ring_point *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash ? 1 : x->ep < y->ep ? -1 : x->ep > y->ep;
}

static uint64_t point_hash(const struct md_ep *ep, uint32_t k)
{
    char buf[MD_ADDR_STRLEN + 16];
    int n = snprintf(buf, sizeof(buf), "%s_%u", ep->label, k);
    return md_hash64(buf, (size_t)n);
}

/* Each endpoint gets |per_weight| points per unit of its weight: its
 * points do not depend on the others, so one leaving moves only its keys
 * (unless the cap scales everyone down). |scale| keeps the rings of all
 * levels together within MD_RING_MAX points. */
static int build_ring(struct md_epset *set, struct md_eplevel *lv, uint32_t per_weight,
                      double scale)
{
    size_t total = 0;
    uint32_t *pts = calloc(lv->n, sizeof(*pts));
    if (!pts)
        return -1;
    for (uint32_t i = 0; i < lv->n; i++) {
        double p = (double)per_weight * set->eps[lv->first + i].weight * scale;
        pts[i] = p >= 1.0 ? (uint32_t)p : 1;
        total += pts[i];
    }
    lv->ring = malloc(total * sizeof(*lv->ring));
    if (!lv->ring) {
        free(pts);
        return -1;
    }
    for (uint32_t i = 0; i < lv->n; i++)
        for (uint32_t k = 0; k < pts[i]; k++)
            lv->ring[lv->ring_n++] =
                (struct md_ring_point){point_hash(&set->eps[lv->first + i], k), lv->first + i};
    free(pts);
    qsort(lv->ring, lv->ring_n, sizeof(*lv->ring), point_cmp);
    return 0;
}

/* Maglev (Eisenbud et al., NSDI 2016) §3.4, with turns in proportion to
 * weight: each endpoint walks its own permutation of the table and takes
 * the next free entry on each of its turns. */
static int build_maglev(struct md_epset *set, struct md_eplevel *lv)
{
    const uint32_t m = MD_MAGLEV_SIZE;
    uint32_t n = lv->n;
    lv->maglev = malloc(m * sizeof(*lv->maglev));
    uint32_t *offset = calloc(n, sizeof(uint32_t)), *skip = calloc(n, sizeof(uint32_t));
    uint32_t *next = calloc(n, sizeof(uint32_t));
    double *credit = calloc(n, sizeof(double));
    if (!lv->maglev || !offset || !skip || !next || !credit) {
        free(offset), free(skip), free(next), free(credit);
        return -1;
    }
    uint32_t max_w = 1;
    for (uint32_t i = 0; i < n; i++) {
        const struct md_ep *ep = &set->eps[lv->first + i];
        size_t len = strlen(ep->label);
        offset[i] = (uint32_t)(md_hash64(ep->label, len) % m);
        skip[i] = (uint32_t)(point_hash(ep, 0xffffffffu) % (m - 1)) + 1;
        if (ep->weight > max_w)
            max_w = ep->weight;
    }
    memset(lv->maglev, 0xff, m * sizeof(*lv->maglev));
    uint32_t filled = 0;
    while (filled < m) {
        for (uint32_t i = 0; i < n && filled < m; i++) {
            credit[i] += (double)set->eps[lv->first + i].weight / max_w;
            for (; credit[i] >= 1.0 && filled < m; credit[i] -= 1.0) {
                uint32_t c;
                do
                    c = (uint32_t)((offset[i] + (uint64_t)next[i]++ * skip[i]) % m);
                while (lv->maglev[c] != 0xffff);
                lv->maglev[c] = (uint16_t)i;
                filled++;
            }
        }
    }
    free(offset), free(skip), free(next), free(credit);
    return 0;
}

/* By key, then by place in the set: the first of equal addresses first. */
static int key_cmp(const void *a, const void *b, void *arg)
{
    const struct md_epset *set = arg;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint64_t kx = set->eps[x].key, ky = set->eps[y].key;
    return kx < ky ? -1 : kx > ky ? 1 : (x > y) - (x < y);
}

/* The endpoints, sorted, and their levels; no tables yet. */
static struct md_epset *copy_sorted(const struct md_snap_endpoint *eps, size_t n)
{
    struct md_epset *set = calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    if (n >
        MD_SNAP_MAX_ENDPOINTS) /* validation and DNS keep to it; the balancers' arrays rely on it */
        n = MD_SNAP_MAX_ENDPOINTS;
    set->refs = 1;
    set->eps = calloc(n ? n : 1, sizeof(*set->eps));
    set->levels = calloc(n ? n : 1, sizeof(*set->levels));
    set->by_key = calloc(n ? n : 1, sizeof(*set->by_key));
    if (!set->eps || !set->levels || !set->by_key)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        struct md_ep *ep = &set->eps[i];
        ep->set = set;
        ep->addr = eps[i].addr;
        ep->key = md_ep_key(&ep->addr);
        memcpy(ep->label, eps[i].label, sizeof(ep->label));
        ep->weight = eps[i].weight ? eps[i].weight : 1;
        ep->priority = eps[i].priority;
        ep->healthy = 1;
    }
    set->n = n;
    qsort(set->eps, n, sizeof(*set->eps), ep_cmp);
    for (uint32_t i = 0; i < n; i++) {
        struct md_eplevel *lv = set->n_levels ? &set->levels[set->n_levels - 1] : NULL;
        if (!lv || lv->priority != set->eps[i].priority) {
            lv = &set->levels[set->n_levels++];
            lv->priority = set->eps[i].priority;
            lv->first = i;
        }
        lv->n++;
        lv->total_weight += set->eps[i].weight;
    }
    for (uint32_t i = 0; i < n; i++)
        set->by_key[i] = i;
    qsort_r(set->by_key, n, sizeof(*set->by_key), key_cmp, set);
    return set;
fail:
    md_epset_unref(set);
    return NULL;
}

/* The consistent-hash tables |cl|'s balancer needs. Returns 0 or -1. */
static int build_tables(struct md_epset *set, const struct md_snap_cluster *cl)
{
    double weight = 0, scale = 1.0;
    for (size_t k = 0; k < set->n_levels; k++)
        weight += (double)set->levels[k].total_weight;
    if ((double)cl->ring_points * weight > MD_RING_MAX)
        scale = MD_RING_MAX / ((double)cl->ring_points * weight);
    for (size_t k = 0; k < set->n_levels; k++) {
        if (cl->lb == MD_LB_RING_HASH &&
            build_ring(set, &set->levels[k], cl->ring_points, scale) < 0)
            return -1;
        if (cl->lb == MD_LB_MAGLEV && build_maglev(set, &set->levels[k]) < 0)
            return -1;
    }
    return 0;
}

struct md_epset *md_epset_new(const struct md_snap_cluster *cl, const struct md_snap_endpoint *eps,
                              size_t n)
{
    bool unchanged;
    return md_epset_new_if_changed(cl, eps, n, NULL, &unchanged);
}

struct md_epset *md_epset_new_if_changed(const struct md_snap_cluster *cl,
                                         const struct md_snap_endpoint *eps, size_t n,
                                         const struct md_epset *old, bool *unchanged)
{
    struct md_epset *set = copy_sorted(eps, n);
    *unchanged = set && old && md_epset_same(old, set);
    if (set && (*unchanged || build_tables(set, cl) < 0)) {
        md_epset_unref(set); /* the same as before: its tables are not built for nothing */
        set = NULL;
    }
    return set;
}

struct md_epset *md_epset_ref(struct md_epset *set)
{
    __atomic_add_fetch(&set->refs, 1, __ATOMIC_RELAXED);
    return set;
}

void md_epset_unref(struct md_epset *set)
{
    if (!set || __atomic_sub_fetch(&set->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t k = 0; set->levels && k < set->n_levels; k++) {
        free(set->levels[k].ring);
        free(set->levels[k].maglev);
    }
    free(set->levels);
    free(set->by_key);
    free(set->eps);
    free(set);
}

uint64_t md_ep_key(const struct md_addr *a)
{
    return md_hash64(&a->ss, a->len);
}

struct md_ep *md_epset_find(struct md_epset *set, const struct md_addr *addr)
{
    uint64_t key = md_ep_key(addr);
    size_t lo = 0, hi = set->n; /* the first with a key >= key */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (set->eps[set->by_key[mid]].key < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < set->n && set->eps[set->by_key[lo]].key == key; lo++)
        if (md_addr_equal(&set->eps[set->by_key[lo]].addr, addr))
            return &set->eps[set->by_key[lo]];
    return NULL;
}

bool md_epset_same(const struct md_epset *a, const struct md_epset *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (ep_cmp(&a->eps[i], &b->eps[i]) != 0 || a->eps[i].weight != b->eps[i].weight)
            return false;
    return true;
}

uint32_t md_eplevel_ring_lookup(const struct md_epset *set, const struct md_eplevel *lv,
                                uint64_t hash, size_t *pos)
{
    size_t lo = 0, hi = lv->ring_n;
    while (lo < hi) { /* the first point at or after |hash| */
        size_t mid = lo + (hi - lo) / 2;
        if (lv->ring[mid].hash < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == lv->ring_n)
        lo = 0; /* past the last point: the ring wraps */
    *pos = lo;
    return lv->ring[lo].ep;
}

uint32_t md_eplevel_maglev_lookup(const struct md_epset *set, const struct md_eplevel *lv,
                                  uint64_t hash)
{
    return lv->first + lv->maglev[hash % MD_MAGLEV_SIZE];
}
