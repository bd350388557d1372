/* SPDX-License-Identifier: Apache-2.0 */
/* Resilience in the snapshot: retry policies, rate limits and faults of
 * routes, circuit breakers, outlier detection and retry budgets of
 * clusters, listeners' connection rate limits; defaults applied. */
#include "core/err.h"
#include "snapshot_build.h"
#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v ? v : def;
}

static uint32_t grpc_bits(char *const *names, size_t n)
{
    uint32_t bits = 0;
    for (size_t k = 0; k < n; k++)
        bits |= 1u << md_validate_grpc_status_name(names[k]); /* validated */
    return bits;
}

int md_snapshot_build_retry(const Mesh__V1__RetryPolicy *r, struct md_snap_retry **out)
{
    struct md_snap_retry *x = calloc(1, sizeof(*x));
    if (!(*out = x))
        return MD_ENOMEM;
    x->num_retries = or_default(r->num_retries, MD_DEFAULT_RETRIES);
    for (size_t k = 0; k < r->n_retry_on; k++)
        x->on |= 1u << md_validate_retry_on_name(r->retry_on[k]);
    x->grpc_on = grpc_bits(r->grpc_retry_on, r->n_grpc_retry_on);
    if (r->n_retriable_status_codes) {
        if (!(x->codes = calloc(r->n_retriable_status_codes, sizeof(*x->codes))))
            return MD_ENOMEM;
        x->n_codes = r->n_retriable_status_codes;
        memcpy(x->codes, r->retriable_status_codes, x->n_codes * sizeof(*x->codes));
    }
    x->per_try_timeout_ms = r->per_try_timeout_ms;
    x->base_interval_ms = or_default(r->base_interval_ms, MD_DEFAULT_RETRY_BASE_MS);
    x->max_interval_ms = or_default(r->max_interval_ms, 10 * x->base_interval_ms);
    x->buffer_limit = or_default(r->buffer_limit_bytes, MD_DEFAULT_RETRY_BUFFER);
    return 0;
}

void md_snapshot_free_retry(struct md_snap_retry *r)
{
    if (r)
        free(r->codes);
    free(r);
}

int md_snapshot_build_rate_limit(const Mesh__V1__RateLimit *r, const char *scope, const char *owner,
                                 struct md_snap_rate_limit **out)
{
    struct md_snap_rate_limit *x = calloc(1, sizeof(*x));
    if (!(*out = x))
        return MD_ENOMEM;
    x->per_second = r->per_second;
    x->burst = or_default(r->burst, r->per_second);
    x->max_keys = or_default(r->max_keys, MD_DEFAULT_RATE_LIMIT_KEYS);
    x->scope = scope;
    x->owner = owner;
    x->by_spiffe_id = r->key_case == MESH__V1__RATE_LIMIT__KEY_SPIFFE_ID;
    if (r->key_case == MESH__V1__RATE_LIMIT__KEY_HEADER) {
        if (!(x->header = strdup(r->header)))
            return MD_ENOMEM;
        x->header_len = strlen(x->header);
    }
    return 0;
}

void md_snapshot_free_rate_limit(struct md_snap_rate_limit *r)
{
    if (r)
        free(r->header);
    free(r);
}

int md_snapshot_build_fault(const Mesh__V1__FaultInjection *f, struct md_snap_fault **out)
{
    struct md_snap_fault *x = calloc(1, sizeof(*x));
    if (!(*out = x))
        return MD_ENOMEM;
    *x = (struct md_snap_fault){f->delay_ms,          f->delay_percent, f->abort_http_status,
                                f->abort_grpc_status, f->abort_percent, f->header_control};
    return 0;
}

