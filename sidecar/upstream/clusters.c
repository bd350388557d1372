/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/clusters.h"

#include "core/err.h"
#include "core/log.h"

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
    if (!cs->cur)
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
    cs->cur = NULL;
}

int md_clusters_update(struct md_clusters *cs, size_t idx, const struct md_snap_endpoint *eps,
                       size_t n)
{
    const struct md_snap_cluster *cl = &cs->snap->clusters[idx];
    struct md_epset *set = md_epset_new(cl, eps, n);
    if (!set)
        return MD_ENOMEM;
    struct md_epset *old = cs->cur[idx];
    if (old && md_epset_same(old, set)) {
        md_epset_unref(set);
        return 0;
    }
    for (size_t i = 0; old && i < set->n; i++) {
        struct md_ep *was = md_epset_find(old, &set->eps[i].addr);
        if (was)
            md_ep_set_healthy(&set->eps[i], md_ep_healthy(was));
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
