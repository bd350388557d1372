/* SPDX-License-Identifier: Apache-2.0 */
/* Resilience checks: routes' retry policy, rate limit and faults; clusters'
 * circuit breakers, outlier detection and retry budget; listeners'
 * connection rate limit. */
#include "snapshot.h"
#include "validate.h"

#include <stdio.h>
#include <string.h>

#define MAX_RETRIES 10u
#define MAX_BACKOFF_MS 3600000u
#define MAX_RETRY_BUFFER (16u * 1024u * 1024u)
#define MAX_RATE 1000000u
#define MAX_BURST 10000000u
#define MAX_KEYS 1000000u
#define MAX_BREAKER 1000000u
#define MAX_EJECTION_MS 3600000u

static const char *const retry_on_names[] = {"5xx", "gateway-error", "reset", "connect-failure",
                                             "retriable-status-codes"};

/* gRPC status names as retry_on and outlier detection spell them (codes 1-16). */
static const char *const grpc_names[] = {
    "ok",        "cancelled",      "unknown",           "invalid-argument",   "deadline-exceeded",
    "not-found", "already-exists", "permission-denied", "resource-exhausted", "failed-precondition",
    "aborted",   "out-of-range",   "unimplemented",     "internal",           "unavailable",
    "data-loss", "unauthenticated"};

int md_validate_grpc_status_name(const char *name)
{
    for (int i = 1; i < (int)(sizeof(grpc_names) / sizeof(grpc_names[0])); i++)
        if (strcmp(name, grpc_names[i]) == 0)
            return i;
    return -1;
}

int md_validate_retry_on_name(const char *name)
{
    for (int i = 0; i < (int)(sizeof(retry_on_names) / sizeof(retry_on_names[0])); i++)
        if (strcmp(name, retry_on_names[i]) == 0)
            return i;
    return -1;
}

const char *md_validate_retry_on_str(int k)
{
    return k >= 0 && k < (int)(sizeof(retry_on_names) / sizeof(retry_on_names[0]))
               ? retry_on_names[k]
               : NULL;
}

static void check_grpc_names(struct md_errlist *el, const char *res, const char *at,
                             char *const *names, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (md_validate_grpc_status_name(names[k]) < 0) {
            char f[200];
            snprintf(f, sizeof(f), "%.160s[%zu]", at, k);
            md_errlist_add(el, res, f,
                           "\"%.40s\" is not a gRPC status name (\"unavailable\", "
                           "\"resource-exhausted\", \"deadline-exceeded\", ...)",
                           names[k]);
        }
    }
}

