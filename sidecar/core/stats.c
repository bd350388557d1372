/* SPDX-License-Identifier: Apache-2.0 */
#include "core/stats.h"

#include <stdlib.h>

const struct md_stat_desc md_lstat_desc[MD_LSTAT__N] = {
    [MD_LSTAT_CX_TOTAL] = {"meshd_listener_downstream_cx_total", "Downstream connections accepted.",
                           false},
    [MD_LSTAT_CX_ACTIVE] = {"meshd_listener_downstream_cx_active",
                            "Downstream connections open now.", true},
    [MD_LSTAT_RX_BYTES] = {"meshd_listener_downstream_rx_bytes_total",
                           "Bytes read from downstream clients.", false},
    [MD_LSTAT_TX_BYTES] = {"meshd_listener_downstream_tx_bytes_total",
                           "Bytes written to downstream clients.", false},
    [MD_LSTAT_FD_EXHAUSTED] = {"meshd_listener_accept_fd_exhausted_total",
                               "accept() failures for lack of file descriptors (EMFILE/ENFILE).",
                               false},
    [MD_LSTAT_RQ_TOTAL] = {"meshd_listener_http_rq_total", "HTTP requests received.", false},
    [MD_LSTAT_RQ_ACTIVE] = {"meshd_listener_http_rq_active", "HTTP requests in progress.", true},
    [MD_LSTAT_RQ_NO_ROUTE] = {"meshd_listener_http_rq_no_route_total",
                              "Requests answered 404 / UNIMPLEMENTED: no route matched.", false},
    [MD_LSTAT_RQ_TIMEOUT] = {"meshd_listener_http_rq_timeout_total",
                             "Requests that hit their deadline (504 / DEADLINE_EXCEEDED).", false},
    [MD_LSTAT_RQ_DS_RESET] = {"meshd_listener_http_rq_downstream_reset_total",
                              "Streams the client reset before they completed.", false},
    [MD_LSTAT_RQ_TOO_LARGE] =
        {"meshd_listener_http_rq_header_too_large_total",
         "Requests whose header block exceeded max_header_list_size (or too many fields).", false},
    [MD_LSTAT_RQ_BAD_REQUEST] = {"meshd_listener_http_rq_bad_request_total",
                                 "Malformed requests refused: HTTP/1 while parsing (400, 414), "
                                 "HTTP/2 by a stream reset (PROTOCOL_ERROR).",
                                 false},
    [MD_LSTAT_RQ_HEADER_TIMEOUT] = {"meshd_listener_http_rq_header_timeout_total",
                                    "Requests whose header section was not complete within "
                                    "request_headers_timeout_ms (their connection is closed).",
                                    false},
    [MD_LSTAT_DETECT_H2] = {"meshd_listener_detect_http2_total",
                            "AUTO listeners: connections that began with the HTTP/2 preface.",
                            false},
    [MD_LSTAT_DETECT_HTTP1] = {"meshd_listener_detect_http1_total",
                               "AUTO listeners: connections handed to HTTP/1.1.", false},
    [MD_LSTAT_DETECT_TLS] = {"meshd_listener_detect_tls_total",
                             "AUTO listeners: connections that began with a TLS ClientHello "
                             "(terminated on a TLS listener, else proxied to tcp_fallback).",
                             false},
    [MD_LSTAT_DETECT_TCP] = {"meshd_listener_detect_tcp_total",
                             "AUTO listeners: connections that began with neither HTTP nor TLS, "
                             "proxied to tcp_fallback.",
                             false},
    [MD_LSTAT_DETECT_TIMEOUT] = {"meshd_listener_detect_timeout_total",
                                 "AUTO listeners: clients silent for detect_timeout_ms "
                                 "(server-first protocols), proxied to tcp_fallback.",
                                 false},
    [MD_LSTAT_DETECT_NONE] = {"meshd_listener_detect_none_total",
                              "AUTO listeners: connections closed before their first bytes "
                              "decided, or TLS with no tcp_fallback to take it.",
                              false},
    [MD_LSTAT_UPGRADE] = {"meshd_listener_http_upgrade_total",
                          "Upgraded requests (WebSocket and other Upgrade / extended CONNECT) "
                          "the upstream accepted: tunnels opened.",
                          false},
    [MD_LSTAT_UPGRADE_REFUSED] = {"meshd_listener_http_rq_upgrade_refused_total",
                                  "Upgrade requests meshd refused: not allowed on the route "
                                  "(403) or the cluster speaks HTTP/2 (501).",
                                  false},
    [MD_LSTAT_TLS_HANDSHAKE] = {"meshd_listener_tls_handshake_total", "TLS handshakes completed.",
                                false},
    [MD_LSTAT_TLS_HANDSHAKE_ERROR] = {"meshd_listener_tls_handshake_error_total",
                                      "TLS handshakes that failed (protocol version, no or "
                                      "untrusted client certificate, ALPN) or timed out.",
                                      false},
    [MD_LSTAT_TLS_PLAINTEXT_REFUSED] = {"meshd_listener_tls_plaintext_refused_total",
                                        "Connections that did not begin with TLS, closed on a "
                                        "TLS listener without allow_plaintext.",
                                        false},
    [MD_LSTAT_H2_GOAWAY_ERROR] = {"meshd_listener_http2_protocol_error_total",
                                  "Connections closed with GOAWAY for a protocol error or flood.",
                                  false},
    [MD_LSTAT_RQ_RESET_FLOOD] = {"meshd_listener_http_rq_reset_flood_refused_total",
                                 "Requests refused before routing (HTTP/2 REFUSED_STREAM) because "
                                 "their client address, or the listener, abandoned too many "
                                 "streams (rapid reset across connections).",
                                 false},
    [MD_LSTAT_ACCESS_LOG_DROPPED] = {"meshd_listener_access_log_dropped_total",
                                     "Access-log lines of reset or locally answered requests left "
                                     "out to bound the log under a flood.",
                                     false},
};

