/* SPDX-License-Identifier: Apache-2.0 */
/* Cluster checks: name, discovery type, LB policy, timeouts, endpoints, the
 * HTTP protocol and upstream HTTP/2 pool. */
#include "snapshot.h"
#include "tls/tls_ctx.h"
#include "validate.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define MAX_CONNECT_TIMEOUT_MS 60000u
#define MAX_CONNECT_ATTEMPTS 16u
#define MAX_POOL_CONNECTIONS 1024u
#define MAX_WEIGHT 1000000u
#define MAX_PRIORITY 127u
#define MIN_RING 16u
#define MAX_RING 65536u
#define MIN_HC_INTERVAL_MS 100u
#define MAX_HC_INTERVAL_MS (3600u * 1000u)
#define MAX_HC_THRESHOLD 100u
#define MAX_HC_SERVICE 1024u
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
    if (c->n_endpoints && c->type != MESH__V1__CLUSTER__DISCOVERY_TYPE__STATIC) {
        md_errlist_add(el, res, "endpoints", "only for STATIC clusters (DNS finds the others')");
        return;
    }
    if (c->n_endpoints > MD_SNAP_MAX_ENDPOINTS) {
        md_errlist_add(el, res, "endpoints", "%zu endpoints, at most %u", c->n_endpoints,
                       MD_SNAP_MAX_ENDPOINTS);
        return;
    }
    struct md_addr seen[MD_SNAP_MAX_ENDPOINTS];
    bool valid[MD_SNAP_MAX_ENDPOINTS];
    for (size_t k = 0; k < c->n_endpoints; k++) {
        char field[64];
        snprintf(field, sizeof(field), "endpoints[%zu].address", k);
        valid[k] = md_validate_address(el, res, field, c->endpoints[k]->address, &seen[k]) == 0;
        snprintf(field, sizeof(field), "endpoints[%zu].weight", k);
        md_validate_range0(el, res, field, c->endpoints[k]->weight, 1, MAX_WEIGHT, "");
        if (c->endpoints[k]->priority > MAX_PRIORITY) {
            snprintf(field, sizeof(field), "endpoints[%zu].priority", k);
            md_errlist_add(el, res, field, "%u, at most %u", c->endpoints[k]->priority,
                           MAX_PRIORITY);
        }
        snprintf(field, sizeof(field), "endpoints[%zu].address", k);
        /* O(n^2) over at most MD_SNAP_MAX_ENDPOINTS, once per load. */
        for (size_t j = 0; valid[k] && j < k; j++) {
            if (valid[j] && md_addr_equal(&seen[j], &seen[k])) {
                md_errlist_add(el, res, field, "duplicate of endpoints[%zu]", j);
                break;
            }
        }
    }
}

static void check_discovery(struct md_errlist *el, const char *res, const Mesh__V1__Cluster *c)
{
    md_validate_enum(el, res, "type", &mesh__v1__cluster__discovery_type__descriptor, (int)c->type);
    bool dns = c->type == MESH__V1__CLUSTER__DISCOVERY_TYPE__DNS;
    bool srv = c->type == MESH__V1__CLUSTER__DISCOVERY_TYPE__DNS_SRV;
    if (!dns && !srv) {
        if (c->dns_name[0])
            md_errlist_add(el, res, "dns_name", "only for DNS and DNS_SRV clusters");
        if (c->dns_port)
            md_errlist_add(el, res, "dns_port", "only for DNS clusters");
        return;
    }
    if (!c->dns_name[0])
        md_errlist_add(el, res, "dns_name", "required for %s", dns ? "DNS" : "DNS_SRV");
    else
        md_validate_host_name(el, res, "dns_name", c->dns_name);
    if (srv && c->dns_port)
        md_errlist_add(el, res, "dns_port", "only for DNS clusters (SRV records carry ports)");
    if (dns && (c->dns_port == 0 || c->dns_port > 65535))
        md_errlist_add(el, res, "dns_port", "%s: 1-65535 is required for DNS",
                       c->dns_port ? "out of range" : "missing");
}

