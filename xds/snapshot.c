/* SPDX-License-Identifier: Apache-2.0 */
/* Validated bundle -> immutable snapshot, defaults applied; its freeing and
 * its /config_dump text. Arrays are allocated zeroed and counted at once, so a
 * build that runs out of memory half way is freed by md_snapshot_unref. */
#include "snapshot.h"

#include "core/err.h"
#include "core/log.h"
#include "snapshot_build.h"
#include "tls/tls_creds.h"
#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v ? v : def;
}

/* Zeroed array of |n| items (one when n is 0, so NULL means out of memory). */
static void *new_array(size_t n, size_t size)
{
    return calloc(n ? n : 1, size);
}

/* A lower-case copy: header names and domains are compared as lower case. */
static char *dup_lower(const char *s, size_t n, size_t *len)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 32) : s[i];
    d[n] = '\0';
    if (len)
        *len = n;
    return d;
}

static void build_h2_opts(const Mesh__V1__Http2Options *o, struct md_snap_h2_opts *out)
{
    static const Mesh__V1__Http2Options none = MESH__V1__HTTP2_OPTIONS__INIT;
    if (!o)
        o = &none;
    out->max_concurrent_streams =
        or_default(o->max_concurrent_streams, MD_DEFAULT_H2_MAX_CONCURRENT_STREAMS);
    out->initial_stream_window = or_default(o->initial_stream_window, MD_DEFAULT_H2_STREAM_WINDOW);
    out->initial_connection_window =
        or_default(o->initial_connection_window, MD_DEFAULT_H2_CONNECTION_WINDOW);
    /* A raised stream window raises the default connection window with it:
     * one stream must be able to use its whole window. */
    if (!o->initial_connection_window &&
        out->initial_connection_window < out->initial_stream_window)
        out->initial_connection_window = out->initial_stream_window;
    out->max_header_list_size = or_default(o->max_header_list_size, MD_DEFAULT_H2_MAX_HEADER_LIST);
}

static char *dup_nonempty(const char *s, bool *ok)
{
    char *d = s[0] ? strdup(s) : NULL;
    if (s[0] && !d)
        *ok = false;
    return d;
}

/* Copies the file names and builds the context from them. The files were
 * read a moment ago by validation; one that changed since is reported. */
static int build_tls_files(const Mesh__V1__TlsCertificate *cert, const char *ca, const char *owner,
                           struct md_tls_creds_cfg *cfg, struct md_snap_tls_files *out)
{
    bool ok = true;
    out->cert_chain = cert ? dup_nonempty(cert->certificate_chain_file, &ok) : NULL;
    out->private_key = cert ? dup_nonempty(cert->private_key_file, &ok) : NULL;
    out->trusted_ca = dup_nonempty(ca, &ok);
    if (!ok)
        return MD_ENOMEM;
    cfg->files = (struct md_tls_files){out->cert_chain, out->private_key, out->trusted_ca};
    char err[1024];
    if (!(out->creds = md_tls_creds_new(cfg, err, sizeof(err)))) {
        MD_LOG(MD_LOG_ERROR, "tls_load_failed", "owner=%s reason=\"%s\"", owner, err);
        return MD_EINVAL;
    }
    return 0;
}

static int build_cluster_tls(const Mesh__V1__Cluster *c, struct md_snap_cluster *out)
{
    const Mesh__V1__UpstreamTlsContext *t = c->tls;
    struct md_snap_cluster_tls *tls = calloc(1, sizeof(*tls));
    if (!(out->tls = tls))
        return MD_ENOMEM;
    bool ok = true;
    tls->sni = dup_nonempty(t->sni, &ok);
    tls->match_ids = new_array(t->n_match_spiffe_ids, sizeof(char *));
    if (!ok || !tls->match_ids)
        return MD_ENOMEM;
    for (size_t i = 0; i < t->n_match_spiffe_ids; i++, tls->n_match_ids++)
        if (!(tls->match_ids[i] = strdup(t->match_spiffe_ids[i])))
            return MD_ENOMEM;
    struct md_tls_creds_cfg cfg = {.alpn = out->protocol == MD_CLUSTER_HTTP1 ? MD_TLS_ALPN_HTTP1
                                                                             : MD_TLS_ALPN_H2};
    char owner[96];
    snprintf(owner, sizeof(owner), "cluster:%s", out->name);
    return build_tls_files(t->certificate, t->trusted_ca_file, owner, &cfg, &tls->files);
}

static int build_listener_tls(const Mesh__V1__Listener *l, struct md_snap_listener *out)
{
    const Mesh__V1__DownstreamTlsContext *t = l->tls;
    struct md_snap_listener_tls *tls = calloc(1, sizeof(*tls));
    if (!(out->tls = tls))
        return MD_ENOMEM;
    tls->client_cert =
        t->client_certificate == MESH__V1__DOWNSTREAM_TLS_CONTEXT__CLIENT_CERTIFICATE__NONE
            ? MD_TLS_PEER_NONE
        : t->client_certificate == MESH__V1__DOWNSTREAM_TLS_CONTEXT__CLIENT_CERTIFICATE__OPTIONAL
            ? MD_TLS_PEER_OPTIONAL
            : MD_TLS_PEER_REQUIRED;
    tls->allow_plaintext = t->allow_plaintext;
    tls->handshake_timeout_ms =
        or_default(t->handshake_timeout_ms, MD_DEFAULT_HANDSHAKE_TIMEOUT_MS);
    struct md_tls_creds_cfg cfg = {
        .server = true,
        .peer = (enum md_tls_peer_cert)tls->client_cert,
        .alpn = out->http.codec == MD_HTTP_CODEC_H2C     ? MD_TLS_ALPN_H2
                : out->http.codec == MD_HTTP_CODEC_HTTP1 ? MD_TLS_ALPN_HTTP1
                                                         : MD_TLS_ALPN_H2 | MD_TLS_ALPN_HTTP1,
    };
    char owner[96];
    snprintf(owner, sizeof(owner), "listener:%s", out->name);
    return build_tls_files(t->certificate, t->trusted_ca_file, owner, &cfg, &tls->files);
}