int md_snapshot_build_cluster_resilience(const Mesh__V1__Cluster *c, struct md_snap_cluster *out)
{
    const Mesh__V1__CircuitBreakers *cb = c->circuit_breakers;
    out->breakers = (struct md_snap_breakers){
        or_default(cb ? cb->max_connections : 0, MD_DEFAULT_BREAKER_LIMIT),
        or_default(cb ? cb->max_pending_requests : 0, MD_DEFAULT_BREAKER_LIMIT),
        or_default(cb ? cb->max_requests : 0, MD_DEFAULT_BREAKER_LIMIT),
        or_default(cb ? cb->max_retries : 0, MD_DEFAULT_BREAKER_RETRIES),
    };
    const Mesh__V1__RetryBudget *rb = c->retry_budget;
    out->retry_budget = (struct md_snap_retry_budget){
        or_default(rb ? rb->budget_percent : 0, MD_DEFAULT_RETRY_BUDGET_PERCENT),
        or_default(rb ? rb->min_retry_concurrency : 0, MD_DEFAULT_RETRY_BUDGET_MIN),
    };
    const Mesh__V1__OutlierDetection *o = c->outlier_detection;
    if (!o)
        return 0;
    struct md_snap_outlier *x = calloc(1, sizeof(*x));
    if (!(out->outlier = x))
        return MD_ENOMEM;
    static char *const default_failures[] = {"unavailable", "internal", "unknown",
                                             "deadline-exceeded"};
    x->consecutive_errors = or_default(o->consecutive_errors, MD_DEFAULT_OUTLIER_CONSECUTIVE);
    x->consecutive_grpc_failures =
        or_default(o->consecutive_grpc_failures, MD_DEFAULT_OUTLIER_CONSECUTIVE);
    x->grpc_failures = o->n_grpc_failure_statuses
                           ? grpc_bits(o->grpc_failure_statuses, o->n_grpc_failure_statuses)
                           : grpc_bits(default_failures, 4);
    x->success_rate_threshold = o->success_rate_threshold_percent;
    x->success_rate_min_requests =
        or_default(o->success_rate_min_requests, MD_DEFAULT_OUTLIER_MIN_REQUESTS);
    x->interval_ms = or_default(o->interval_ms, MD_DEFAULT_OUTLIER_INTERVAL_MS);
    x->base_ejection_ms = or_default(o->base_ejection_time_ms, MD_DEFAULT_OUTLIER_BASE_MS);
    x->max_ejection_ms = or_default(o->max_ejection_time_ms, MD_DEFAULT_OUTLIER_MAX_MS);
    if (x->max_ejection_ms < x->base_ejection_ms)
        x->max_ejection_ms = x->base_ejection_ms;
    x->max_ejection_percent = or_default(o->max_ejection_percent, MD_DEFAULT_OUTLIER_MAX_PERCENT);
    return 0;
}

int md_snapshot_index_rate_limits(struct md_snapshot *s)
{
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < s->n_listeners; i++)
            if (s->listeners[i].conn_rate_limit && pass)
                s->rate_limits[n++] = s->listeners[i].conn_rate_limit;
            else if (s->listeners[i].conn_rate_limit)
                n++;
        for (size_t i = 0; i < s->n_route_configs; i++)
            for (size_t v = 0; v < s->route_configs[i].n_vhosts; v++)
                for (size_t r = 0; r < s->route_configs[i].vhosts[v].n_routes; r++) {
                    struct md_snap_route *rt = &s->route_configs[i].vhosts[v].routes[r];
                    if (rt->rate_limit && pass)
                        s->rate_limits[n++] = rt->rate_limit;
                    else if (rt->rate_limit)
                        n++;
                }
        if (pass == 0) {
            if (!(s->rate_limits = calloc(n ? n : 1, sizeof(*s->rate_limits))))
                return MD_ENOMEM;
            s->n_rate_limits = n;
            n = 0;
        }
    }
    for (size_t k = 0; k < s->n_rate_limits; k++)
        s->rate_limits[k]->idx = k;
    return 0;
}

int md_snapshot_index_retries(struct md_snapshot *s)
{
    size_t most = 0;
    for (size_t i = 0; i < s->n_route_configs; i++)
        for (size_t v = 0; v < s->route_configs[i].n_vhosts; v++)
            most += s->route_configs[i].vhosts[v].n_routes;
    if (!(s->retry_stats = calloc(most ? most : 1, sizeof(*s->retry_stats))))
        return MD_ENOMEM;
    for (size_t i = 0; i < s->n_route_configs; i++)
        for (size_t v = 0; v < s->route_configs[i].n_vhosts; v++)
            for (size_t r = 0; r < s->route_configs[i].vhosts[v].n_routes; r++) {
                struct md_snap_route *rt = &s->route_configs[i].vhosts[v].routes[r];
                if (!rt->retry)
                    continue;
                size_t k = 0;
                while (k < s->n_retry_stats && strcmp(s->retry_stats[k], rt->name) != 0)
                    k++;
                if (k == s->n_retry_stats)
                    s->retry_stats[s->n_retry_stats++] = rt->name;
                rt->retry->stat = k;
            }
    return 0;
}