void md_validate_retry_policy(struct md_errlist *el, const char *res, const char *at,
                              const Mesh__V1__RetryPolicy *r)
{
    char f[160];
    snprintf(f, sizeof(f), "%s.num_retries", at);
    if (r->num_retries > MAX_RETRIES)
        md_errlist_add(el, res, f, "%u, at most %u", r->num_retries, MAX_RETRIES);
    if (!r->n_retry_on && !r->n_grpc_retry_on) {
        snprintf(f, sizeof(f), "%s", at);
        md_errlist_add(el, res, f, "retry_on or grpc_retry_on is required (what to retry)");
    }
    bool codes = false;
    for (size_t k = 0; k < r->n_retry_on; k++) {
        int c = md_validate_retry_on_name(r->retry_on[k]);
        codes |= c == 4;
        if (c < 0) {
            snprintf(f, sizeof(f), "%s.retry_on[%zu]", at, k);
            md_errlist_add(el, res, f,
                           "\"%.40s\": one of 5xx, gateway-error, reset, connect-failure, "
                           "retriable-status-codes",
                           r->retry_on[k]);
        }
    }
    snprintf(f, sizeof(f), "%s.grpc_retry_on", at);
    check_grpc_names(el, res, f, r->grpc_retry_on, r->n_grpc_retry_on);
    if (r->n_retriable_status_codes && !codes) {
        snprintf(f, sizeof(f), "%s.retriable_status_codes", at);
        md_errlist_add(el, res, f, "needs \"retriable-status-codes\" in retry_on");
    }
    for (size_t k = 0; k < r->n_retriable_status_codes; k++) {
        if (r->retriable_status_codes[k] < 100 || r->retriable_status_codes[k] > 599) {
            snprintf(f, sizeof(f), "%s.retriable_status_codes[%zu]", at, k);
            md_errlist_add(el, res, f, "%u is not an HTTP status (100-599)",
                           r->retriable_status_codes[k]);
        }
    }
    snprintf(f, sizeof(f), "%s.per_try_timeout_ms", at);
    md_validate_range0(el, res, f, r->per_try_timeout_ms, 1, MAX_BACKOFF_MS, " ms");
    snprintf(f, sizeof(f), "%s.base_interval_ms", at);
    md_validate_range0(el, res, f, r->base_interval_ms, 1, MAX_BACKOFF_MS, " ms");
    snprintf(f, sizeof(f), "%s.max_interval_ms", at);
    md_validate_range0(el, res, f, r->max_interval_ms, 1, MAX_BACKOFF_MS, " ms");
    if (r->max_interval_ms && r->max_interval_ms < r->base_interval_ms)
        md_errlist_add(el, res, f, "%u ms is below base_interval_ms (%u ms)", r->max_interval_ms,
                       r->base_interval_ms);
    snprintf(f, sizeof(f), "%s.buffer_limit_bytes", at);
    md_validate_range0(el, res, f, r->buffer_limit_bytes, 1, MAX_RETRY_BUFFER, " bytes");
}

void md_validate_rate_limit(struct md_errlist *el, const char *res, const char *at,
                            const Mesh__V1__RateLimit *r, bool keyed)
{
    char f[160];
    snprintf(f, sizeof(f), "%s.per_second", at);
    if (r->per_second == 0 || r->per_second > MAX_RATE)
        md_errlist_add(el, res, f, "%u: 1 to %u is required", r->per_second, MAX_RATE);
    snprintf(f, sizeof(f), "%s.burst", at);
    md_validate_range0(el, res, f, r->burst, 1, MAX_BURST, "");
    snprintf(f, sizeof(f), "%s.max_keys", at);
    md_validate_range0(el, res, f, r->max_keys, 1, MAX_KEYS, "");
    if (r->key_case != MESH__V1__RATE_LIMIT__KEY__NOT_SET && !keyed) {
        snprintf(f, sizeof(f), "%s", at);
        md_errlist_add(el, res, f, "a key (header, spiffe_id) is for routes only");
    }
    if (r->key_case == MESH__V1__RATE_LIMIT__KEY_HEADER) {
        snprintf(f, sizeof(f), "%s.header", at);
        md_validate_header_name(el, res, f, r->header, "keyed on", false);
    }
    if (r->key_case == MESH__V1__RATE_LIMIT__KEY_SPIFFE_ID && !r->spiffe_id) {
        snprintf(f, sizeof(f), "%s.spiffe_id", at);
        md_errlist_add(el, res, f, "set it true, or leave the key unset");
    }
}

void md_validate_fault(struct md_errlist *el, const char *res, const char *at,
                       const Mesh__V1__FaultInjection *x)
{
    char f[160];
    snprintf(f, sizeof(f), "%s.delay_percent", at);
    if (x->delay_percent > 100)
        md_errlist_add(el, res, f, "%u, at most 100", x->delay_percent);
    snprintf(f, sizeof(f), "%s.delay_ms", at);
    if (x->delay_percent && !x->delay_ms)
        md_errlist_add(el, res, f, "required with delay_percent");
    md_validate_range0(el, res, f, x->delay_ms, 1, MAX_BACKOFF_MS, " ms");
    snprintf(f, sizeof(f), "%s.abort_percent", at);
    if (x->abort_percent > 100)
        md_errlist_add(el, res, f, "%u, at most 100", x->abort_percent);
    if (x->abort_percent && !x->abort_http_status && !x->abort_grpc_status)
        md_errlist_add(el, res, f, "needs abort_http_status or abort_grpc_status");
    snprintf(f, sizeof(f), "%s.abort_http_status", at);
    if (x->abort_http_status && (x->abort_http_status < 200 || x->abort_http_status > 599))
        md_errlist_add(el, res, f, "%u: 200 to 599", x->abort_http_status);
    snprintf(f, sizeof(f), "%s.abort_grpc_status", at);
    if (x->abort_grpc_status > 16)
        md_errlist_add(el, res, f, "%u: 1 to 16", x->abort_grpc_status);
}