static int build_health_check(const Mesh__V1__HealthCheck *h, struct md_snap_cluster *out)
{
    struct md_snap_health_check *hc = calloc(1, sizeof(*hc));
    if (!(out->health_check = hc))
        return MD_ENOMEM;
    hc->interval_ms = or_default(h->interval_ms, MD_DEFAULT_HC_INTERVAL_MS);
    uint32_t jitter = hc->interval_ms / 10 < 1000 ? hc->interval_ms / 10 : 1000;
    hc->jitter_ms = or_default(h->jitter_ms, jitter);
    hc->timeout_ms = or_default(h->timeout_ms, MD_DEFAULT_HC_TIMEOUT_MS);
    if (hc->timeout_ms > hc->interval_ms) /* the default timeout with a short interval */
        hc->timeout_ms = hc->interval_ms;
    hc->healthy_threshold = or_default(h->healthy_threshold, MD_DEFAULT_HC_HEALTHY_THRESHOLD);
    hc->unhealthy_threshold = or_default(h->unhealthy_threshold, MD_DEFAULT_HC_UNHEALTHY_THRESHOLD);
    bool ok = true;
    switch (h->check_case) {
    case MESH__V1__HEALTH_CHECK__CHECK_HTTP: {
        const Mesh__V1__HttpHealthCheck *x = h->http;
        hc->kind = MD_HC_HTTP;
        hc->path = dup_nonempty(x->path, &ok);
        hc->host = dup_nonempty(x->host, &ok);
        size_t n = x->n_expected_statuses ? x->n_expected_statuses : 1;
        if (!(hc->statuses = new_array(n, sizeof(uint32_t))))
            return MD_ENOMEM;
        hc->n_statuses = n;
        for (size_t k = 0; k < n; k++)
            hc->statuses[k] = x->n_expected_statuses ? x->expected_statuses[k] : 200;
        break;
    }
    case MESH__V1__HEALTH_CHECK__CHECK_GRPC:
        hc->kind = MD_HC_GRPC;
        hc->service = strdup(h->grpc->service_name);
        ok = hc->service != NULL;
        hc->host = dup_nonempty(h->grpc->authority, &ok);
        break;
    default: hc->kind = MD_HC_TCP; break;
    }
    return ok ? 0 : MD_ENOMEM;
}

static int build_cluster(const Mesh__V1__Cluster *c, size_t idx, struct md_snap_cluster *out)
{
    out->name = strdup(c->name);
    out->idx = idx;
    out->discovery = (enum md_discovery)c->type; /* same order, validated */
    out->lb = (enum md_lb_policy)c->lb_policy;
    out->connect_timeout_ms = or_default(c->connect_timeout_ms, MD_DEFAULT_CONNECT_TIMEOUT_MS);
    out->endpoints = new_array(c->n_endpoints, sizeof(*out->endpoints));
    if (!out->name || !out->endpoints)
        return MD_ENOMEM;
    out->n_endpoints = c->n_endpoints;
    /* Each attempt goes to a different endpoint: the endpoints there are
     * cap it when a connect starts. */
    out->max_connect_attempts =
        or_default(c->max_connect_attempts, MD_DEFAULT_MAX_CONNECT_ATTEMPTS);
    for (size_t k = 0; k < c->n_endpoints; k++) {
        struct md_snap_endpoint *ep = &out->endpoints[k];
        const Mesh__V1__SocketAddress *a = c->endpoints[k]->address;
        md_addr_parse(a->address, a->port, &ep->addr);
        md_addr_format((struct sockaddr *)&ep->addr.ss, ep->label);
        ep->weight = or_default(c->endpoints[k]->weight, 1);
        ep->priority = c->endpoints[k]->priority;
    }
    bool ok = true;
    if (c->type != MESH__V1__CLUSTER__DISCOVERY_TYPE__STATIC) {
        out->dns_name = dup_nonempty(c->dns_name, &ok);
        out->dns_port = (uint16_t)c->dns_port;
    }
    out->ring_points =
        or_default(c->ring_hash ? c->ring_hash->points_per_weight : 0, MD_DEFAULT_RING_POINTS);
    out->panic_threshold = or_default(c->panic_threshold_percent, MD_DEFAULT_PANIC_THRESHOLD);
    out->hash_policies = new_array(c->n_hash_policy, sizeof(*out->hash_policies));
    if (!ok || !out->hash_policies)
        return MD_ENOMEM;
    for (size_t k = 0; k < c->n_hash_policy; k++, out->n_hash_policies++) {
        const Mesh__V1__HashPolicy *hp = c->hash_policy[k];
        struct md_snap_hash_policy *o = &out->hash_policies[k];
        if (hp->policy_case == MESH__V1__HASH_POLICY__POLICY_HEADER &&
            !(o->header = dup_lower(hp->header, strlen(hp->header), &o->header_len)))
            return MD_ENOMEM;
    }
    if (c->health_check) {
        int rc = build_health_check(c->health_check, out);
        if (rc < 0)
            return rc;
    }
    int rc = md_snapshot_build_cluster_resilience(c, out);
    if (rc < 0)
        return rc;
    out->protocol =
        c->protocol == MESH__V1__CLUSTER__PROTOCOL__HTTP1 ? MD_CLUSTER_HTTP1 : MD_CLUSTER_HTTP2;
    const Mesh__V1__Cluster__ConnectionPool *p = c->pool;
    build_h2_opts(p ? p->http2 : NULL, &out->h2);
    out->max_connections_per_endpoint =
        or_default(p ? p->max_connections_per_endpoint : 0, MD_DEFAULT_POOL_MAX_CONNECTIONS);
    out->pool_idle_timeout_ms =
        or_default(p ? p->idle_timeout_ms : 0, MD_DEFAULT_POOL_IDLE_TIMEOUT_MS);
    out->keepalive_interval_ms =
        or_default(p ? p->keepalive_interval_ms : 0, MD_DEFAULT_KEEPALIVE_INTERVAL_MS);
    return c->tls ? build_cluster_tls(c, out) : 0;
}

