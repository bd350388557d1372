/* SPDX-License-Identifier: Apache-2.0 */
#include "admin/prom.h"

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Label values are resource names, which validation limits to
 * [a-zA-Z0-9_.-] (an unnamed route's is "VHOST/routes[i]"): nothing in them
 * needs escaping. */

/* Rate limits with the same labels (routes of the same name) make one series:
 * rendered at the first, summed over all. O(n²) in rate limits, a few. */
static bool first_of_labels(const struct md_snapshot *snap, size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (snap->rate_limits[k]->scope == snap->rate_limits[i]->scope &&
            strcmp(snap->rate_limits[k]->owner, snap->rate_limits[i]->owner) == 0)
            return false;
    return true;
}

static long long sum_rate_limit(const struct md_snapshot *snap, struct md_stats *const *blocks,
                                size_t n, size_t i, enum md_qstat s)
{
    long long sum = 0;
    for (size_t k = i; k < snap->n_rate_limits; k++)
        if (snap->rate_limits[k]->scope == snap->rate_limits[i]->scope &&
            strcmp(snap->rate_limits[k]->owner, snap->rate_limits[i]->owner) == 0)
            sum += md_stats_sum_q(blocks, n, k, s);
    return sum;
}

static void family(FILE *f, const struct md_stat_desc *d)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
            d->gauge ? "gauge" : "counter");
}

/* The control thread's per-cluster counters and membership gauges. */
static void render_clusters(FILE *f, const struct md_clusters *cs)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"meshd_cluster_dns_resolve_total", "DNS resolutions answered (changed or not).",
         offsetof(struct md_cluster_ctl_stats, dns_resolve)},
        {"meshd_cluster_dns_failure_total",
         "DNS resolutions that failed; the last good endpoint set stays.",
         offsetof(struct md_cluster_ctl_stats, dns_failure)},
        {"meshd_cluster_health_check_success_total", "Active health checks that passed.",
         offsetof(struct md_cluster_ctl_stats, hc_success)},
        {"meshd_cluster_health_check_failure_total",
         "Active health checks that failed (refused, timed out, wrong answer).",
         offsetof(struct md_cluster_ctl_stats, hc_failure)},
        {"meshd_cluster_health_check_ejected_total", "Endpoints marked unhealthy.",
         offsetof(struct md_cluster_ctl_stats, hc_ejected)},
        {"meshd_cluster_health_check_restored_total", "Endpoints marked healthy again.",
         offsetof(struct md_cluster_ctl_stats, hc_restored)},
    };
    const struct md_snapshot *snap = cs->snap;
    for (size_t s = 0; s < sizeof(counters) / sizeof(counters[0]); s++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", counters[s].name, counters[s].help,
                counters[s].name);
        for (size_t i = 0; i < snap->n_clusters; i++)
            fprintf(f, "%s{cluster=\"%s\"} %llu\n", counters[s].name, snap->clusters[i].name,
                    (unsigned long long)*(const uint64_t *)((const char *)&cs->stats[i] +
                                                            counters[s].off));
    }
    fprintf(f, "# HELP meshd_cluster_membership_total Endpoints in the current set.\n"
               "# TYPE meshd_cluster_membership_total gauge\n");
    for (size_t i = 0; i < snap->n_clusters; i++)
        fprintf(f, "meshd_cluster_membership_total{cluster=\"%s\"} %zu\n", snap->clusters[i].name,
                cs->cur[i] ? cs->cur[i]->n : 0);
    fprintf(f, "# HELP meshd_cluster_membership_healthy Endpoints in the current set taken "
               "as healthy.\n# TYPE meshd_cluster_membership_healthy gauge\n");
    for (size_t i = 0; i < snap->n_clusters; i++) {
        size_t healthy = 0;
        for (size_t k = 0; cs->cur[i] && k < cs->cur[i]->n; k++)
            healthy += md_ep_healthy(&cs->cur[i]->eps[k]);
        fprintf(f, "meshd_cluster_membership_healthy{cluster=\"%s\"} %zu\n", snap->clusters[i].name,
                healthy);
    }
    fprintf(f, "# HELP meshd_cluster_circuit_breakers_remaining Slots a circuit breaker has "
               "left (its limit minus those held now, all workers).\n"
               "# TYPE meshd_cluster_circuit_breakers_remaining gauge\n");
    for (size_t i = 0; i < snap->n_clusters; i++)
        for (int k = 0; k < MD_BREAKER__N; k++)
            fprintf(f,
                    "meshd_cluster_circuit_breakers_remaining{cluster=\"%s\",breaker=\"%s\"} %u\n",
                    snap->clusters[i].name, md_breakers_name((enum md_breaker)k),
                    md_breakers_remaining(&cs->breakers[i], (enum md_breaker)k));
    fprintf(f, "# HELP meshd_cluster_outlier_ejected_total Endpoints ejected by outlier "
               "detection.\n# TYPE meshd_cluster_outlier_ejected_total counter\n");
    for (size_t i = 0; i < snap->n_clusters; i++)
        fprintf(f, "meshd_cluster_outlier_ejected_total{cluster=\"%s\"} %llu\n",
                snap->clusters[i].name,
                (unsigned long long)__atomic_load_n(&cs->breakers[i].outlier_ejected,
                                                    __ATOMIC_RELAXED));
    fprintf(f, "# HELP meshd_cluster_outlier_ejected_active Endpoints ejected by outlier "
               "detection now.\n# TYPE meshd_cluster_outlier_ejected_active gauge\n");
    for (size_t i = 0; i < snap->n_clusters; i++) {
        size_t ejected = 0;
        for (size_t k = 0; cs->cur[i] && k < cs->cur[i]->n; k++)
            ejected += md_ep_ejected(&cs->cur[i]->eps[k]);
        fprintf(f, "meshd_cluster_outlier_ejected_active{cluster=\"%s\"} %zu\n",
                snap->clusters[i].name, ejected);
    }
    fprintf(f, "# HELP meshd_cluster_endpoint_healthy 1 when the endpoint takes traffic, 0 when "
               "a health check ejected it.\n# TYPE meshd_cluster_endpoint_healthy gauge\n");
    for (size_t i = 0; i < snap->n_clusters; i++)
        for (size_t k = 0; cs->cur[i] && k < cs->cur[i]->n; k++)
            fprintf(f, "meshd_cluster_endpoint_healthy{cluster=\"%s\",endpoint=\"%s\"} %d\n",
                    snap->clusters[i].name, cs->cur[i]->eps[k].label,
                    md_ep_healthy(&cs->cur[i]->eps[k]) ? 1 : 0);
}

