/* SPDX-License-Identifier: Apache-2.0 */
/* The immutable runtime configuration the data path reads. Built once from a
 * validated bundle, shared by reference (atomic count), never modified; a new
 * configuration is a new snapshot. No protobuf-c type crosses this header. */
#ifndef MESHD_XDS_SNAPSHOT_H
#define MESHD_XDS_SNAPSHOT_H

#include "core/addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct md_tls_creds; /* tls/tls_creds.h */

/* In the order of mesh.v1.Cluster.LbPolicy. */
enum md_lb_policy {
    MD_LB_ROUND_ROBIN,
    MD_LB_WEIGHTED_ROUND_ROBIN,
    MD_LB_LEAST_REQUEST,
    MD_LB_RING_HASH,
    MD_LB_MAGLEV,
    MD_LB_RANDOM,
};
enum md_discovery { MD_DISCOVERY_STATIC, MD_DISCOVERY_DNS, MD_DISCOVERY_DNS_SRV };
enum md_cluster_protocol { MD_CLUSTER_HTTP2, MD_CLUSTER_HTTP1 };

/* HTTP/2 limits, defaults applied (see mesh.v1.Http2Options). */
struct md_snap_h2_opts {
    uint32_t max_concurrent_streams;
    uint32_t initial_stream_window;
    uint32_t initial_connection_window;
    uint32_t max_header_list_size;
};

/* A header to set: name lower case, value without CR/LF/NUL. */
struct md_snap_header {
    char *name;
    size_t name_len;
    char *value;
    size_t value_len;
};

enum md_hdr_match_kind { MD_HDR_MATCH_EXACT, MD_HDR_MATCH_PRESENT, MD_HDR_MATCH_ABSENT };

struct md_snap_header_matcher {
    char *name; /* lower case */
    size_t name_len;
    enum md_hdr_match_kind kind;
    char *value; /* MD_HDR_MATCH_EXACT only, else NULL */
    size_t value_len;
};

enum md_path_match_kind {
    MD_PATH_MATCH_PREFIX, /* path starts with |path| */
    MD_PATH_MATCH_EXACT,  /* path (without query) equals |path| */
    MD_PATH_MATCH_GRPC,   /* gRPC request; path equals |path| ("/svc/method"), or starts
                           * with it ("/svc/") when grpc_any_method */
};

/* Authorization (mesh.v1.Rbac): who (the peer's verified SPIFFE ID) may do
 * what. Matched by router/rbac.c. */
enum md_rbac_action {
    MD_RBAC_ALLOW, /* a request must match a policy */
    MD_RBAC_DENY,  /* a request matching a policy is refused */
};

enum md_rbac_id_kind {
    MD_RBAC_ID_EXACT,           /* peer ID equals |text| */
    MD_RBAC_ID_PREFIX,          /* peer ID starts with |text| */
    MD_RBAC_ID_TRUST_DOMAIN,    /* peer ID is |text| ("spiffe://td") or starts with |text| + '/' */
    MD_RBAC_ID_AUTHENTICATED,   /* any peer ID */
    MD_RBAC_ID_UNAUTHENTICATED, /* no peer ID */
    MD_RBAC_ID_ANY,             /* anyone */
};

struct md_snap_rbac_principal {
    enum md_rbac_id_kind kind;
    char *text; /* EXACT, PREFIX, TRUST_DOMAIN; else NULL */
    size_t len;
};

/* Every part given must hold; none given: any request. */
struct md_snap_rbac_permission {
    char *grpc; /* "/svc/method", or "/svc/" when grpc_any_method; NULL: any request */
    size_t grpc_len;
    bool grpc_any_method;
    char *path_prefix; /* NULL: any path */
    size_t path_prefix_len;
    size_t n_headers;
    struct md_snap_header_matcher *headers; /* all must hold */
};

struct md_snap_rbac_policy {
    char *name;
    size_t stat;         /* index into md_snapshot.rbac_stats */
    size_t n_principals; /* 0: any peer */
    struct md_snap_rbac_principal *principals;
    size_t n_permissions; /* 0: any request */
    struct md_snap_rbac_permission *permissions;
};