static void build_tcp_proxy(const Mesh__V1__Bundle *b, const Mesh__V1__TcpProxy *tp,
                            struct md_snap_tcp_proxy *out);

static int build_listener(const Mesh__V1__Bundle *b, const Mesh__V1__Listener *l, size_t idx,
                          struct md_snap_listener *out)
{
    out->name = strdup(l->name);
    if (!out->name)
        return MD_ENOMEM;
    if (l->connection_rate_limit &&
        md_snapshot_build_rate_limit(l->connection_rate_limit, "listener", out->name,
                                     &out->conn_rate_limit) < 0)
        return MD_ENOMEM;
    out->idx = idx;
    md_addr_parse(l->address->address, l->address->port, &out->addr);
    md_addr_format((struct sockaddr *)&out->addr.ss, out->label);
    if (l->handler_case == MESH__V1__LISTENER__HANDLER_HTTP) {
        const Mesh__V1__HttpConnectionManager *h = l->http;
        out->handler = MD_HANDLER_HTTP;
        out->http.codec =
            h->codec == MESH__V1__HTTP_CONNECTION_MANAGER__CODEC__HTTP1  ? MD_HTTP_CODEC_HTTP1
            : h->codec == MESH__V1__HTTP_CONNECTION_MANAGER__CODEC__AUTO ? MD_HTTP_CODEC_AUTO
                                                                         : MD_HTTP_CODEC_H2C;
        out->http.route_config = (size_t)md_validate_find_route_config(b, h->route_config);
        build_h2_opts(h->http2, &out->http.h2);
        out->http.stream_idle_timeout_ms =
            or_default(h->stream_idle_timeout_ms, MD_DEFAULT_STREAM_IDLE_TIMEOUT_MS);
        out->http.idle_timeout_ms = or_default(h->idle_timeout_ms, MD_DEFAULT_HTTP_IDLE_TIMEOUT_MS);
        out->http.request_headers_timeout_ms =
            or_default(h->request_headers_timeout_ms, MD_DEFAULT_REQUEST_HEADERS_TIMEOUT_MS);
        out->http.xfcc_set = h->forward_client_cert ==
                             MESH__V1__HTTP_CONNECTION_MANAGER__FORWARD_CLIENT_CERT__SANITIZE_SET;
        out->http.xfcc_header =
            strdup(h->client_cert_header[0] ? h->client_cert_header : MD_DEFAULT_XFCC_HEADER);
        if (!out->http.xfcc_header)
            return MD_ENOMEM;
        out->http.xfcc_header_len = strlen(out->http.xfcc_header);
        if (h->tcp_fallback) {
            out->http.tcp_fallback = true;
            out->http.detect_timeout_ms =
                or_default(h->detect_timeout_ms, MD_DEFAULT_DETECT_TIMEOUT_MS);
            build_tcp_proxy(b, h->tcp_fallback, &out->tcp);
        }
        if (h->rbac) {
            int rc =
                md_snapshot_build_rbac(h->rbac, MD_RBAC_SCOPE_LISTENER, out->name, &out->http.rbac);
            if (rc < 0)
                return rc;
        }
        return l->tls ? build_listener_tls(l, out) : 0;
    }
    out->handler = MD_HANDLER_TCP_PROXY;
    build_tcp_proxy(b, l->tcp_proxy, &out->tcp);
    return 0;
}

static void build_tcp_proxy(const Mesh__V1__Bundle *b, const Mesh__V1__TcpProxy *tp,
                            struct md_snap_tcp_proxy *out)
{
    out->cluster = (size_t)md_validate_find_cluster(b, tp->cluster);
    out->idle_timeout_ms = or_default(tp->idle_timeout_ms, MD_DEFAULT_IDLE_TIMEOUT_MS);
    out->buffer_limit = or_default(tp->buffer_limit_bytes, MD_DEFAULT_BUFFER_LIMIT);
    out->splice = !tp->disable_splice;
}

static int build_header_adds(Mesh__V1__HeaderValue *const *hv, size_t n,
                             struct md_snap_header **out, size_t *n_out)
{
    if (n == 0)
        return 0;
    if (!(*out = new_array(n, sizeof(**out))))
        return MD_ENOMEM;
    *n_out = n;
    for (size_t k = 0; k < n; k++) {
        struct md_snap_header *h = &(*out)[k];
        h->name = dup_lower(hv[k]->key, strlen(hv[k]->key), &h->name_len);
        h->value_len = strlen(hv[k]->value);
        h->value = strdup(hv[k]->value);
        if (!h->name || !h->value)
            return MD_ENOMEM;
    }
    return 0;
}

static int build_header_removes(char *const *names, size_t n, char ***out, size_t *n_out)
{
    if (n == 0)
        return 0;
    if (!(*out = new_array(n, sizeof(**out))))
        return MD_ENOMEM;
    *n_out = n;
    for (size_t k = 0; k < n; k++)
        if (!((*out)[k] = dup_lower(names[k], strlen(names[k]), NULL)))
            return MD_ENOMEM;
    return 0;
}

char *md_snapshot_grpc_path(const Mesh__V1__GrpcMatch *g, bool *any_method)
{
    /* gRPC paths are "/SERVICE/METHOD": matched as one exact path, or as
     * the prefix "/SERVICE/" for every method. */
    char *path;
    *any_method = !g->method[0];
    return asprintf(&path, "/%s/%s", g->service, g->method) < 0 ? NULL : path;
}

