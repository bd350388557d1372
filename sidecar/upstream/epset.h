/* SPDX-License-Identifier: Apache-2.0 */
/* A cluster's endpoints at one moment: immutable once built and shared by
 * reference between the control thread (discovery, health checks) and the
 * workers, which switch to a new set between two events (in-flight requests
 * keep the connections they have). Only the health flags change in place:
 * the health checker writes them, workers read them, one byte each.
 *
 * Endpoints are sorted by priority, so each priority level is a range; the
 * consistent-hash balancers' tables are built here once per level. */
#ifndef MESHD_UPSTREAM_EPSET_H
#define MESHD_UPSTREAM_EPSET_H

#include "core/addr.h"
#include "core/clock.h"
#include "core/hash.h"
#include "snapshot.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MD_MAGLEV_SIZE 65537u         /* prime, as Maglev needs */
#define MD_RING_MAX (1024.0 * 1024.0) /* ring points of a set at most, all levels */

struct md_epset;

struct md_ep {
    struct md_epset *set; /* the set it belongs to (for set->gen) */
    struct md_addr addr;
    uint64_t key; /* md_ep_key(&addr): how lists of tried endpoints name it */
    char label[MD_ADDR_STRLEN];
    uint32_t weight; /* >= 1 */
    uint32_t priority;
    uint8_t healthy; /* atomic; 1 unless an active health check said otherwise */
    /* Outlier detection (outlier.c), written by every worker and the control
     * thread with atomics. They belong to this set: a new set (DNS) starts
     * with fresh counts but keeps an ejection in force (clusters.c). */
    uint32_t consecutive_errors; /* 5xx answers, resets, connect failures in a row */
    uint32_t consecutive_grpc;   /* gRPC failure statuses in a row */
    uint32_t sr_total, sr_ok;    /* answers and successes this interval (success rate) */
    uint32_t times_ejected;      /* multiplies the ejection time; decays while not ejected */
    uint32_t ejection_ms;        /* length of the current (or last) ejection */
    uint64_t ejected_until;      /* CLOCK_MONOTONIC ms; 0: not ejected */
};

/* A ring point: the hash at which an endpoint's arc ends. */
struct md_ring_point {
    uint64_t hash;
    uint32_t ep;
};

struct md_eplevel {
    uint32_t priority;
    uint32_t first, n; /* eps[first .. first+n) */
    uint64_t total_weight;
    struct md_ring_point *ring; /* RING_HASH: sorted by hash */
    size_t ring_n;
    uint16_t *maglev; /* MAGLEV: [MD_MAGLEV_SIZE] endpoint offsets within the level */
};

struct md_epset {
    int refs; /* atomic */
    /* Atomic: bumped whenever an endpoint's health or ejection changes, so
     * that balancers know when the candidates they keep are stale. */
    uint32_t gen;
    size_t n;
    struct md_ep *eps;
    size_t n_levels;
    struct md_eplevel *levels; /* by priority, highest (0) first */
    uint32_t *by_key;          /* [n]: eps indices sorted by key (md_epset_find) */
    /* The clock of every ejected_until here (NULL, as md_epset_new leaves
     * it: the real one). Workers and the control thread compare the same
     * deadlines, so it is the set's, not a worker's; tests set a manual one. */
    const struct md_clock *clock;
};

/* Builds a set from |n| endpoints (any order; copied) with the tables |cl|'s
 * balancer needs. Returns NULL on ENOMEM. */
struct md_epset *md_epset_new(const struct md_snap_cluster *cl, const struct md_snap_endpoint *eps,
                              size_t n);
/* The same, unless the endpoints are those of |old| (may be NULL): then
 * NULL with *unchanged set, before any table is built (a DNS refresh that
 * changed nothing costs a sort, not a ring). NULL with *unchanged false:
 * ENOMEM. */
struct md_epset *md_epset_new_if_changed(const struct md_snap_cluster *cl,
                                         const struct md_snap_endpoint *eps, size_t n,
                                         const struct md_epset *old, bool *unchanged);
struct md_epset *md_epset_ref(struct md_epset *set);
/* NULL is ignored. */
void md_epset_unref(struct md_epset *set);

/* An address as a 64-bit name (a hash of its bytes, which hold no stray
 * padding): a list of endpoints already tried costs 8 bytes an entry, not a
 * sockaddr_storage. */
uint64_t md_ep_key(const struct md_addr *a);

/* The endpoint of |set| at |addr|, or NULL: O(log n) (outlier detection
 * asks on every response). */
struct md_ep *md_epset_find(struct md_epset *set, const struct md_addr *addr);

static inline bool md_ep_healthy(const struct md_ep *ep)
{
    return __atomic_load_n(&ep->healthy, __ATOMIC_RELAXED) != 0;
}

/* Tells the set's balancers that |ep| took or left traffic. */
static inline void md_ep_changed(struct md_ep *ep)
{
    __atomic_add_fetch(&ep->set->gen, 1, __ATOMIC_RELEASE);
}

static inline void md_ep_set_healthy(struct md_ep *ep, bool healthy)
{
    if (__atomic_exchange_n(&ep->healthy, healthy ? 1 : 0, __ATOMIC_RELAXED) != healthy)
        md_ep_changed(ep);
}

/* The time in ms on the clock of |set|'s ejected_until (NULL: the real one). */
static inline uint64_t md_epset_clock_ms(const struct md_epset *set)
{
    return md_clock_ms(set ? set->clock : NULL);
}

/* Ejected by outlier detection now? Reads the clock only while an ejection
 * is recorded, so clusters without one pay a load. */
static inline bool md_ep_ejected(const struct md_ep *ep)
{
    uint64_t until = __atomic_load_n(&ep->ejected_until, __ATOMIC_RELAXED);
    return until && until > md_epset_clock_ms(ep->set);
}

/* Takes traffic: healthy by active checks and not ejected by passive ones. */
static inline bool md_ep_usable(const struct md_ep *ep)
{
    return md_ep_healthy(ep) && !md_ep_ejected(ep);
}

/* Same addresses, weights and priorities? (A DNS answer that changed nothing.) */
bool md_epset_same(const struct md_epset *a, const struct md_epset *b);

/* The ring point or Maglev entry for |hash| in |lv|: an index into eps. */
uint32_t md_eplevel_ring_lookup(const struct md_epset *set, const struct md_eplevel *lv,
                                uint64_t hash, size_t *pos);
uint32_t md_eplevel_maglev_lookup(const struct md_epset *set, const struct md_eplevel *lv,
                                  uint64_t hash);

#endif
