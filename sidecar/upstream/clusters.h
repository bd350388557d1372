/* SPDX-License-Identifier: Apache-2.0 */
/* The current endpoint set of every cluster, kept on the control thread:
 * static clusters get theirs at start, DNS clusters each time discovery
 * finds a different answer. A new set inherits the health of the endpoints
 * it shares with the old one, is handed to every worker (they switch
 * between two events) and to whoever watches (the health checker). */
#ifndef MESHD_UPSTREAM_CLUSTERS_H
#define MESHD_UPSTREAM_CLUSTERS_H

#include "snapshot.h"
#include "upstream/breakers.h"
#include "upstream/epset.h"

#include <stddef.h>

/* Gives |set| (borrowed: take a reference to keep it) of cluster |idx| to
 * the workers. */
typedef void md_clusters_publish_fn(void *arg, size_t idx, struct md_epset *set);
/* Tells a watcher that cluster |idx| has a new set. */
typedef void md_clusters_watch_fn(void *arg, size_t idx, struct md_epset *set);

/* What the control thread counts per cluster (workers count the rest). */
struct md_cluster_ctl_stats {
    uint64_t dns_resolve; /* resolutions that answered (changed or not) */
    uint64_t dns_failure; /* resolutions that failed: the last good set stays */
    uint64_t hc_success;  /* health checks that passed */
    uint64_t hc_failure;  /* health checks that failed (refused, timeout, bad answer) */
    uint64_t hc_ejected;  /* endpoints marked unhealthy */
    uint64_t hc_restored; /* endpoints marked healthy again */
};

struct md_clusters {
    const struct md_snapshot *snap; /* borrowed */
    struct md_epset **cur;          /* [n_clusters], one reference each; NULL before discovery */
    struct md_cluster_ctl_stats *stats; /* [n_clusters] */
    struct md_breakers *breakers;       /* [n_clusters] shared with every worker (borrowed) */
    md_clusters_publish_fn *publish;
    void *publish_arg;
    md_clusters_watch_fn *watch;
    void *watch_arg;
};

/* Builds the static clusters' sets and publishes them. Returns 0 or MD_ENOMEM. */
int md_clusters_init(struct md_clusters *cs, const struct md_snapshot *snap,
                     md_clusters_publish_fn *publish, void *arg);
void md_clusters_fini(struct md_clusters *cs);

/* Writes the /clusters admin page: every cluster's endpoints with priority,
 * weight and health (and outlier ejections), into a malloc'd string.
 * Returns 0 or MD_ENOMEM. */
int md_clusters_dump(const struct md_clusters *cs, char **out, size_t *len);

/* Replaces cluster |idx|'s set by one built from |eps| unless it is the
 * same. Returns 1 when it changed, 0 when not, MD_ENOMEM. */
int md_clusters_update(struct md_clusters *cs, size_t idx, const struct md_snap_endpoint *eps,
                       size_t n);

#endif
