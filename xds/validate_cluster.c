/* SPDX-License-Identifier: Apache-2.0 */
/* Cluster checks: name, discovery type, LB policy, timeouts, endpoints. */
#include "validate.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define MAX_CONNECT_TIMEOUT_MS 60000u
#define MAX_CONNECT_ATTEMPTS 16u
#define MAX_ENDPOINTS 1024u

static void check_endpoints(struct md_errlist *el, const char *res, const Mesh__V1__Cluster *c)
{
    if (c->n_endpoints == 0 && c->type == MESH__V1__CLUSTER__DISCOVERY_TYPE__STATIC) {
        md_errlist_add(el, res, "endpoints", "a STATIC cluster needs at least one endpoint");
        return;
    }
    if (c->n_endpoints > MAX_ENDPOINTS) {
        md_errlist_add(el, res, "endpoints", "%zu endpoints, at most %u", c->n_endpoints,
                       MAX_ENDPOINTS);
        return;
    }
    struct md_addr seen[MAX_ENDPOINTS];
    bool valid[MAX_ENDPOINTS];
    for (size_t k = 0; k < c->n_endpoints; k++) {
        char field[64];
        snprintf(field, sizeof(field), "endpoints[%zu].address", k);
        valid[k] = md_validate_address(el, res, field, c->endpoints[k]->address, &seen[k]) == 0;
        /* O(n^2) over at most MAX_ENDPOINTS, once per load. */
        for (size_t j = 0; valid[k] && j < k; j++) {
            if (valid[j] && seen[j].len == seen[k].len &&
                memcmp(&seen[j].ss, &seen[k].ss, seen[k].len) == 0) {
                md_errlist_add(el, res, field, "duplicate of endpoints[%zu]", j);
                break;
            }
        }
    }
}

void md_validate_clusters(const Mesh__V1__Bundle *b, struct md_errlist *el)
{
    for (size_t i = 0; i < b->n_clusters; i++) {
        const Mesh__V1__Cluster *c = b->clusters[i];
        char res[160];
        md_validate_label(res, sizeof(res), "cluster", "clusters", i, c->name);
        md_validate_name(el, res, "clusters", (void *const *)b->clusters, i,
                         offsetof(Mesh__V1__Cluster, name));
        md_validate_enum(el, res, "type", &mesh__v1__cluster__discovery_type__descriptor,
                         (int)c->type);
        md_validate_enum(el, res, "lb_policy", &mesh__v1__cluster__lb_policy__descriptor,
                         (int)c->lb_policy);
        md_validate_range0(el, res, "connect_timeout_ms", c->connect_timeout_ms, 1,
                           MAX_CONNECT_TIMEOUT_MS, " ms");
        md_validate_range0(el, res, "max_connect_attempts", c->max_connect_attempts, 1,
                           MAX_CONNECT_ATTEMPTS, "");
        check_endpoints(el, res, c);
    }
}
