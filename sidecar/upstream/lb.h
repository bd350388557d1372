/* SPDX-License-Identifier: Apache-2.0 */
/* A worker's balancer for one cluster: which endpoint of the current set a
 * request (or a connection) goes to. Candidates are the usable endpoints
 * (healthy, and not ejected by outlier detection: md_ep_usable) of the
 * highest-priority level that has any; a level with fewer than
 * panic_threshold percent usable balances over all of its endpoints, and
 * when no level has a usable one the first level does. Then the cluster's
 * policy picks among them. State is per worker: no locks, no shared lines. */
#ifndef MESHD_UPSTREAM_LB_H
#define MESHD_UPSTREAM_LB_H

#include "upstream/epset.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct md_lb_cands;

struct md_lb {
    struct md_epset *set; /* one reference; NULL until the first set */
    uint32_t rr;          /* ROUND_ROBIN cursor */
    int64_t *wrr;         /* WEIGHTED_ROUND_ROBIN current weights, [set->n] */
    uint64_t rng;         /* xorshift64* state, never 0 */
    /* TCP proxy sessions this worker holds to each endpoint of the set
     * (LEAST_REQUEST's load for TCP), [set->n]; carried to a new set by
     * address. */
    uint32_t *sessions;
    /* The candidates of a first try, kept between picks: a pick costs O(1)
     * (O(log n) by weight), not a pass over the set. Valid for set->gen
     * cands_gen and until cands_until (ms, CLOCK_MONOTONIC: the first
     * ejection among the endpoints left out runs out). */
    struct md_lb_cands *cands;
    uint32_t cands_gen;
    uint64_t cands_until;
};

/* What a pick may use besides the set. */
struct md_lb_ctx {
    bool has_hash; /* RING_HASH / MAGLEV: the request's hash (else a random pick) */
    uint64_t hash;
    const uint64_t *tried; /* md_ep_key of endpoints to skip (earlier attempts) */
    size_t n_tried;
    /* LEAST_REQUEST: requests in progress to |ep| on this worker; NULL: none known */
    size_t (*load)(void *arg, const struct md_ep *ep);
    void *load_arg;
    /* No pick when no endpoint is healthy (instead of all-unhealthy panic):
     * the caller has somewhere better to go (a fallback cluster). */
    bool healthy_only;
};

void md_lb_init(struct md_lb *lb, uint64_t seed);
/* Switches to |set| (a reference is taken). Returns 0 or MD_ENOMEM (the
 * previous set stays). */
int md_lb_set(struct md_lb *lb, struct md_epset *set);
void md_lb_fini(struct md_lb *lb);

/* The endpoint for the next request per |cl|'s policy, or NULL when the set
 * is empty or every endpoint was tried. Valid while lb->set is. */
const struct md_ep *md_lb_pick(struct md_lb *lb, const struct md_snap_cluster *cl,
                               const struct md_lb_ctx *ctx);

/* Counts a session to the endpoint at |addr| (while it is in the set). */
void md_lb_hold(struct md_lb *lb, const struct md_addr *addr);
void md_lb_release(struct md_lb *lb, const struct md_addr *addr);
/* The sessions held to |ep|: a load callback for md_lb_ctx (arg: the lb). */
size_t md_lb_sessions(void *lb, const struct md_ep *ep);

#endif