static void check_lb(struct md_errlist *el, const char *res, const Mesh__V1__Cluster *c)
{
    md_validate_enum(el, res, "lb_policy", &mesh__v1__cluster__lb_policy__descriptor,
                     (int)c->lb_policy);
    bool hashing = c->lb_policy == MESH__V1__CLUSTER__LB_POLICY__RING_HASH ||
                   c->lb_policy == MESH__V1__CLUSTER__LB_POLICY__MAGLEV;
    if (c->n_hash_policy && !hashing)
        md_errlist_add(el, res, "hash_policy", "only for lb_policy RING_HASH and MAGLEV");
    for (size_t k = 0; hashing && k < c->n_hash_policy; k++) {
        const Mesh__V1__HashPolicy *hp = c->hash_policy[k];
        char field[64];
        snprintf(field, sizeof(field), "hash_policy[%zu]", k);
        if (hp->policy_case == MESH__V1__HASH_POLICY__POLICY_HEADER) {
            snprintf(field, sizeof(field), "hash_policy[%zu].header", k);
            md_validate_header_name(el, res, field, hp->header, "hashed", false);
        } else if (hp->policy_case != MESH__V1__HASH_POLICY__POLICY_SOURCE_IP || !hp->source_ip) {
            md_errlist_add(el, res, field, "header or source_ip: true is required");
        }
    }
    if (c->ring_hash && c->lb_policy != MESH__V1__CLUSTER__LB_POLICY__RING_HASH)
        md_errlist_add(el, res, "ring_hash", "only for lb_policy RING_HASH");
    else if (c->ring_hash)
        md_validate_range0(el, res, "ring_hash.points_per_weight", c->ring_hash->points_per_weight,
                           MIN_RING, MAX_RING, " points");
    md_validate_range0(el, res, "panic_threshold_percent", c->panic_threshold_percent, 1, 100, "%");
}

static void check_health(struct md_errlist *el, const char *res, const Mesh__V1__HealthCheck *h)
{
    if (!h)
        return;
    md_validate_range0(el, res, "health_check.interval_ms", h->interval_ms, MIN_HC_INTERVAL_MS,
                       MAX_HC_INTERVAL_MS, " ms");
    uint32_t interval = h->interval_ms ? h->interval_ms : MD_DEFAULT_HC_INTERVAL_MS;
    if (h->jitter_ms > interval)
        md_errlist_add(el, res, "health_check.jitter_ms", "%u ms, at most interval_ms (%u ms)",
                       h->jitter_ms, interval);
    if (h->timeout_ms > interval)
        md_errlist_add(el, res, "health_check.timeout_ms", "%u ms, at most interval_ms (%u ms)",
                       h->timeout_ms, interval);
    md_validate_range0(el, res, "health_check.healthy_threshold", h->healthy_threshold, 1,
                       MAX_HC_THRESHOLD, "");
    md_validate_range0(el, res, "health_check.unhealthy_threshold", h->unhealthy_threshold, 1,
                       MAX_HC_THRESHOLD, "");
    switch (h->check_case) {
    case MESH__V1__HEALTH_CHECK__CHECK_TCP: break;
    case MESH__V1__HEALTH_CHECK__CHECK_HTTP:
        if (!h->http->path[0])
            md_errlist_add(el, res, "health_check.http.path", "required");
        else
            md_validate_path(el, res, "health_check.http.path", h->http->path);
        if (h->http->host[0])
            md_validate_host_name(el, res, "health_check.http.host", h->http->host);
        for (size_t k = 0; k < h->http->n_expected_statuses; k++) {
            uint32_t st = h->http->expected_statuses[k];
            if (st < 100 || st > 599) {
                char field[64];
                snprintf(field, sizeof(field), "health_check.http.expected_statuses[%zu]", k);
                md_errlist_add(el, res, field, "%u is not an HTTP status (100-599)", st);
            }
        }
        break;
    case MESH__V1__HEALTH_CHECK__CHECK_GRPC:
        /* it travels in the request's one DATA frame */
        if (strlen(h->grpc->service_name) > MAX_HC_SERVICE)
            md_errlist_add(el, res, "health_check.grpc.service_name", "%zu bytes, at most %u",
                           strlen(h->grpc->service_name), MAX_HC_SERVICE);
        if (h->grpc->authority[0])
            md_validate_host_name(el, res, "health_check.grpc.authority", h->grpc->authority);
        break;
    default:
        md_errlist_add(el, res, "health_check", "a check is required: tcp, http or grpc");
        break;
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
        check_discovery(el, res, c);
        check_lb(el, res, c);
        check_health(el, res, c->health_check);
        md_validate_cluster_resilience(el, res, c);
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
