/* SPDX-License-Identifier: Apache-2.0 */
/* Circuit breakers: per-cluster limits on what all workers together have
 * under way upstream. One block per cluster holds the limits and shared
 * atomic counts; the control thread makes the blocks (md_clusters_init) and
 * the workers borrow them (md_worker.breakers). A slot is taken before the
 * thing it counts exists and given back exactly once when that ends, so the
 * counts return to 0 when idle. Over a limit the caller answers at once
 * (503 with x-meshd-overflowed, gRPC UNAVAILABLE) instead of queueing.
 *
 * Who holds which slot:
 *   connections  an upstream pool connection, from the decision to open it
 *                (connecting counts) until it is freed (upool.c)
 *   pending      a request waiting for a connection to be made (upool.c)
 *   requests     a request sent to the cluster, waiting for a connection or
 *                not: the pool's pending entry, then the h1/h2 client stream
 *   retries      a retry from its decision until its attempt ends (router)
 *
 * The block also carries the cluster's outlier ejection count and the flag
 * that makes ejection decisions one at a time (outlier.c): like the
 * breakers, they are shared by every thread. */
#ifndef MESHD_UPSTREAM_BREAKERS_H
#define MESHD_UPSTREAM_BREAKERS_H

#include "snapshot.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct md_worker;

enum md_breaker {
    MD_BREAKER_CONNECTIONS,
    MD_BREAKER_PENDING,
    MD_BREAKER_REQUESTS,
    MD_BREAKER_RETRIES,
    MD_BREAKER__N
};

/* One cluster's; a cache line of its own so clusters do not share lines. */
struct md_breakers {
    uint32_t max[MD_BREAKER__N];  /* the limits (snapshot, defaults applied); immutable */
    uint32_t open[MD_BREAKER__N]; /* atomic: slots held now */
    uint64_t outlier_ejected;     /* atomic: outlier ejections made (any thread) */
    uint8_t ejecting;             /* atomic: an ejection is being decided (outlier.c) */
} __attribute__((aligned(64)));

/* One block per cluster of |snap|, limits set, counts 0. NULL on ENOMEM. */
struct md_breakers *md_breakers_new(const struct md_snapshot *snap);
/* NULL is ignored. */
void md_breakers_free(struct md_breakers *b);

/* Takes a |k| slot unless all max[k] are held. |b| NULL: no limits (true). */
bool md_breakers_take(struct md_breakers *b, enum md_breaker k);
/* Gives back a |k| slot taken with md_breakers_take. |b| NULL: nothing. */
void md_breakers_put(struct md_breakers *b, enum md_breaker k);
/* max[k] minus the slots held (0 when over, e.g. a limit lowered). */
uint32_t md_breakers_remaining(const struct md_breakers *b, enum md_breaker k);
/* Slots held now. */
uint32_t md_breakers_open(const struct md_breakers *b, enum md_breaker k);
/* "connections", "pending", "requests", "retries": the label and the
 * x-meshd-overflowed value. */
const char *md_breakers_name(enum md_breaker k);

/* |w|'s block for cluster |cluster|, or NULL when it has none (a worker
 * without a control thread, in tests). */
struct md_breakers *md_breakers_of(struct md_worker *w, size_t cluster);

/* Counts a refusal by breaker |k| (meshd_cluster_overflow_total). */
void md_breakers_overflowed(struct md_worker *w, size_t cluster, enum md_breaker k);

/* For the router's retries: true when a retry of a request to |cluster|
 * may start (a retries slot is taken: call md_breakers_retry_end exactly
 * once when that attempt ends, however it ends); false when max_retries are
 * under way (counted as an overflow; do not retry). */
bool md_breakers_retry_begin(struct md_worker *w, size_t cluster);
void md_breakers_retry_end(struct md_worker *w, size_t cluster);

#endif