const struct md_stat_desc md_cstat_desc[MD_CSTAT__N] = {
    [MD_CSTAT_CX_TOTAL] = {"meshd_cluster_upstream_cx_total", "Upstream connect attempts started.",
                           false},
    [MD_CSTAT_CX_ACTIVE] = {"meshd_cluster_upstream_cx_active",
                            "Established upstream connections open now.", true},
    [MD_CSTAT_CONNECT_FAIL] = {"meshd_cluster_upstream_cx_connect_fail_total",
                               "Upstream connects refused or unreachable.", false},
    [MD_CSTAT_CONNECT_TIMEOUT] = {"meshd_cluster_upstream_cx_connect_timeout_total",
                                  "Upstream connects that ran past connect_timeout_ms.", false},
    [MD_CSTAT_UNAVAILABLE] =
        {"meshd_cluster_upstream_unavailable_total",
         "Downstream connections closed because every upstream attempt failed.", false},
    [MD_CSTAT_RX_BYTES] = {"meshd_cluster_upstream_rx_bytes_total", "Bytes read from upstreams.",
                           false},
    [MD_CSTAT_TX_BYTES] = {"meshd_cluster_upstream_tx_bytes_total", "Bytes written to upstreams.",
                           false},
    [MD_CSTAT_RQ_TOTAL] = {"meshd_cluster_upstream_rq_total", "HTTP requests sent upstream.",
                           false},
    [MD_CSTAT_RQ_ACTIVE] = {"meshd_cluster_upstream_rq_active",
                            "HTTP requests in progress upstream.", true},
    [MD_CSTAT_RQ_UNAVAILABLE] = {"meshd_cluster_upstream_rq_unavailable_total",
                                 "Requests answered 503 / UNAVAILABLE: no upstream connection.",
                                 false},
    [MD_CSTAT_RQ_RESET] = {"meshd_cluster_upstream_rq_reset_total",
                           "Upstream streams reset before they completed.", false},
    [MD_CSTAT_RQ_REFUSED_RETRY] = {"meshd_cluster_upstream_rq_refused_retry_total",
                                   "Requests refused by an upstream (GOAWAY) and sent again.",
                                   false},
    [MD_CSTAT_H2_CX_ACTIVE] = {"meshd_cluster_upstream_http2_cx_active",
                               "Pooled HTTP/2 upstream connections open.", true},
    [MD_CSTAT_TLS_HANDSHAKE_ERROR] = {"meshd_cluster_tls_handshake_error_total",
                                      "TLS handshakes with endpoints that failed (untrusted "
                                      "certificate, protocol, ALPN).",
                                      false},
    [MD_CSTAT_RQ_RETRY] = {"meshd_cluster_upstream_rq_retry_total",
                           "Attempts made again by a route's retry policy.", false},
    [MD_CSTAT_RQ_RETRY_SUCCESS] = {"meshd_cluster_upstream_rq_retry_success_total",
                                   "Requests answered by an attempt after the first.", false},
    [MD_CSTAT_RQ_FALLBACK] = {"meshd_cluster_upstream_rq_fallback_total",
                              "Requests this cluster had no endpoint for, sent to the route's "
                              "fallback cluster.",
                              false},
    [MD_CSTAT_RQ_FAULT_ABORT] = {"meshd_cluster_upstream_rq_fault_abort_total",
                                 "Requests answered by fault injection instead of this cluster.",
                                 false},
    [MD_CSTAT_TLS_IDENTITY_MISMATCH] = {"meshd_cluster_tls_identity_mismatch_total",
                                        "Endpoints refused for presenting a SPIFFE ID not in "
                                        "match_spiffe_ids (or none).",
                                        false},
/* one family, one series per breaker (enum md_breaker's names) */
#define OVERFLOW_NAME "meshd_cluster_overflow_total"
#define OVERFLOW_HELP "Requests (or connections, or retries) refused at once by a circuit breaker."
    [MD_CSTAT_OVERFLOW_CONNECTIONS] = {OVERFLOW_NAME, OVERFLOW_HELP, false,
                                       "breaker=\"connections\""},
    [MD_CSTAT_OVERFLOW_PENDING] = {OVERFLOW_NAME, OVERFLOW_HELP, false, "breaker=\"pending\""},
    [MD_CSTAT_OVERFLOW_REQUESTS] = {OVERFLOW_NAME, OVERFLOW_HELP, false, "breaker=\"requests\""},
    [MD_CSTAT_OVERFLOW_RETRIES] = {OVERFLOW_NAME, OVERFLOW_HELP, false, "breaker=\"retries\""},
#undef OVERFLOW_NAME
#undef OVERFLOW_HELP
};