enum md_rbac_scope { MD_RBAC_SCOPE_LISTENER, MD_RBAC_SCOPE_ROUTE };

struct md_snap_rbac {
    enum md_rbac_scope scope;
    const char *owner; /* borrowed: the listener's or the route's name */
    enum md_rbac_action action;
    size_t n_policies; /* tried in order, the first match decides */
    struct md_snap_rbac_policy *policies;
    size_t stat_none; /* md_snapshot.rbac_stats slot of "no policy matched" */
};

/* One series of meshd_rbac_{allowed,denied}_total; all strings borrowed. */
struct md_snap_rbac_stat {
    const char *scope; /* "listener" or "route" */
    const char *owner;
    const char *policy; /* "" when no policy matched */
};

/* Resilience (mesh/v1/resilience.proto), defaults applied. */
enum {
    MD_RETRY_ON_5XX = 1 << 0,
    MD_RETRY_ON_GATEWAY_ERROR = 1 << 1,
    MD_RETRY_ON_RESET = 1 << 2,
    MD_RETRY_ON_CONNECT_FAILURE = 1 << 3,
    MD_RETRY_ON_STATUS_CODES = 1 << 4,
};

struct md_snap_retry {
    uint32_t num_retries;
    uint32_t on;      /* MD_RETRY_ON_* */
    uint32_t grpc_on; /* bit n: gRPC status n is retried */
    size_t n_codes;
    uint32_t *codes;             /* HTTP statuses for MD_RETRY_ON_STATUS_CODES */
    uint32_t per_try_timeout_ms; /* 0: none */
    uint32_t base_interval_ms, max_interval_ms;
    uint32_t buffer_limit;
    size_t stat; /* md_snapshot.retry_stats slot (routes of one name share it) */
};

struct md_snap_rate_limit {
    uint32_t per_second, burst, max_keys;
    char *header; /* keyed by this header (lower case); NULL: not */
    size_t header_len;
    bool by_spiffe_id;
    size_t idx;        /* position in md_snapshot.rate_limits: the shared bucket's slot */
    const char *scope; /* "listener" or "route", for stats */
    const char *owner; /* the listener's or route's name (borrowed) */
};

struct md_snap_fault {
    uint32_t delay_ms, delay_percent;
    uint32_t abort_http_status, abort_grpc_status, abort_percent;
    bool header_control;
};

struct md_snap_breakers {
    uint32_t max_connections, max_pending, max_requests, max_retries;
};

struct md_snap_outlier {
    uint32_t consecutive_errors, consecutive_grpc_failures;
    uint32_t grpc_failures; /* bit n: gRPC status n counts as a failure */
    uint32_t success_rate_threshold, success_rate_min_requests, interval_ms;
    uint32_t base_ejection_ms, max_ejection_ms, max_ejection_percent;
};

struct md_snap_retry_budget {
    uint32_t percent, min_concurrency;
};

struct md_snap_weighted_cluster {
    size_t cluster; /* index into md_snapshot.clusters */
    uint32_t weight;
};

struct md_snap_route {
    char *name; /* the configured name, or "VHOST/routes[i]" when it had none */
    enum md_path_match_kind kind;
    char *path;
    size_t path_len;
    bool grpc_any_method;
    size_t n_headers;
    struct md_snap_header_matcher *headers;
    size_t n_server_names;
    char **server_names; /* lower case; none: any connection */
    /* action */
    size_t n_clusters; /* 1 for a plain cluster */
    struct md_snap_weighted_cluster *clusters;
    uint32_t total_weight; /* sum of weights, > 0 */
    uint32_t timeout_ms;   /* 0: none */
    char *prefix_rewrite;  /* NULL: none */
    size_t prefix_rewrite_len;
    size_t n_req_add, n_req_remove, n_resp_add, n_resp_remove;
    struct md_snap_header *req_add, *resp_add;
    char **req_remove, **resp_remove; /* lower case */
    bool refuse_upgrades;
    struct md_snap_retry *retry;           /* NULL: no retries */
    uint32_t max_stream_duration_ms;       /* 0: none */
    struct md_snap_rate_limit *rate_limit; /* NULL: none */
    struct md_snap_fault *fault;           /* NULL: none */
    bool has_fallback;
    size_t fallback; /* cluster index used when the route's has no endpoint */
    size_t n_upgrades;
    char **upgrades;           /* lower case; none configured: "websocket" */
    struct md_snap_rbac *rbac; /* checked after the listener's; NULL: none */
};