int md_snapshot_build_header_matchers(Mesh__V1__HeaderMatcher *const *hm, size_t n,
                                      struct md_snap_header_matcher **out, size_t *n_out)
{
    if (n == 0)
        return 0;
    if (!(*out = new_array(n, sizeof(**out))))
        return MD_ENOMEM;
    *n_out = n;
    for (size_t k = 0; k < n; k++) {
        const Mesh__V1__HeaderMatcher *h = hm[k];
        struct md_snap_header_matcher *m = &(*out)[k];
        if (!(m->name = dup_lower(h->name, strlen(h->name), &m->name_len)))
            return MD_ENOMEM;
        if (h->match_case == MESH__V1__HEADER_MATCHER__MATCH_EXACT) {
            m->kind = MD_HDR_MATCH_EXACT;
            m->value_len = strlen(h->exact);
            if (!(m->value = strdup(h->exact)))
                return MD_ENOMEM;
        } else {
            m->kind = h->present ? MD_HDR_MATCH_PRESENT : MD_HDR_MATCH_ABSENT;
        }
    }
    return 0;
}

static int build_match(const Mesh__V1__RouteMatch *m, struct md_snap_route *out)
{
    switch (m->path_specifier_case) {
    case MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        out->kind = MD_PATH_MATCH_PREFIX;
        out->path = strdup(m->prefix);
        break;
    case MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        out->kind = MD_PATH_MATCH_EXACT;
        out->path = strdup(m->path);
        break;
    default:
        out->kind = MD_PATH_MATCH_GRPC;
        out->path = md_snapshot_grpc_path(m->grpc, &out->grpc_any_method);
        break;
    }
    if (!out->path)
        return MD_ENOMEM;
    out->path_len = strlen(out->path);
    if (m->n_server_names) {
        if (!(out->server_names = new_array(m->n_server_names, sizeof(char *))))
            return MD_ENOMEM;
        for (size_t k = 0; k < m->n_server_names; k++, out->n_server_names++) {
            size_t len;
            if (!(out->server_names[k] =
                      dup_lower(m->server_names[k], strlen(m->server_names[k]), &len)))
                return MD_ENOMEM;
        }
    }
    return md_snapshot_build_header_matchers(m->headers, m->n_headers, &out->headers,
                                             &out->n_headers);
}

static int build_action(const Mesh__V1__Bundle *b, const Mesh__V1__RouteAction *a,
                        struct md_snap_route *out)
{
    if (a->cluster_specifier_case == MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER) {
        if (!(out->clusters = new_array(1, sizeof(*out->clusters))))
            return MD_ENOMEM;
        out->n_clusters = 1;
        out->clusters[0].cluster = (size_t)md_validate_find_cluster(b, a->cluster);
        out->clusters[0].weight = 1;
        out->total_weight = 1;
    } else {
        const Mesh__V1__WeightedClusters *wc = a->weighted_clusters;
        if (!(out->clusters = new_array(wc->n_clusters, sizeof(*out->clusters))))
            return MD_ENOMEM;
        out->n_clusters = wc->n_clusters;
        for (size_t k = 0; k < wc->n_clusters; k++) {
            out->clusters[k].cluster = (size_t)md_validate_find_cluster(b, wc->clusters[k]->name);
            out->clusters[k].weight = wc->clusters[k]->weight;
            out->total_weight += wc->clusters[k]->weight; /* <= 1,000,000 by validation */
        }
    }
    out->timeout_ms = a->timeout_ms;
    if (a->prefix_rewrite[0]) {
        out->prefix_rewrite_len = strlen(a->prefix_rewrite);
        if (!(out->prefix_rewrite = strdup(a->prefix_rewrite)))
            return MD_ENOMEM;
    }
    int rc = build_header_adds(a->request_headers_to_add, a->n_request_headers_to_add,
                               &out->req_add, &out->n_req_add);
    if (rc == 0)
        rc = build_header_removes(a->request_headers_to_remove, a->n_request_headers_to_remove,
                                  &out->req_remove, &out->n_req_remove);
    if (rc == 0)
        rc = build_header_adds(a->response_headers_to_add, a->n_response_headers_to_add,
                               &out->resp_add, &out->n_resp_add);
    if (rc == 0)
        rc = build_header_removes(a->response_headers_to_remove, a->n_response_headers_to_remove,
                                  &out->resp_remove, &out->n_resp_remove);
    out->refuse_upgrades = a->refuse_upgrades;
    static char *const default_upgrades[] = {MD_DEFAULT_UPGRADE};
    if (rc == 0 && !a->refuse_upgrades)
        rc = a->n_upgrade_types
                 ? build_header_removes(a->upgrade_types, a->n_upgrade_types, &out->upgrades,
                                        &out->n_upgrades)
                 : build_header_removes(default_upgrades, 1, &out->upgrades, &out->n_upgrades);
    return rc;
}

static int build_route(const Mesh__V1__Bundle *b, const char *vh_name, size_t i,
                       const Mesh__V1__Route *r, struct md_snap_route *out)
{
    if (r->name[0])
        out->name = strdup(r->name);
    else if (asprintf(&out->name, "%s/routes[%zu]", vh_name, i) < 0)
        out->name = NULL;
    if (!out->name)
        return MD_ENOMEM;
    int rc = build_match(r->match, out);
    if (rc == 0)
        rc = build_action(b, r->route, out);
    if (rc == 0 && r->rbac)
        rc = md_snapshot_build_rbac(r->rbac, MD_RBAC_SCOPE_ROUTE, out->name, &out->rbac);
    const Mesh__V1__RouteAction *a = r->route;
    if (rc == 0 && a->retry_policy)
        rc = md_snapshot_build_retry(a->retry_policy, &out->retry);
    if (rc == 0 && a->rate_limit)
        rc = md_snapshot_build_rate_limit(a->rate_limit, "route", out->name, &out->rate_limit);
    if (rc == 0 && a->fault)
        rc = md_snapshot_build_fault(a->fault, &out->fault);
    out->max_stream_duration_ms = a->max_stream_duration_ms;
    if (a->fallback_cluster[0]) {
        out->has_fallback = true;
        out->fallback = (size_t)md_validate_find_cluster(b, a->fallback_cluster);
    }
    return rc;
}