const struct md_stat_desc md_rstat_desc[MD_RSTAT__N] = {
    [MD_RSTAT_ALLOWED] = {"meshd_rbac_allowed_total",
                          "Requests RBAC let through, by the policy that decided (\"\": none "
                          "matched a DENY rule).",
                          false},
    [MD_RSTAT_DENIED] = {"meshd_rbac_denied_total",
                         "Requests RBAC refused (403 / PERMISSION_DENIED), by the policy that "
                         "decided (\"\": none matched an ALLOW rule).",
                         false},
};

const struct md_stat_desc md_qstat_desc[MD_QSTAT__N] = {
    [MD_QSTAT_ALLOWED] = {"meshd_rate_limit_allowed_total",
                          "Requests (scope route) or connections (scope listener) a rate "
                          "limit let through.",
                          false},
    [MD_QSTAT_LIMITED] = {"meshd_rate_limited_total",
                          "Requests refused by a rate limit (429 / RESOURCE_EXHAUSTED), or "
                          "connections closed at accept.",
                          false},
};

const struct md_stat_desc md_tstat_desc[MD_TSTAT__N] = {
    [MD_TSTAT_RETRY] = {"meshd_route_retry_total",
                        "Attempts made again by the route's retry policy.", false},
    [MD_TSTAT_RETRY_SUCCESS] = {"meshd_route_retry_success_total",
                                "Requests answered by an attempt after the first.", false},
    [MD_TSTAT_RETRY_OVERFLOW] = {"meshd_route_retry_overflow_total",
                                 "Retries not made: over the cluster's retry budget or "
                                 "max_retries circuit breaker.",
                                 false},
};

const size_t md_stat_width[MD_DIM__N] = {MD_LSTAT__N, MD_CSTAT__N, MD_RSTAT__N, MD_QSTAT__N,
                                         MD_TSTAT__N};

struct md_stats *md_stats_new(const size_t n[MD_DIM__N])
{
    struct md_stats *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    for (int d = 0; d < MD_DIM__N; d++) {
        st->n[d] = n[d];
        if (!(st->v[d] = calloc(n[d] * md_stat_width[d] + 1, sizeof(uint64_t)))) {
            md_stats_free(st);
            return NULL;
        }
    }
    return st;
}

void md_stats_free(struct md_stats *st)
{
    if (!st)
        return;
    for (int d = 0; d < MD_DIM__N; d++)
        free(st->v[d]);
    free(st);
}

int64_t md_stats_sum(struct md_stats *const *blocks, size_t n, enum md_stat_dim d, size_t row,
                     int s)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += __atomic_load_n(md_stats_at(blocks[i], d, row, s), __ATOMIC_RELAXED);
    return (int64_t)sum;
}