enum md_domain_kind {
    MD_DOMAIN_EXACT,  /* host equals |text| */
    MD_DOMAIN_SUFFIX, /* "*.example.com": host ends with |text| (".example.com") */
    MD_DOMAIN_PREFIX, /* "api.*": host starts with |text| ("api.") */
    MD_DOMAIN_ANY,    /* "*" */
};

struct md_snap_domain {
    enum md_domain_kind kind;
    char *text; /* lower case, the '*' removed */
    size_t len;
};

struct md_snap_vhost {
    char *name;
    size_t n_domains;
    struct md_snap_domain *domains;
    size_t n_routes;
    struct md_snap_route *routes;
};

struct md_snap_route_config {
    char *name;
    size_t idx;
    size_t n_vhosts;
    struct md_snap_vhost *vhosts;
};

/* Endpoints a cluster may have: validation refuses more, DNS answers are
 * cut there, and the balancers' arrays are sized by it. */
#define MD_SNAP_MAX_ENDPOINTS 1024u

struct md_snap_endpoint {
    struct md_addr addr;
    char label[MD_ADDR_STRLEN]; /* "ip:port" for logs and stats */
    uint32_t weight;            /* defaults applied: >= 1 */
    uint32_t priority;
};

/* A request's hash for the consistent-hash balancers: a header's value or
 * the client's IP. */
struct md_snap_hash_policy {
    char *header; /* lower case; NULL: source IP */
    size_t header_len;
};

enum md_hc_kind { MD_HC_TCP, MD_HC_HTTP, MD_HC_GRPC };

struct md_snap_health_check {
    uint32_t interval_ms, jitter_ms, timeout_ms; /* defaults applied */
    uint32_t healthy_threshold, unhealthy_threshold;
    enum md_hc_kind kind;
    char *path;         /* HTTP */
    char *host;         /* HTTP Host / gRPC :authority; NULL: the endpoint's address */
    uint32_t *statuses; /* HTTP; never empty (default: 200) */
    size_t n_statuses;
    char *service; /* gRPC HealthCheckRequest.service ("" allowed) */
};

/* How DNS clusters resolve (mesh.v1.Dns), defaults applied. */
struct md_snap_dns {
    size_t n_resolvers; /* 0: /etc/resolv.conf */
    struct md_addr *resolvers;
    uint32_t min_refresh_ms, max_refresh_ms, query_timeout_ms;
};

/* TLS files as configured (NULL: unset); the context built from them is in
 * |creds|, the one part of a snapshot that changes: a certificate rotation
 * replaces its context (tls/tls_creds.h). */
struct md_snap_tls_files {
    char *cert_chain, *private_key, *trusted_ca;
    struct md_tls_creds *creds;
};

struct md_snap_cluster_tls {
    struct md_snap_tls_files files;
    char *sni;          /* NULL: none */
    size_t n_match_ids; /* 0: any SPIFFE ID the CAs vouch for */
    char **match_ids;
};

struct md_snap_listener_tls {
    struct md_snap_tls_files files;
    int client_cert; /* enum md_tls_peer_cert */
    bool allow_plaintext;
    uint32_t handshake_timeout_ms; /* defaults applied */
};