/* Validation allowed only "*", "*.suffix", "prefix.*" and plain hosts. */
static int build_domain(const char *d, struct md_snap_domain *out)
{
    size_t n = strlen(d);
    const char *text = d;
    if (strcmp(d, "*") == 0) {
        out->kind = MD_DOMAIN_ANY;
        n = 0;
    } else if (d[0] == '*') {
        out->kind = MD_DOMAIN_SUFFIX; /* keep the dot: "*.a.com" matches "x.a.com", not "a.com" */
        text++;
        n--;
    } else if (n && d[n - 1] == '*') {
        out->kind = MD_DOMAIN_PREFIX;
        n--;
    } else {
        out->kind = MD_DOMAIN_EXACT;
    }
    out->text = dup_lower(text, n, &out->len);
    return out->text ? 0 : MD_ENOMEM;
}

static int build_vhost(const Mesh__V1__Bundle *b, const Mesh__V1__VirtualHost *vh,
                       struct md_snap_vhost *out)
{
    out->name = strdup(vh->name);
    out->domains = new_array(vh->n_domains, sizeof(*out->domains));
    out->routes = new_array(vh->n_routes, sizeof(*out->routes));
    if (!out->name || !out->domains || !out->routes)
        return MD_ENOMEM;
    out->n_domains = vh->n_domains;
    out->n_routes = vh->n_routes;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < vh->n_domains; k++)
        rc = build_domain(vh->domains[k], &out->domains[k]);
    for (size_t k = 0; rc == 0 && k < vh->n_routes; k++)
        rc = build_route(b, vh->name, k, vh->routes[k], &out->routes[k]);
    return rc;
}

static int build_route_config(const Mesh__V1__Bundle *b, const Mesh__V1__RouteConfiguration *rc,
                              size_t idx, struct md_snap_route_config *out)
{
    out->name = strdup(rc->name);
    out->idx = idx;
    out->vhosts = new_array(rc->n_virtual_hosts, sizeof(*out->vhosts));
    if (!out->name || !out->vhosts)
        return MD_ENOMEM;
    out->n_vhosts = rc->n_virtual_hosts;
    int err = 0;
    for (size_t k = 0; err == 0 && k < rc->n_virtual_hosts; k++)
        err = build_vhost(b, rc->virtual_hosts[k], &out->vhosts[k]);
    return err;
}

static int build_dns(const Mesh__V1__Dns *d, struct md_snap_dns *out)
{
    out->min_refresh_ms = or_default(d ? d->min_refresh_ms : 0, MD_DEFAULT_DNS_MIN_REFRESH_MS);
    out->max_refresh_ms = or_default(d ? d->max_refresh_ms : 0, MD_DEFAULT_DNS_MAX_REFRESH_MS);
    out->query_timeout_ms =
        or_default(d ? d->query_timeout_ms : 0, MD_DEFAULT_DNS_QUERY_TIMEOUT_MS);
    if (!d || !d->n_resolvers)
        return 0;
    if (!(out->resolvers = new_array(d->n_resolvers, sizeof(*out->resolvers))))
        return MD_ENOMEM;
    out->n_resolvers = d->n_resolvers;
    for (size_t k = 0; k < d->n_resolvers; k++)
        md_addr_parse(d->resolvers[k]->address, d->resolvers[k]->port, &out->resolvers[k]);
    return 0;
}

int md_snapshot_build(const Mesh__V1__Bundle *b, struct md_snapshot **out)
{
    struct md_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return MD_ENOMEM;
    s->refs = 1;
    s->listeners = new_array(b->n_listeners, sizeof(*s->listeners));
    s->clusters = new_array(b->n_clusters, sizeof(*s->clusters));
    s->route_configs = new_array(b->n_route_configs, sizeof(*s->route_configs));
    int rc = MD_ENOMEM;
    if (s->listeners && s->clusters && s->route_configs) {
        s->n_listeners = b->n_listeners;
        s->n_clusters = b->n_clusters;
        s->n_route_configs = b->n_route_configs;
        rc = 0;
    }
    for (size_t i = 0; rc == 0 && i < b->n_clusters; i++)
        rc = build_cluster(b->clusters[i], i, &s->clusters[i]);
    for (size_t i = 0; rc == 0 && i < b->n_route_configs; i++)
        rc = build_route_config(b, b->route_configs[i], i, &s->route_configs[i]);
    for (size_t i = 0; rc == 0 && i < b->n_listeners; i++)
        rc = build_listener(b, b->listeners[i], i, &s->listeners[i]);
    if (rc == 0)
        rc = md_snapshot_index_rbac(s);
    if (rc == 0)
        rc = md_snapshot_index_rate_limits(s);
    if (rc == 0)
        rc = md_snapshot_index_retries(s);
    if (rc < 0) {
        md_snapshot_unref(s);
        return rc;
    }
    const Mesh__V1__SocketAddress *aa = b->admin ? b->admin->address : NULL;
    md_addr_parse(aa ? aa->address : MD_DEFAULT_ADMIN_IP, aa ? aa->port : MD_DEFAULT_ADMIN_PORT,
                  &s->admin);
    md_addr_format((struct sockaddr *)&s->admin.ss, s->admin_label);
    if (build_dns(b->dns, &s->dns) < 0) {
        md_snapshot_unref(s);
        return MD_ENOMEM;
    }
    *out = s;
    return 0;
}

struct md_snapshot *md_snapshot_ref(struct md_snapshot *snap)
{
    __atomic_add_fetch(&snap->refs, 1, __ATOMIC_RELAXED);
    return snap;
}

