/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/lb.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

/* Rehashes MAGLEV tries before taking any candidate: enough to step past a
 * few unhealthy endpoints while keeping keys where they were. */
#define MAGLEV_RETRIES 8

void md_lb_init(struct md_lb *lb, uint64_t seed)
{
    memset(lb, 0, sizeof(*lb));
    lb->rng = seed | 1;
    lb->rr = (uint32_t)seed;
}

static void cands_free(struct md_lb *lb);

int md_lb_set(struct md_lb *lb, struct md_epset *set)
{
    int64_t *wrr = calloc(set->n ? set->n : 1, sizeof(*wrr));
    uint32_t *sessions = calloc(set->n ? set->n : 1, sizeof(*sessions));
    if (!wrr || !sessions) {
        free(wrr);
        free(sessions);
        return MD_ENOMEM;
    }
    for (size_t i = 0; lb->set && i < lb->set->n; i++) { /* sessions go on in the new set */
        struct md_ep *ep = lb->sessions[i] ? md_epset_find(set, &lb->set->eps[i].addr) : NULL;
        if (ep)
            sessions[ep - set->eps] += lb->sessions[i];
    }
    cands_free(lb);
    free(lb->wrr);
    lb->wrr = wrr;
    free(lb->sessions);
    lb->sessions = sessions;
    md_epset_unref(lb->set);
    lb->set = md_epset_ref(set);
    return 0;
}

void md_lb_fini(struct md_lb *lb)
{
    cands_free(lb);
    free(lb->sessions);
    lb->sessions = NULL;
    md_epset_unref(lb->set);
    free(lb->wrr);
    lb->set = NULL;
    lb->wrr = NULL;
}

static bool was_tried(const struct md_ep *ep, const struct md_lb_ctx *ctx)
{
    for (size_t i = 0; i < ctx->n_tried; i++)
        if (ctx->tried[i] == ep->key)
            return true;
    return false;
}

/* The candidates: their indices into set->eps with their weights summed
 * (a pick by weight is a binary search), and a membership bitmap. */
struct md_lb_cands {
    uint32_t *idx;
    uint64_t *cum; /* cum[k]: the weights of idx[0..k] */
    uint8_t *in;   /* bit i: set->eps[i] is one */
    uint32_t n;
    uint64_t total_weight;
    const struct md_eplevel *level;
};

static bool is_cand(const struct md_lb_cands *c, uint32_t i)
{
    return c->in[i / 8] & (1u << (i % 8));
}

static void choose(const struct md_lb *lb, const struct md_snap_cluster *cl,
                   const struct md_lb_ctx *ctx, struct md_lb_cands *c)
{
    const struct md_epset *set = lb->set;
    const struct md_eplevel *pick = NULL;
    bool panic = true;
    for (size_t k = 0; k < set->n_levels && !pick; k++) { /* the first level with a healthy one */
        const struct md_eplevel *lv = &set->levels[k];
        uint32_t healthy = 0;
        bool untried_healthy = false;
        for (uint32_t i = lv->first; i < lv->first + lv->n; i++) {
            bool h = md_ep_usable(&set->eps[i]);
            healthy += h;
            untried_healthy |= h && !was_tried(&set->eps[i], ctx);
        }
        if (untried_healthy) {
            pick = lv;
            panic = (uint64_t)healthy * 100 < (uint64_t)lv->n * cl->panic_threshold;
        }
    }
    for (size_t k = 0; k < set->n_levels && !pick && !ctx->healthy_only; k++) {
        /* none healthy: the first level with one untried, all of it */
        const struct md_eplevel *lv = &set->levels[k];
        for (uint32_t i = lv->first; i < lv->first + lv->n && !pick; i++)
            if (!was_tried(&set->eps[i], ctx))
                pick = lv;
    }
    memset(c->in, 0, (set->n + 7) / 8);
    c->n = 0;
    c->total_weight = 0;
    c->level = pick;
    if (!pick)
        return;
    for (uint32_t i = pick->first; i < pick->first + pick->n; i++) {
        const struct md_ep *ep = &set->eps[i];
        if ((!panic && !md_ep_usable(ep)) || was_tried(ep, ctx))
            continue;
        c->total_weight += ep->weight;
        c->cum[c->n] = c->total_weight;
        c->idx[c->n++] = i;
        c->in[i / 8] |= (uint8_t)(1u << (i % 8));
    }
}

