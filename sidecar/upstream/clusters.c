/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/clusters.h"

#include "core/err.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int md_clusters_init(struct md_clusters *cs, const struct md_snapshot *snap,
                     md_clusters_publish_fn *publish, void *arg)
{
    memset(cs, 0, sizeof(*cs));
    cs->snap = snap;
    cs->publish = publish;
    cs->publish_arg = arg;
    cs->cur = calloc(snap->n_clusters ? snap->n_clusters : 1, sizeof(*cs->cur));
    cs->stats = calloc(snap->n_clusters ? snap->n_clusters : 1, sizeof(*cs->stats));
    cs->breakers = md_breakers_new(snap);
    if (!cs->cur || !cs->stats || !cs->breakers)
        return MD_ENOMEM;
    for (size_t i = 0; i < snap->n_clusters; i++) {
        const struct md_snap_cluster *cl = &snap->clusters[i];
        if (cl->discovery == MD_DISCOVERY_STATIC &&
            md_clusters_update(cs, i, cl->endpoints, cl->n_endpoints) < 0)
            return MD_ENOMEM;
    }
    return 0;
}

void md_clusters_fini(struct md_clusters *cs)
{
    for (size_t i = 0; cs->cur && i < cs->snap->n_clusters; i++)
        md_epset_unref(cs->cur[i]);
    free(cs->cur);
    free(cs->stats);
    md_breakers_free(cs->breakers);
    cs->cur = NULL;
    cs->stats = NULL;
    cs->breakers = NULL;
}

int md_clusters_dump(const struct md_clusters *cs, char **out, size_t *len)
{
    FILE *f = open_memstream(out, len);
    if (!f)
        return MD_ENOMEM;
    static const char *const kinds[] = {"STATIC", "DNS", "DNS_SRV"};
    for (size_t i = 0; i < cs->snap->n_clusters; i++) {
        const struct md_snap_cluster *cl = &cs->snap->clusters[i];
        const struct md_epset *set = cs->cur[i];
        size_t healthy = 0, ejected = 0;
        for (size_t k = 0; set && k < set->n; k++) {
            healthy += md_ep_healthy(&set->eps[k]);
            ejected += md_ep_ejected(&set->eps[k]);
        }
        fprintf(f, "%s type=%s%s%s endpoints=%zu healthy=%zu health_checked=%s", cl->name,
                kinds[cl->discovery], cl->dns_name ? " dns_name=" : "",
                cl->dns_name ? cl->dns_name : "", set ? set->n : 0, healthy,
                cl->health_check ? "yes" : "no");
        if (cl->outlier)
            fprintf(f, " outlier_ejected=%zu", ejected);
        fputc('\n', f);
        uint64_t now = md_epset_clock_ms(set);
        for (size_t k = 0; set && k < set->n; k++) {
            const struct md_ep *ep = &set->eps[k];
            fprintf(f, "  %s priority=%u weight=%u health=%s", ep->label, ep->priority, ep->weight,
                    md_ep_healthy(ep) ? "healthy" : "unhealthy");
            uint64_t until = __atomic_load_n(&ep->ejected_until, __ATOMIC_RELAXED);
            if (cl->outlier && until > now)
                fprintf(f, " outlier=ejected ejected_ms_left=%llu times_ejected=%u",
                        (unsigned long long)(until - now), ep->times_ejected);
            else if (cl->outlier)
                fprintf(f, " outlier=ok");
            fputc('\n', f);
        }
    }
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return MD_ENOMEM;
    }
    return 0;
}

int md_clusters_update(struct md_clusters *cs, size_t idx, const struct md_snap_endpoint *eps,
                       size_t n)
{
    const struct md_snap_cluster *cl = &cs->snap->clusters[idx];
    struct md_epset *old = cs->cur[idx];
    bool unchanged;
    struct md_epset *set = md_epset_new_if_changed(cl, eps, n, old, &unchanged);
    if (!set)
        return unchanged ? 0 : MD_ENOMEM;
    for (size_t i = 0; old && i < set->n; i++) {
        struct md_ep *was = md_epset_find(old, &set->eps[i].addr);
        if (!was)
            continue;
        md_ep_set_healthy(&set->eps[i], md_ep_healthy(was));
        /* An ejection stays in force; the counts start afresh (outlier.c). */
        set->eps[i].ejected_until = __atomic_load_n(&was->ejected_until, __ATOMIC_RELAXED);
        set->eps[i].times_ejected = __atomic_load_n(&was->times_ejected, __ATOMIC_RELAXED);
        set->eps[i].ejection_ms = __atomic_load_n(&was->ejection_ms, __ATOMIC_RELAXED);
    }
    cs->cur[idx] = set;
    MD_LOG(MD_LOG_INFO, "cluster_endpoints", "cluster=%s endpoints=%zu levels=%zu", cl->name,
           set->n, set->n_levels);
    cs->publish(cs->publish_arg, idx, set);
    if (cs->watch)
        cs->watch(cs->watch_arg, idx, set);
    md_epset_unref(old);
    return 1;
}
