/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus text exposition format 0.0.4 for every counter and gauge. */
#ifndef MESHD_ADMIN_PROM_H
#define MESHD_ADMIN_PROM_H

#include "core/stats.h"
#include "snapshot.h"
#include "upstream/clusters.h"

#include <stdbool.h>
#include <stddef.h>

/* Process-wide values that are not per-worker counters. */
struct md_prom_server {
    bool draining;
    bool fds_short; /* fewer descriptors free than the reserve (net/acceptor.h) */
    size_t workers;
    double uptime_s;
    uint64_t tls_reloads, tls_reload_failures;
};

/* Renders the exposition of |snap|'s listeners and clusters summed over the
 * |n| worker blocks, and the control thread's cluster figures (|cs|), into
 * a malloc'd string (*out, *len). Returns 0 or MD_ENOMEM. */
int md_prom_render(const struct md_snapshot *snap, struct md_stats *const *blocks, size_t n,
                   const struct md_clusters *cs, const struct md_prom_server *server, char **out,
                   size_t *len);

#endif