/* The candidates of a first try (nothing tried, no healthy_only) as lb
 * keeps them: recomputed only when the set, its generation (health or
 * ejection changed) or the cluster changed, or the first ejection among
 * them ran out. Returns NULL on ENOMEM. */
static const struct md_lb_cands *first_try(struct md_lb *lb, const struct md_snap_cluster *cl,
                                           const struct md_lb_ctx *ctx)
{
    uint32_t gen = __atomic_load_n(&lb->set->gen, __ATOMIC_ACQUIRE);
    if (lb->cands && lb->cands_gen == gen &&
        (lb->cands_until == UINT64_MAX || md_epset_clock_ms(lb->set) < lb->cands_until))
        return lb->cands;
    size_t n = lb->set->n ? lb->set->n : 1;
    if (!lb->cands) {
        struct md_lb_cands *c = calloc(1, sizeof(*c));
        if (!c || !(c->idx = calloc(n, sizeof(*c->idx))) ||
            !(c->cum = calloc(n, sizeof(*c->cum))) || !(c->in = calloc((n + 7) / 8, 1))) {
            if (c) {
                free(c->idx);
                free(c->cum);
            }
            free(c);
            return NULL;
        }
        lb->cands = c;
    }
    /* The clock before choose() reads it: an ejection it saw in force is
     * one this loop counts. */
    uint64_t now = md_epset_clock_ms(lb->set), until = UINT64_MAX;
    choose(lb, cl, ctx, lb->cands);
    for (size_t i = 0; i < lb->set->n; i++) {
        uint64_t u = __atomic_load_n(&lb->set->eps[i].ejected_until, __ATOMIC_RELAXED);
        if (u > now && u < until)
            until = u;
    }
    lb->cands_gen = gen;
    lb->cands_until = until;
    return lb->cands;
}

static void cands_free(struct md_lb *lb)
{
    if (lb->cands) {
        free(lb->cands->idx);
        free(lb->cands->cum);
        free(lb->cands->in);
        free(lb->cands);
    }
    lb->cands = NULL;
}

/* The position in c->idx whose share of the summed weights holds |r|
 * (r < c->total_weight). */