void md_snapshot_dump_route_resilience(FILE *f, int indent, const struct md_snap_route *r)
{
    const struct md_snap_retry *x = r->retry;
    if (x) {
        fprintf(f, "%*sretry_policy {\n%*snum_retries: %u\n", indent, "", indent + 2, "",
                x->num_retries);
        for (int k = 0; md_validate_retry_on_str(k); k++)
            if (x->on & (1u << k))
                fprintf(f, "%*sretry_on: \"%s\"\n", indent + 2, "", md_validate_retry_on_str(k));
        for (int k = 1; k <= 16; k++)
            if (x->grpc_on & (1u << k))
                fprintf(f, "%*sgrpc_retry_on_code: %d\n", indent + 2, "", k);
        for (size_t k = 0; k < x->n_codes; k++)
            fprintf(f, "%*sretriable_status_codes: %u\n", indent + 2, "", x->codes[k]);
        fprintf(f,
                "%*sper_try_timeout_ms: %u\n%*sbase_interval_ms: %u\n%*smax_interval_ms: %u\n"
                "%*sbuffer_limit_bytes: %u\n%*s}\n",
                indent + 2, "", x->per_try_timeout_ms, indent + 2, "", x->base_interval_ms,
                indent + 2, "", x->max_interval_ms, indent + 2, "", x->buffer_limit, indent, "");
    }
    if (r->max_stream_duration_ms)
        fprintf(f, "%*smax_stream_duration_ms: %u\n", indent, "", r->max_stream_duration_ms);
    if (r->rate_limit)
        md_snapshot_dump_rate_limit(f, indent, "rate_limit", r->rate_limit);
    const struct md_snap_fault *fl = r->fault;
    if (fl)
        fprintf(f,
                "%*sfault { delay_ms: %u delay_percent: %u abort_http_status: %u "
                "abort_grpc_status: %u abort_percent: %u header_control: %s }\n",
                indent, "", fl->delay_ms, fl->delay_percent, fl->abort_http_status,
                fl->abort_grpc_status, fl->abort_percent, fl->header_control ? "true" : "false");
}

void md_snapshot_dump_rate_limit(FILE *f, int indent, const char *key,
                                 const struct md_snap_rate_limit *r)
{
    fprintf(f, "%*s%s { per_second: %u burst: %u max_keys: %u", indent, "", key, r->per_second,
            r->burst, r->max_keys);
    if (r->header)
        fprintf(f, " header: \"%s\"", r->header);
    if (r->by_spiffe_id)
        fprintf(f, " spiffe_id: true");
    fprintf(f, " }\n");
}

void md_snapshot_dump_cluster_resilience(FILE *f, const struct md_snap_cluster *c)
{
    const struct md_snap_breakers *b = &c->breakers;
    fprintf(f,
            "  circuit_breakers { max_connections: %u max_pending_requests: %u max_requests: %u "
            "max_retries: %u }\n  retry_budget { budget_percent: %u min_retry_concurrency: %u }\n",
            b->max_connections, b->max_pending, b->max_requests, b->max_retries,
            c->retry_budget.percent, c->retry_budget.min_concurrency);
    const struct md_snap_outlier *o = c->outlier;
    if (o)
        fprintf(f,
                "  outlier_detection { consecutive_errors: %u consecutive_grpc_failures: %u "
                "grpc_failure_bits: 0x%x success_rate_threshold_percent: %u "
                "success_rate_min_requests: %u interval_ms: %u base_ejection_time_ms: %u "
                "max_ejection_time_ms: %u max_ejection_percent: %u }\n",
                o->consecutive_errors, o->consecutive_grpc_failures, o->grpc_failures,
                o->success_rate_threshold, o->success_rate_min_requests, o->interval_ms,
                o->base_ejection_ms, o->max_ejection_ms, o->max_ejection_percent);
}