struct md_snap_cluster {
    char *name;
    size_t idx; /* position in md_snapshot.clusters; stats index */
    enum md_discovery discovery;
    char *dns_name;    /* DNS, DNS_SRV */
    uint16_t dns_port; /* DNS */
    enum md_lb_policy lb;
    size_t n_hash_policies;
    struct md_snap_hash_policy *hash_policies;
    uint32_t ring_points;          /* RING_HASH: points per unit of weight, defaults applied */
    uint32_t connect_timeout_ms;   /* defaults applied */
    uint32_t max_connect_attempts; /* defaults applied (capped by the endpoints there are) */
    size_t n_endpoints;            /* STATIC: the endpoints; others: none */
    struct md_snap_endpoint *endpoints;
    struct md_snap_health_check *health_check; /* NULL: every endpoint healthy */
    uint32_t panic_threshold;                  /* percent, defaults applied */
    struct md_snap_breakers breakers;          /* defaults applied */
    struct md_snap_outlier *outlier;           /* NULL: no outlier detection */
    struct md_snap_retry_budget retry_budget;  /* defaults applied */
    /* HTTP upstreams (defaults applied) */
    enum md_cluster_protocol protocol;
    struct md_snap_h2_opts h2;
    uint32_t max_connections_per_endpoint;
    uint32_t pool_idle_timeout_ms;
    uint32_t keepalive_interval_ms;
    struct md_snap_cluster_tls *tls; /* NULL: plaintext */
};

enum md_snap_handler { MD_HANDLER_TCP_PROXY, MD_HANDLER_HTTP };

enum md_http_codec { MD_HTTP_CODEC_H2C, MD_HTTP_CODEC_HTTP1, MD_HTTP_CODEC_AUTO };

struct md_snap_http {
    enum md_http_codec codec;
    size_t route_config; /* index into md_snapshot.route_configs */
    struct md_snap_h2_opts h2;
    uint32_t stream_idle_timeout_ms;
    uint32_t idle_timeout_ms;
    uint32_t request_headers_timeout_ms; /* from a request's first byte to its last header */
    bool tcp_fallback;          /* AUTO: non-HTTP connections go to the listener's tcp */
    uint32_t detect_timeout_ms; /* AUTO with tcp_fallback: silence means server-first */
    bool xfcc_set;              /* forward_client_cert SANITIZE_SET */
    char *xfcc_header;          /* client_cert_header, default applied */
    size_t xfcc_header_len;
    struct md_snap_rbac *rbac; /* checked before routing; NULL: none */
};

struct md_snap_tcp_proxy {
    size_t cluster;           /* index into md_snapshot.clusters */
    uint32_t idle_timeout_ms; /* defaults applied */
    uint32_t buffer_limit;    /* bytes per direction, defaults applied */
    bool splice;
};

struct md_snap_listener {
    char *name;
    size_t idx; /* position in md_snapshot.listeners; stats index */
    struct md_addr addr;
    char label[MD_ADDR_STRLEN];
    enum md_snap_handler handler;
    struct md_snap_tcp_proxy tcp;               /* MD_HANDLER_TCP_PROXY, or http.tcp_fallback */
    struct md_snap_http http;                   /* MD_HANDLER_HTTP */
    struct md_snap_listener_tls *tls;           /* NULL: plaintext */
    struct md_snap_rate_limit *conn_rate_limit; /* NULL: none */
};

struct md_snapshot {
    int refs; /* atomic */
    size_t n_listeners;
    struct md_snap_listener *listeners;
    size_t n_clusters;
    struct md_snap_cluster *clusters;
    size_t n_route_configs;
    struct md_snap_route_config *route_configs;
    struct md_addr admin;
    char admin_label[MD_ADDR_STRLEN];
    struct md_snap_dns dns;
    /* RBAC stats slots: each policy, and each Rbac's "none matched", listeners'
     * first, then routes' in configuration order; Rbacs with the same labels
     * (routes of the same name) share their slots. */
    size_t n_rbac_stats;
    struct md_snap_rbac_stat *rbac_stats;
    size_t n_rate_limits; /* every listener's and route's rate limit, for the shared buckets */
    struct md_snap_rate_limit **rate_limits;
    size_t n_retry_stats; /* route names of the retry stats slots (borrowed from the routes) */
    const char **retry_stats;
};

