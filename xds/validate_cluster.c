/* SPDX-License-Identifier: Apache-2.0 */
/* Cluster checks: name, discovery type, LB policy, timeouts, endpoints, the
 * HTTP protocol and upstream HTTP/2 pool. */
#include "tls/tls_ctx.h"
#include "validate.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define MAX_CONNECT_TIMEOUT_MS 60000u
#define MAX_CONNECT_ATTEMPTS 16u
#define MAX_ENDPOINTS 1024u
#define MAX_POOL_CONNECTIONS 1024u
/* The schema gives no upper bound for the pool timers; past a day a value is
 * a unit mistake (seconds for ms), like the other timeouts. */
#define MAX_POOL_TIMER_MS (24u * 3600u * 1000u)

static void check_pool(struct md_errlist *el, const char *res,
                       const Mesh__V1__Cluster__ConnectionPool *p)
{
    if (!p)
        return;
    md_validate_h2_opts(el, res, "pool.http2", p->http2);
    md_validate_range0(el, res, "pool.max_connections_per_endpoint",
                       p->max_connections_per_endpoint, 1, MAX_POOL_CONNECTIONS, "");
    md_validate_range0(el, res, "pool.idle_timeout_ms", p->idle_timeout_ms, 1, MAX_POOL_TIMER_MS,
                       " ms");
    /* A floor of 1 s: PINGs faster than that only load the upstream. */
    md_validate_range0(el, res, "pool.keepalive_interval_ms", p->keepalive_interval_ms, 1000,
                       MAX_POOL_TIMER_MS, " ms");
}

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
        md_validate_enum(el, res, "protocol", &mesh__v1__cluster__protocol__descriptor,
                         (int)c->protocol);
        check_pool(el, res, c->pool);
        if (c->tls)
            md_validate_upstream_tls(el, res, c->tls,
                                     c->protocol == MESH__V1__CLUSTER__PROTOCOL__HTTP1
                                         ? MD_TLS_ALPN_HTTP1
                                         : MD_TLS_ALPN_H2);
    }
}