static uint32_t position_of(const struct md_lb_cands *c, uint64_t r)
{
    uint32_t lo = 0, hi = c->n - 1; /* the first position with cum > r */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->cum[mid] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* A candidate drawn by weight: its position in c->idx. */
static uint32_t weighted_random(struct md_lb *lb, const struct md_lb_cands *c)
{
    return position_of(c, md_xorshift64(&lb->rng) % c->total_weight);
}

/* nginx's smooth weighted round robin: every candidate gains its weight,
 * the richest is picked and pays the total. */
static uint32_t smooth_wrr(struct md_lb *lb, const struct md_lb_cands *c)
{
    uint32_t best = c->idx[0];
    for (uint32_t k = 0; k < c->n; k++) {
        uint32_t i = c->idx[k];
        lb->wrr[i] += lb->set->eps[i].weight;
        if (lb->wrr[i] > lb->wrr[best])
            best = i;
    }
    lb->wrr[best] -= (int64_t)c->total_weight;
    return best;
}

/* Power of two choices: two different candidates (when there are two),
 * each drawn by weight. */
static uint32_t least_request(struct md_lb *lb, const struct md_lb_ctx *ctx,
                              const struct md_lb_cands *c)
{
    uint32_t ka = weighted_random(lb, c), kb = ka;
    uint64_t wa = c->cum[ka] - (ka ? c->cum[ka - 1] : 0);
    uint64_t rest = c->total_weight - wa;
    if (rest) { /* drawn by weight among the others: a's share is skipped over */
        uint64_t r = md_xorshift64(&lb->rng) % rest;
        if (r >= c->cum[ka] - wa)
            r += wa;
        kb = position_of(c, r);
    }
    uint32_t a = c->idx[ka], b = c->idx[kb];
    if (!ctx->load)
        return a;
    return ctx->load(ctx->load_arg, &lb->set->eps[b]) < ctx->load(ctx->load_arg, &lb->set->eps[a])
               ? b
               : a;
}

static uint32_t ring_hash(struct md_lb *lb, uint64_t hash, const struct md_lb_cands *c)
{
    const struct md_eplevel *lv = c->level;
    size_t pos;
    uint32_t i = md_eplevel_ring_lookup(lb->set, lv, hash, &pos);
    /* Walk on to the next point of a candidate: a key leaves its endpoint
     * only while that one is out. */
    for (size_t step = 0; !is_cand(c, i) && step < lv->ring_n; step++)
        i = lv->ring[(pos + step) % lv->ring_n].ep;
    return is_cand(c, i) ? i : c->idx[hash % c->n];
}

static uint32_t maglev(struct md_lb *lb, uint64_t hash, const struct md_lb_cands *c)
{
    uint64_t h = hash;
    for (int k = 0; k < MAGLEV_RETRIES; k++) {
        uint32_t i = md_eplevel_maglev_lookup(lb->set, c->level, h);
        if (is_cand(c, i))
            return i;
        h = md_hash64(&h, sizeof(h));
    }
    return c->idx[hash % c->n];
}

const struct md_ep *md_lb_pick(struct md_lb *lb, const struct md_snap_cluster *cl,
                               const struct md_lb_ctx *ctx)
{
    if (!lb->set || lb->set->n == 0)
        return NULL;
    const struct md_lb_cands *c = NULL;
    struct md_lb_cands local;
    uint32_t idx[MD_SNAP_MAX_ENDPOINTS];
    uint64_t cum[MD_SNAP_MAX_ENDPOINTS];
    uint8_t in[MD_SNAP_MAX_ENDPOINTS / 8];
    if (ctx->n_tried == 0 && !ctx->healthy_only)
        c = first_try(lb, cl, ctx);
    if (!c) { /* a retry (or no memory to keep them): this pick's own */
        local = (struct md_lb_cands){.idx = idx, .cum = cum, .in = in};
        choose(lb, cl, ctx, &local);
        c = &local;
    }
    if (c->n == 0)
        return NULL;
    uint32_t i;
    switch (cl->lb) {
    case MD_LB_WEIGHTED_ROUND_ROBIN: i = smooth_wrr(lb, c); break;
    case MD_LB_LEAST_REQUEST: i = least_request(lb, ctx, c); break;
    case MD_LB_RING_HASH:
        i = ctx->has_hash ? ring_hash(lb, ctx->hash, c) : c->idx[weighted_random(lb, c)];
        break;
    case MD_LB_MAGLEV:
        i = ctx->has_hash ? maglev(lb, ctx->hash, c) : c->idx[weighted_random(lb, c)];
        break;
    case MD_LB_RANDOM: i = c->idx[weighted_random(lb, c)]; break;
    default: i = c->idx[lb->rr++ % c->n]; break;
    }
    return &lb->set->eps[i];
}

void md_lb_hold(struct md_lb *lb, const struct md_addr *addr)
{
    struct md_ep *ep = lb->set ? md_epset_find(lb->set, addr) : NULL;
    if (ep)
        lb->sessions[ep - lb->set->eps]++;
}

void md_lb_release(struct md_lb *lb, const struct md_addr *addr)
{
    struct md_ep *ep = lb->set ? md_epset_find(lb->set, addr) : NULL;
    if (ep && lb->sessions[ep - lb->set->eps])
        lb->sessions[ep - lb->set->eps]--;
}

size_t md_lb_sessions(void *arg, const struct md_ep *ep)
{
    struct md_lb *lb = arg;
    return lb->set && ep >= lb->set->eps && ep < lb->set->eps + lb->set->n
               ? lb->sessions[ep - lb->set->eps]
               : 0;
}