void md_validate_cluster_resilience(struct md_errlist *el, const char *res,
                                    const Mesh__V1__Cluster *c)
{
    const Mesh__V1__CircuitBreakers *cb = c->circuit_breakers;
    if (cb) {
        md_validate_range0(el, res, "circuit_breakers.max_connections", cb->max_connections, 1,
                           MAX_BREAKER, "");
        md_validate_range0(el, res, "circuit_breakers.max_pending_requests",
                           cb->max_pending_requests, 1, MAX_BREAKER, "");
        md_validate_range0(el, res, "circuit_breakers.max_requests", cb->max_requests, 1,
                           MAX_BREAKER, "");
        md_validate_range0(el, res, "circuit_breakers.max_retries", cb->max_retries, 1, MAX_BREAKER,
                           "");
    }
    const Mesh__V1__RetryBudget *rb = c->retry_budget;
    if (rb) {
        md_validate_range0(el, res, "retry_budget.budget_percent", rb->budget_percent, 1, 100, "%");
        md_validate_range0(el, res, "retry_budget.min_retry_concurrency", rb->min_retry_concurrency,
                           1, 10000, "");
    }
    const Mesh__V1__OutlierDetection *o = c->outlier_detection;
    if (!o)
        return;
    md_validate_range0(el, res, "outlier_detection.consecutive_errors", o->consecutive_errors, 1,
                       1000, "");
    md_validate_range0(el, res, "outlier_detection.consecutive_grpc_failures",
                       o->consecutive_grpc_failures, 1, 1000, "");
    check_grpc_names(el, res, "outlier_detection.grpc_failure_statuses", o->grpc_failure_statuses,
                     o->n_grpc_failure_statuses);
    if (o->success_rate_threshold_percent > 100)
        md_errlist_add(el, res, "outlier_detection.success_rate_threshold_percent",
                       "%u, at most 100", o->success_rate_threshold_percent);
    md_validate_range0(el, res, "outlier_detection.success_rate_min_requests",
                       o->success_rate_min_requests, 1, 1000000, "");
    md_validate_range0(el, res, "outlier_detection.interval_ms", o->interval_ms, 100,
                       MAX_EJECTION_MS, " ms");
    md_validate_range0(el, res, "outlier_detection.base_ejection_time_ms", o->base_ejection_time_ms,
                       1, MAX_EJECTION_MS, " ms");
    md_validate_range0(el, res, "outlier_detection.max_ejection_time_ms", o->max_ejection_time_ms,
                       1, MAX_EJECTION_MS, " ms");
    if (o->max_ejection_time_ms &&
        o->max_ejection_time_ms <
            (o->base_ejection_time_ms ? o->base_ejection_time_ms : MD_DEFAULT_OUTLIER_BASE_MS))
        md_errlist_add(el, res, "outlier_detection.max_ejection_time_ms",
                       "%u ms is below base_ejection_time_ms (%u ms)", o->max_ejection_time_ms,
                       o->base_ejection_time_ms ? o->base_ejection_time_ms
                                                : MD_DEFAULT_OUTLIER_BASE_MS);
    if (o->max_ejection_percent > 100)
        md_errlist_add(el, res, "outlier_detection.max_ejection_percent", "%u, at most 100",
                       o->max_ejection_percent);
}