static void free_headers(struct md_snap_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void md_snapshot_free_header_matchers(struct md_snap_header_matcher *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static void free_route(struct md_snap_route *r)
{
    md_snapshot_free_rbac(r->rbac);
    free(r->name);
    free(r->path);
    md_snapshot_free_header_matchers(r->headers, r->n_headers);
    free(r->clusters);
    free(r->prefix_rewrite);
    free_headers(r->req_add, r->n_req_add);
    free_headers(r->resp_add, r->n_resp_add);
    free_names(r->req_remove, r->n_req_remove);
    free_names(r->resp_remove, r->n_resp_remove);
    free_names(r->upgrades, r->n_upgrades);
    free_names(r->server_names, r->n_server_names);
    md_snapshot_free_retry(r->retry);
    md_snapshot_free_rate_limit(r->rate_limit);
    free(r->fault);
}

static void free_route_config(struct md_snap_route_config *rc)
{
    for (size_t v = 0; v < rc->n_vhosts; v++) {
        struct md_snap_vhost *vh = &rc->vhosts[v];
        for (size_t i = 0; i < vh->n_domains; i++)
            free(vh->domains[i].text);
        for (size_t i = 0; i < vh->n_routes; i++)
            free_route(&vh->routes[i]);
        free(vh->name);
        free(vh->domains);
        free(vh->routes);
    }
    free(rc->vhosts);
    free(rc->name);
}

static void free_tls_files(struct md_snap_tls_files *f)
{
    md_tls_creds_free(f->creds);
    free(f->cert_chain);
    free(f->private_key);
    free(f->trusted_ca);
}

void md_snapshot_unref(struct md_snapshot *snap)
{
    if (!snap || __atomic_sub_fetch(&snap->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < snap->n_listeners; i++) {
        struct md_snap_listener *l = &snap->listeners[i];
        md_snapshot_free_rbac(l->http.rbac);
        md_snapshot_free_rate_limit(l->conn_rate_limit);
        free(l->name);
        free(l->http.xfcc_header);
        if (l->tls)
            free_tls_files(&l->tls->files);
        free(l->tls);
    }
    free(snap->rbac_stats);
    free(snap->rate_limits);
    free(snap->retry_stats);
    for (size_t i = 0; i < snap->n_clusters; i++) {
        struct md_snap_cluster *c = &snap->clusters[i];
        free(c->name);
        free(c->endpoints);
        free(c->dns_name);
        for (size_t k = 0; k < c->n_hash_policies; k++)
            free(c->hash_policies[k].header);
        free(c->hash_policies);
        free(c->outlier);
        if (c->health_check) {
            free(c->health_check->path);
            free(c->health_check->host);
            free(c->health_check->statuses);
            free(c->health_check->service);
            free(c->health_check);
        }
        if (c->tls) {
            free_tls_files(&c->tls->files);
            free(c->tls->sni);
            free_names(c->tls->match_ids, c->tls->n_match_ids);
            free(c->tls);
        }
    }
    for (size_t i = 0; i < snap->n_route_configs; i++)
        free_route_config(&snap->route_configs[i]);
    free(snap->dns.resolvers);
    free(snap->listeners);
    free(snap->clusters);
    free(snap->route_configs);
    free(snap);
}

/* A quoted string in text-format escaping: header values and paths are
 * operator input and may hold quotes or bytes outside ASCII. */
static void put_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\%03o", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void put_field(FILE *f, int indent, const char *key, const char *s, size_t n)
{
    fprintf(f, "%*s%s: ", indent, "", key);
    put_str(f, s, n);
    fputc('\n', f);
}

void md_snapshot_dump_str(FILE *f, int indent, const char *key, const char *s)
{
    put_field(f, indent, key, s, strlen(s));
}

void md_snapshot_dump_header_matcher(FILE *f, int indent, const struct md_snap_header_matcher *h)
{
    fprintf(f, "%*sheader { name: ", indent, "");
    put_str(f, h->name, h->name_len);
    if (h->kind == MD_HDR_MATCH_EXACT) {
        fprintf(f, " exact: ");
        put_str(f, h->value, h->value_len);
    } else {
        fprintf(f, " present: %s", h->kind == MD_HDR_MATCH_PRESENT ? "true" : "false");
    }
    fprintf(f, " }\n");
}

static void dump_h2(FILE *f, int indent, const struct md_snap_h2_opts *h2)
{
    fprintf(f,
            "%*shttp2 {\n%*smax_concurrent_streams: %u\n%*sinitial_stream_window: %u\n"
            "%*sinitial_connection_window: %u\n%*smax_header_list_size: %u\n%*s}\n",
            indent, "", indent + 2, "", h2->max_concurrent_streams, indent + 2, "",
            h2->initial_stream_window, indent + 2, "", h2->initial_connection_window, indent + 2,
            "", h2->max_header_list_size, indent, "");
}

static void dump_tcp_proxy(FILE *f, const struct md_snapshot *snap, int indent, const char *key,
                           const struct md_snap_tcp_proxy *t)
{
    fprintf(f,
            "%*s%s {\n%*scluster: \"%s\"\n%*sidle_timeout_ms: %u\n"
            "%*sbuffer_limit_bytes: %u\n%*ssplice: %s\n%*s}\n",
            indent, "", key, indent + 2, "", snap->clusters[t->cluster].name, indent + 2, "",
            t->idle_timeout_ms, indent + 2, "", t->buffer_limit, indent + 2, "",
            t->splice ? "true" : "false", indent, "");
}

static void dump_tls_files(FILE *f, const struct md_snap_tls_files *t)
{
    if (t->cert_chain)
        fprintf(f,
                "    certificate {\n      certificate_chain_file: \"%s\"\n"
                "      private_key_file: \"%s\"\n    }\n",
                t->cert_chain, t->private_key);
    if (t->trusted_ca)
        fprintf(f, "    trusted_ca_file: \"%s\"\n", t->trusted_ca);
}

static void dump_listener_tls(FILE *f, const struct md_snap_listener_tls *t)
{
    static const char *const modes[] = {"REQUIRE", "OPTIONAL", "NONE"};
    fprintf(f, "  tls {\n");
    dump_tls_files(f, &t->files);
    fprintf(f,
            "    client_certificate: %s\n    allow_plaintext: %s\n"
            "    handshake_timeout_ms: %u\n  }\n",
            modes[t->client_cert], t->allow_plaintext ? "true" : "false", t->handshake_timeout_ms);
}

static void dump_listener(FILE *f, const struct md_snapshot *snap, const struct md_snap_listener *l)
{
    fprintf(f, "listener {\n  name: \"%s\"\n  address: \"%s\"\n", l->name, l->label);
    if (l->handler == MD_HANDLER_HTTP) {
        static const char *const codecs[] = {"H2C", "HTTP1", "AUTO"};
        fprintf(f, "  http {\n    codec: %s\n    route_config: \"%s\"\n", codecs[l->http.codec],
                snap->route_configs[l->http.route_config].name);
        dump_h2(f, 4, &l->http.h2);
        fprintf(f,
                "    stream_idle_timeout_ms: %u\n    idle_timeout_ms: %u\n"
                "    request_headers_timeout_ms: %u\n",
                l->http.stream_idle_timeout_ms, l->http.idle_timeout_ms,
                l->http.request_headers_timeout_ms);
        if (l->http.tcp_fallback) {
            fprintf(f, "    detect_timeout_ms: %u\n", l->http.detect_timeout_ms);
            dump_tcp_proxy(f, snap, 4, "tcp_fallback", &l->tcp);
        }
        fprintf(f, "    forward_client_cert: %s\n    client_cert_header: \"%s\"\n",
                l->http.xfcc_set ? "SANITIZE_SET" : "SANITIZE", l->http.xfcc_header);
        if (l->http.rbac)
            md_snapshot_dump_rbac(f, 4, l->http.rbac);
        fprintf(f, "  }\n");
        if (l->tls)
            dump_listener_tls(f, l->tls);
        if (l->conn_rate_limit)
            md_snapshot_dump_rate_limit(f, 2, "connection_rate_limit", l->conn_rate_limit);
        fprintf(f, "}\n");
        return;
    }
    dump_tcp_proxy(f, snap, 2, "tcp_proxy", &l->tcp);
    if (l->conn_rate_limit)
        md_snapshot_dump_rate_limit(f, 2, "connection_rate_limit", l->conn_rate_limit);
    fprintf(f, "}\n");
}

static void dump_cluster(FILE *f, const struct md_snap_cluster *c)
{
    static const char *const types[] = {"STATIC", "DNS", "DNS_SRV"};
    static const char *const lbs[] = {
        "ROUND_ROBIN", "WEIGHTED_ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "MAGLEV", "RANDOM"};
    fprintf(f,
            "cluster {\n  name: \"%s\"\n  type: %s\n  lb_policy: %s\n"
            "  connect_timeout_ms: %u\n  max_connect_attempts: %u\n",
            c->name, types[c->discovery], lbs[c->lb], c->connect_timeout_ms,
            c->max_connect_attempts);
    if (c->dns_name)
        fprintf(f, "  dns_name: \"%s\"\n", c->dns_name);
    if (c->discovery == MD_DISCOVERY_DNS)
        fprintf(f, "  dns_port: %u\n", c->dns_port);
    for (size_t k = 0; k < c->n_endpoints; k++)
        fprintf(f, "  endpoint { address: \"%s\" weight: %u priority: %u }\n",
                c->endpoints[k].label, c->endpoints[k].weight, c->endpoints[k].priority);
    for (size_t k = 0; k < c->n_hash_policies; k++)
        if (c->hash_policies[k].header)
            fprintf(f, "  hash_policy { header: \"%s\" }\n", c->hash_policies[k].header);
        else
            fprintf(f, "  hash_policy { source_ip: true }\n");
    if (c->lb == MD_LB_RING_HASH)
        fprintf(f, "  ring_hash { points_per_weight: %u }\n", c->ring_points);
    fprintf(f, "  panic_threshold_percent: %u\n", c->panic_threshold);
    const struct md_snap_health_check *hc = c->health_check;
    if (hc) {
        fprintf(f,
                "  health_check {\n    interval_ms: %u\n    jitter_ms: %u\n    timeout_ms: %u\n"
                "    healthy_threshold: %u\n    unhealthy_threshold: %u\n",
                hc->interval_ms, hc->jitter_ms, hc->timeout_ms, hc->healthy_threshold,
                hc->unhealthy_threshold);
        if (hc->kind == MD_HC_TCP)
            fprintf(f, "    tcp {}\n");
        if (hc->kind == MD_HC_HTTP) {
            fprintf(f, "    http {\n      path: \"%s\"\n", hc->path);
            if (hc->host)
                fprintf(f, "      host: \"%s\"\n", hc->host);
            for (size_t k = 0; k < hc->n_statuses; k++)
                fprintf(f, "      expected_statuses: %u\n", hc->statuses[k]);
            fprintf(f, "    }\n");
        }
        if (hc->kind == MD_HC_GRPC)
            fprintf(f, "    grpc {\n      service_name: \"%s\"\n%s%s%s    }\n", hc->service,
                    hc->host ? "      authority: \"" : "", hc->host ? hc->host : "",
                    hc->host ? "\"\n" : "");
        fprintf(f, "  }\n");
    }
    fprintf(f, "  protocol: %s\n  pool {\n", c->protocol == MD_CLUSTER_HTTP1 ? "HTTP1" : "HTTP2");
    dump_h2(f, 4, &c->h2);
    fprintf(f,
            "    max_connections_per_endpoint: %u\n    idle_timeout_ms: %u\n"
            "    keepalive_interval_ms: %u\n  }\n",
            c->max_connections_per_endpoint, c->pool_idle_timeout_ms, c->keepalive_interval_ms);
    md_snapshot_dump_cluster_resilience(f, c);
    if (c->tls) {
        fprintf(f, "  tls {\n");
        dump_tls_files(f, &c->tls->files);
        if (c->tls->sni)
            fprintf(f, "    sni: \"%s\"\n", c->tls->sni);
        for (size_t i = 0; i < c->tls->n_match_ids; i++)
            fprintf(f, "    match_spiffe_ids: \"%s\"\n", c->tls->match_ids[i]);
        fprintf(f, "  }\n");
    }
    fprintf(f, "}\n");
}

static void dump_headers(FILE *f, const char *key, const struct md_snap_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "        %s { key: ", key);
        put_str(f, h[i].name, h[i].name_len);
        fprintf(f, " value: ");
        put_str(f, h[i].value, h[i].value_len);
        fprintf(f, " }\n");
    }
}

static void dump_names(FILE *f, const char *key, char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put_field(f, 8, key, v[i], strlen(v[i]));
}

static void dump_route(FILE *f, const struct md_snapshot *snap, const struct md_snap_route *r)
{
    fprintf(f, "    route {\n");
    put_field(f, 6, "name", r->name, strlen(r->name));
    fprintf(f, "      match {\n");
    switch (r->kind) {
    case MD_PATH_MATCH_PREFIX: put_field(f, 8, "prefix", r->path, r->path_len); break;
    case MD_PATH_MATCH_EXACT: put_field(f, 8, "path", r->path, r->path_len); break;
    case MD_PATH_MATCH_GRPC:
        /* a service-wide match is the prefix "/SERVICE/"; say so */
        fprintf(f, "        grpc: ");
        put_str(f, r->path, r->path_len);
        fprintf(f, "%s\n", r->grpc_any_method ? "  # every method" : "");
        break;
    }
    for (size_t i = 0; i < r->n_headers; i++)
        md_snapshot_dump_header_matcher(f, 8, &r->headers[i]);
    for (size_t i = 0; i < r->n_server_names; i++)
        fprintf(f, "        server_names: \"%s\"\n", r->server_names[i]);
    fprintf(f, "      }\n      action {\n");
    if (r->n_clusters == 1) {
        fprintf(f, "        cluster: \"%s\"\n", snap->clusters[r->clusters[0].cluster].name);
    } else {
        for (size_t i = 0; i < r->n_clusters; i++)
            fprintf(f, "        weighted_cluster { name: \"%s\" weight: %u }\n",
                    snap->clusters[r->clusters[i].cluster].name, r->clusters[i].weight);
        fprintf(f, "        total_weight: %u\n", r->total_weight);
    }
    if (r->timeout_ms)
        fprintf(f, "        timeout_ms: %u\n", r->timeout_ms);
    else
        fprintf(f, "        timeout_ms: 0  # none\n");
    if (r->prefix_rewrite)
        put_field(f, 8, "prefix_rewrite", r->prefix_rewrite, r->prefix_rewrite_len);
    dump_headers(f, "request_header_to_add", r->req_add, r->n_req_add);
    dump_names(f, "request_header_to_remove", r->req_remove, r->n_req_remove);
    dump_headers(f, "response_header_to_add", r->resp_add, r->n_resp_add);
    dump_names(f, "response_header_to_remove", r->resp_remove, r->n_resp_remove);
    if (r->refuse_upgrades)
        fprintf(f, "        refuse_upgrades: true\n");
    dump_names(f, "upgrade_types", r->upgrades, r->n_upgrades);
    md_snapshot_dump_route_resilience(f, 8, r);
    if (r->has_fallback)
        fprintf(f, "        fallback_cluster: \"%s\"\n", snap->clusters[r->fallback].name);
    fprintf(f, "      }\n");
    if (r->rbac)
        md_snapshot_dump_rbac(f, 6, r->rbac);
    fprintf(f, "    }\n");
}

static void dump_route_config(FILE *f, const struct md_snapshot *snap,
                              const struct md_snap_route_config *rc)
{
    fprintf(f, "route_config {\n  name: \"%s\"\n", rc->name);
    for (size_t v = 0; v < rc->n_vhosts; v++) {
        const struct md_snap_vhost *vh = &rc->vhosts[v];
        fprintf(f, "  virtual_host {\n    name: \"%s\"\n", vh->name);
        for (size_t i = 0; i < vh->n_domains; i++) {
            const struct md_snap_domain *d = &vh->domains[i];
            /* written back in the configured form ("*.a.com"), lower case */
            fprintf(f, "    domain: \"%s%s%s\"\n",
                    d->kind == MD_DOMAIN_SUFFIX || d->kind == MD_DOMAIN_ANY ? "*" : "", d->text,
                    d->kind == MD_DOMAIN_PREFIX ? "*" : "");
        }
        for (size_t i = 0; i < vh->n_routes; i++)
            dump_route(f, snap, &vh->routes[i]);
        fprintf(f, "  }\n");
    }
    fprintf(f, "}\n");
}

int md_snapshot_dump(const struct md_snapshot *snap, char **out, size_t *len)
{
    FILE *f = open_memstream(out, len);
    if (!f)
        return MD_ENOMEM;
    fprintf(f, "# meshd running configuration (defaults applied)\n");
    fprintf(f, "admin {\n  address: \"%s\"\n}\n", snap->admin_label);
    const struct md_snap_dns *d = &snap->dns;
    fprintf(f, "dns {\n");
    for (size_t i = 0; i < d->n_resolvers; i++) {
        char a[MD_ADDR_STRLEN];
        md_addr_format((const struct sockaddr *)&d->resolvers[i].ss, a);
        fprintf(f, "  resolver: \"%s\"\n", a);
    }
    fprintf(f, "  min_refresh_ms: %u\n  max_refresh_ms: %u\n  query_timeout_ms: %u\n}\n",
            d->min_refresh_ms, d->max_refresh_ms, d->query_timeout_ms);
    for (size_t i = 0; i < snap->n_listeners; i++)
        dump_listener(f, snap, &snap->listeners[i]);
    for (size_t i = 0; i < snap->n_clusters; i++)
        dump_cluster(f, &snap->clusters[i]);
    for (size_t i = 0; i < snap->n_route_configs; i++)
        dump_route_config(f, snap, &snap->route_configs[i]);
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return MD_ENOMEM;
    }
    return 0;
}