int md_prom_render(const struct md_snapshot *snap, struct md_stats *const *blocks, size_t n,
                   const struct md_clusters *cs, const struct md_prom_server *server, char **out,
                   size_t *len)
{
    FILE *f = open_memstream(out, len);
    if (!f)
        return MD_ENOMEM;
    for (int s = 0; s < MD_LSTAT__N; s++) {
        family(f, &md_lstat_desc[s]);
        for (size_t i = 0; i < snap->n_listeners; i++)
            fprintf(f, "%s{listener=\"%s\"} %lld\n", md_lstat_desc[s].name, snap->listeners[i].name,
                    (long long)md_stats_sum_l(blocks, n, i, (enum md_lstat)s));
    }
    for (int s = 0; s < MD_CSTAT__N; s++) {
        const struct md_stat_desc *d = &md_cstat_desc[s];
        if (s == 0 || strcmp(md_cstat_desc[s - 1].name, d->name) != 0)
            family(f, d); /* once for entries that differ by their labels only */
        for (size_t i = 0; i < snap->n_clusters; i++)
            fprintf(f, "%s{cluster=\"%s\"%s%s} %lld\n", d->name, snap->clusters[i].name,
                    d->labels ? "," : "", d->labels ? d->labels : "",
                    (long long)md_stats_sum_c(blocks, n, i, (enum md_cstat)s));
    }
    for (int s = 0; s < MD_RSTAT__N; s++) {
        family(f, &md_rstat_desc[s]);
        for (size_t i = 0; i < snap->n_rbac_stats; i++) {
            const struct md_snap_rbac_stat *r = &snap->rbac_stats[i];
            fprintf(f, "%s{scope=\"%s\",owner=\"%s\",policy=\"%s\"} %lld\n", md_rstat_desc[s].name,
                    r->scope, r->owner, r->policy,
                    (long long)md_stats_sum_r(blocks, n, i, (enum md_rstat)s));
        }
    }
    for (int s = 0; s < MD_QSTAT__N; s++) {
        family(f, &md_qstat_desc[s]);
        for (size_t i = 0; i < snap->n_rate_limits; i++) {
            const struct md_snap_rate_limit *q = snap->rate_limits[i];
            if (first_of_labels(snap, i))
                fprintf(f, "%s{scope=\"%s\",owner=\"%s\"} %lld\n", md_qstat_desc[s].name, q->scope,
                        q->owner, sum_rate_limit(snap, blocks, n, i, (enum md_qstat)s));
        }
    }
    for (int s = 0; s < MD_TSTAT__N; s++) {
        family(f, &md_tstat_desc[s]);
        for (size_t i = 0; i < snap->n_retry_stats; i++)
            fprintf(f, "%s{route=\"%s\"} %lld\n", md_tstat_desc[s].name, snap->retry_stats[i],
                    (long long)md_stats_sum_t(blocks, n, i, (enum md_tstat)s));
    }
    render_clusters(f, cs);
    fprintf(f,
            "# HELP meshd_server_draining 1 while meshd drains (not accepting).\n"
            "# TYPE meshd_server_draining gauge\nmeshd_server_draining %d\n"
            "# HELP meshd_server_fd_exhausted 1 while fewer descriptors are free than the "
            "reserve kept for admin and open connections: listeners turn new connections away.\n"
            "# TYPE meshd_server_fd_exhausted gauge\nmeshd_server_fd_exhausted %d\n"
            "# HELP meshd_server_workers Worker threads.\n"
            "# TYPE meshd_server_workers gauge\nmeshd_server_workers %zu\n"
            "# HELP meshd_server_uptime_seconds Seconds since start.\n"
            "# TYPE meshd_server_uptime_seconds gauge\nmeshd_server_uptime_seconds %.3f\n"
            "# HELP meshd_build_info Build version.\n"
            "# TYPE meshd_build_info gauge\nmeshd_build_info{version=\"%s\"} 1\n"
            "# HELP meshd_tls_reload_total Certificate reloads (file change or SIGHUP) put "
            "in use.\n"
            "# TYPE meshd_tls_reload_total counter\nmeshd_tls_reload_total %llu\n"
            "# HELP meshd_tls_reload_failed_total Certificate reloads refused (bad PEM, key "
            "mismatch, expired); the previous material stays in use.\n"
            "# TYPE meshd_tls_reload_failed_total counter\nmeshd_tls_reload_failed_total %llu\n",
            server->draining ? 1 : 0, server->fds_short ? 1 : 0, server->workers, server->uptime_s,
            MESHD_VERSION, (unsigned long long)server->tls_reloads,
            (unsigned long long)server->tls_reload_failures);
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return MD_ENOMEM;
    }
    return 0;
}