/* Defaults the schema documents. */
#define MD_DEFAULT_IDLE_TIMEOUT_MS (3600u * 1000u)
#define MD_DEFAULT_BUFFER_LIMIT (64u * 1024u)
#define MD_DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define MD_DEFAULT_MAX_CONNECT_ATTEMPTS 3u
#define MD_DEFAULT_H2_MAX_CONCURRENT_STREAMS 100u
#define MD_DEFAULT_H2_STREAM_WINDOW (256u * 1024u)
#define MD_DEFAULT_H2_CONNECTION_WINDOW (1024u * 1024u)
#define MD_DEFAULT_H2_MAX_HEADER_LIST (64u * 1024u)
#define MD_DEFAULT_STREAM_IDLE_TIMEOUT_MS (300u * 1000u)
#define MD_DEFAULT_HTTP_IDLE_TIMEOUT_MS (3600u * 1000u)
#define MD_DEFAULT_DETECT_TIMEOUT_MS 100u
#define MD_DEFAULT_REQUEST_HEADERS_TIMEOUT_MS (10u * 1000u)
#define MD_DEFAULT_UPGRADE "websocket"
#define MD_DEFAULT_POOL_MAX_CONNECTIONS 8u
#define MD_DEFAULT_POOL_IDLE_TIMEOUT_MS (300u * 1000u)
#define MD_DEFAULT_KEEPALIVE_INTERVAL_MS (30u * 1000u)
#define MD_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u
#define MD_DEFAULT_XFCC_HEADER "x-forwarded-client-cert"
#define MD_DEFAULT_RING_POINTS 256u
#define MD_DEFAULT_PANIC_THRESHOLD 50u
#define MD_DEFAULT_HC_INTERVAL_MS 5000u
#define MD_DEFAULT_HC_TIMEOUT_MS 1000u
#define MD_DEFAULT_HC_HEALTHY_THRESHOLD 2u
#define MD_DEFAULT_HC_UNHEALTHY_THRESHOLD 3u
#define MD_DEFAULT_DNS_MIN_REFRESH_MS 1000u
#define MD_DEFAULT_DNS_MAX_REFRESH_MS (300u * 1000u)
#define MD_DEFAULT_DNS_QUERY_TIMEOUT_MS 2000u
#define MD_DEFAULT_RETRIES 2u
#define MD_DEFAULT_RETRY_BASE_MS 25u
#define MD_DEFAULT_RETRY_BUFFER (64u * 1024u)
#define MD_DEFAULT_RATE_LIMIT_KEYS 10000u
#define MD_DEFAULT_BREAKER_LIMIT 1024u
#define MD_DEFAULT_BREAKER_RETRIES 3u
#define MD_DEFAULT_RETRY_BUDGET_PERCENT 20u
#define MD_DEFAULT_RETRY_BUDGET_MIN 3u
#define MD_DEFAULT_OUTLIER_CONSECUTIVE 5u
#define MD_DEFAULT_OUTLIER_MIN_REQUESTS 100u
#define MD_DEFAULT_OUTLIER_INTERVAL_MS 10000u
#define MD_DEFAULT_OUTLIER_BASE_MS 30000u
#define MD_DEFAULT_OUTLIER_MAX_MS 300000u
#define MD_DEFAULT_OUTLIER_MAX_PERCENT 10u
#define MD_DEFAULT_ADMIN_IP "127.0.0.1"
#define MD_DEFAULT_ADMIN_PORT 15000u

struct md_snapshot *md_snapshot_ref(struct md_snapshot *snap);
/* Drops a reference; the last one frees the snapshot. NULL is ignored. */
void md_snapshot_unref(struct md_snapshot *snap);

/* Writes the running configuration, defaults included, as readable text
 * into a malloc'd string (*out, *len). Returns 0 or MD_ENOMEM. */
int md_snapshot_dump(const struct md_snapshot *snap, char **out, size_t *len);

#endif
