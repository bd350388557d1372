/* SPDX-License-Identifier: Apache-2.0 */
#include "router/router.h"

#include "codec/grpc.h"
#include "core/err.h"
#include "core/log.h"
#include "filter/ratelimit.h"
#include "filter/reset_flood.h"
#include "http/local_reply.h"
#include "loop/worker.h"
#include "router/rbac.h"
#include "router/retry.h"
#include "router/route_match.h"
#include "upstream/breakers.h"
#include "upstream/outlier.h"
#include "upstream/upool.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A request an upstream refused before taking it (GOAWAY, RST_STREAM
 * REFUSED_STREAM, a kept-alive HTTP/1.1 connection closed under it) is sent
 * again at most this often. */
#define MAX_REFUSED_RETRIES 3

/* RFC 9113 §8.2.2: connection-specific fields must not be forwarded. */
static bool hop_by_hop(const struct md_hdr *h)
{
    if (md_hdr_name_is_connection_specific(h->name, h->name_len))
        return true;
    /* TE is allowed with the value "trailers" only (gRPC sends it). */
    return md_hdr_is(h, "te") && !(h->value_len == 8 && strncasecmp(h->value, "trailers", 8) == 0);
}

static bool in_names(const struct md_hdr *h, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (md_hdr_is(h, names[i]))
            return true;
    return false;
}

static bool in_adds(const struct md_hdr *h, const struct md_snap_header *add, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (h->name_len == add[i].name_len && memcmp(h->name, add[i].name, h->name_len) == 0)
            return true;
    return false;
}

static const char *hdr_value(const struct md_hdr *h, size_t n, const char *name, int *len)
{
    const struct md_hdr *x = md_hdrs_find(h, n, name);
    *len = x ? (int)(x->value_len > 1024 ? 1024 : x->value_len) : 1;
    return x ? x->value : "-";
}

/* One line per request, when it ends: the access log. */
static void access_log(const struct md_stream *s, uint32_t h2_error)
{
    const struct md_half *q = &s->req, *r = &s->resp;
    int ml, pl, al, sl, gl;
    const char *method = hdr_value(q->hdrs, q->n_hdrs, ":method", &ml);
    const char *path = hdr_value(q->hdrs, q->n_hdrs, ":path", &pl);
    const char *auth = hdr_value(q->hdrs, q->n_hdrs, ":authority", &al);
    const char *status = hdr_value(r->hdrs, r->n_hdrs, ":status", &sl);
    const char *grpc = hdr_value(r->trailers, r->n_trailers, "grpc-status", &gl);
    if (grpc[0] == '-')
        grpc = hdr_value(r->hdrs, r->n_hdrs, "grpc-status", &gl);
    struct md_log_budget *budget = &s->w->log_budget;
    if (!(s->local_reply || h2_error)) {
        md_log_budget_report(budget, "http_access");
    } else if (!md_log_budget_take(budget, "http_access", md_ratelimit_now())) {
        md_stats_add(md_stats_l(s->w->stats, s->listener->idx, MD_LSTAT_ACCESS_LOG_DROPPED), 1);
        return;
    }
    char m[32], a[256], pa[512];
    md_log(MD_LOG_INFO, "http_access",
           "stream=%d.%llu listener=%s method=%s authority=\"%s\" path=\"%s\" route=%s "
           "cluster=%s status=%.*s grpc_status=%.*s req_bytes=%llu resp_bytes=%llu "
           "duration_ms=%.1f local_reply=%d reset=%s peer_id=%s rbac_denied=%s attempts=%u",
           s->w->id, (unsigned long long)s->id, s->listener->name,
           md_log_escape(m, sizeof(m), method, (size_t)ml),
           md_log_escape(a, sizeof(a), auth, (size_t)al),
           md_log_escape(pa, sizeof(pa), path, (size_t)pl), s->route ? s->route->name : "-",
           s->route ? s->w->snap->clusters[s->cluster].name : "-", s->resp_started ? sl : 1,
           s->resp_started ? status : "-", gl, grpc, (unsigned long long)q->body_bytes,
           (unsigned long long)r->body_bytes, (ev_now(s->w->loop) - s->started) * 1000.0,
           s->local_reply, h2_error ? nghttp2_http2_strerror(h2_error) : "-",
           s->peer_id ? s->peer_id : "-", s->rbac_denied ? s->rbac_denied : "-", s->attempts);
}

/* Resets the downstream side; its codec will not report the end, so the
 * access log line is written here. */
static void release_retry_slot(struct md_stream *s);

static void reset_downstream(struct md_stream *s, uint32_t h2_error)
{
    release_retry_slot(s);
    if (s->ds && md_log_enabled(MD_LOG_INFO))
        access_log(s, h2_error);
    md_stream_reset_ds(s, h2_error);
}

/* Ends |s| on both sides (upstream cancelled, downstream reset with
 * |h2_error|) and frees it: neither codec holds it any more. |s| is gone on
 * return. */
static void abandon(struct md_stream *s, uint32_t h2_error)
{
    md_stream_reset_us(s, NGHTTP2_CANCEL);
    reset_downstream(s, h2_error);
    md_stream_free_if_orphan(s);
}

static void arm_timer(struct md_stream *s);

/* |retry_after|: a retry-after value the answer carries; NULL: none. */
static void reply_retry_after(struct md_stream *s, int http_status, int grpc_status,
                              const char *detail, const char *retry_after)
{
    md_stream_reset_us(s, NGHTTP2_CANCEL);
    ev_timer_stop(s->w->loop, &s->timer);
    ev_timer_stop(s->w->loop, &s->retry_timer);
    s->local_reply = true;
    md_stream_drop_request_body(s);
    if (md_local_reply_build(s, http_status, grpc_status, detail) < 0 ||
        (retry_after && md_local_reply_add_header(s, "retry-after", retry_after) < 0)) {
        abandon(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s->resp_started = true;
    /* Answered, but the client may never end its side: the stream idle
     * timeout still bounds it (on_timer then resets it). */
    s->deadline = s->hard_deadline = 0;
    arm_timer(s);
    md_stream_notify_headers(s, true);
}

static void reply(struct md_stream *s, int http_status, int grpc_status, const char *detail)
{
    reply_retry_after(s, http_status, grpc_status, detail, NULL);
}

void md_router_local_reply(struct md_stream *s, enum md_reply_kind kind, const char *detail)
{
    static const struct {
        int http, grpc;
    } map[] = {
        [MD_REPLY_NO_ROUTE] = {404, MD_GRPC_UNIMPLEMENTED},
        [MD_REPLY_UNAVAILABLE] = {503, MD_GRPC_UNAVAILABLE},
        [MD_REPLY_TIMEOUT] = {504, MD_GRPC_DEADLINE_EXCEEDED},
        [MD_REPLY_HEADERS_TOO_LARGE] = {431, MD_GRPC_RESOURCE_EXHAUSTED},
        [MD_REPLY_BAD_REQUEST] = {400, MD_GRPC_INTERNAL},
    };
    if (s->resp_started) {
        abandon(s, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    reply(s, map[kind].http, map[kind].grpc, detail);
}

/* The earliest of the stream's idle time (from |active|), its deadline and
 * its max duration; 0: none. */
static ev_tstamp next_timeout(const struct md_stream *s, ev_tstamp active)
{
    double idle = s->listener->http.stream_idle_timeout_ms / 1000.0;
    ev_tstamp next = idle > 0 ? active + idle : 0;
    if (s->deadline && (!next || s->deadline < next))
        next = s->deadline;
    if (s->hard_deadline && (!next || s->hard_deadline < next))
        next = s->hard_deadline;
    return next;
}

/* Deadline or stream idle time reached. */
static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_stream *s = MD_CONTAINER_OF(t, struct md_stream, timer);
    ev_tstamp now = ev_now(loop);
    double idle = s->listener->http.stream_idle_timeout_ms / 1000.0;
    bool deadline = s->deadline && now >= s->deadline - 0.0005;
    bool longest = s->hard_deadline && now >= s->hard_deadline - 0.0005;
    bool idled = idle > 0 && now >= s->last_active + idle - 0.0005;
    if (!deadline && !idled && !longest) {
        ev_tstamp next = next_timeout(s, s->last_active);
        t->repeat = next - now > 0.001 ? next - now : 0.001;
        ev_timer_again(loop, t);
        return;
    }
    ev_timer_stop(loop, t);
    ev_timer_stop(loop, &s->retry_timer);
    const char *why = deadline  ? "deadline exceeded"
                      : longest ? "max stream duration"
                                : "stream idle timeout";
    md_stats_add(md_stats_l(s->w->stats, s->listener->idx, MD_LSTAT_RQ_TIMEOUT), 1);
    MD_LOG(MD_LOG_INFO, "http_timeout", "stream=%d.%llu listener=%s route=%s reason=\"%s\"",
           s->w->id, (unsigned long long)s->id, s->listener->name, s->route ? s->route->name : "-",
           why);
    if (!s->resp_started) {
        reply(s, 504, MD_GRPC_DEADLINE_EXCEEDED, why);
    } else if (s->grpc && !s->resp.end) {
        /* Mid-stream: end it with a status, as the server would have. */
        md_stream_reset_us(s, NGHTTP2_CANCEL);
        md_bq_clear(&s->resp.body);
        if (md_local_reply_trailers(s, MD_GRPC_DEADLINE_EXCEEDED, why) < 0) {
            abandon(s, NGHTTP2_INTERNAL_ERROR);
            return;
        }
        md_stream_end(s, &s->resp);
    } else {
        abandon(s, NGHTTP2_CANCEL);
    }
}

static void arm_timer(struct md_stream *s)
{
    ev_tstamp now = ev_now(s->w->loop);
    ev_tstamp next = next_timeout(s, now);
    if (!next)
        return;
    ev_init(&s->timer, on_timer);
    s->timer.repeat = next - now > 0.001 ? next - now : 0.001;
    ev_timer_again(s->w->loop, &s->timer);
}

/* Writes the |n| low nibbles of |v| as hex, most significant first. */
static char *put_hex(char *p, uint64_t v, int n)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = n - 1; i >= 0; i--)
        p[i] = hex[v & 15], v >>= 4;
    return p + n;
}

/* A UUID version 4, variant 1 (36 bytes and a NUL): once per request, so
 * without printf. */
static void format_request_id(struct md_worker *w, char *out)
{
    uint64_t a = md_worker_rand(w), b = md_worker_rand(w);
    a = (a & ~0xF000ULL) | 0x4000ULL;
    b = (b & ~(3ULL << 62)) | (2ULL << 62);
    char *p = put_hex(out, a >> 32, 8);
    *p++ = '-';
    p = put_hex(p, a >> 16, 4);
    *p++ = '-';
    p = put_hex(p, a, 4);
    *p++ = '-';
    p = put_hex(p, b >> 48, 4);
    *p++ = '-';
    p = put_hex(p, b, 12);
    *p = 0;
}

/* Builds s->us_hdrs: the request as the upstream sees it. Returns 0 or MD_E*. */
static int build_upstream_headers(struct md_stream *s)
{
    const struct md_snap_route *r = s->route;
    const struct md_half *q = &s->req;
    const struct md_snap_http *http = &s->listener->http;
    size_t cap = q->n_hdrs + r->n_req_add + 5;
    struct md_hdr *out = md_arena_alloc(&s->arena, cap * sizeof(*out));
    if (!out)
        return MD_ENOMEM;
    size_t n = 0;
    bool have_xff = false, have_rid = false;
    for (size_t i = 0; i < q->n_hdrs; i++) {
        struct md_hdr h = q->hdrs[i];
        if (h.name_len && h.name[0] == ':') {
            if (md_hdr_is(&h, ":path") && r->prefix_rewrite && r->kind == MD_PATH_MATCH_PREFIX &&
                h.value_len >= r->path_len) {
                size_t len = r->prefix_rewrite_len + h.value_len - r->path_len;
                char *p = md_arena_alloc(&s->arena, len + 1);
                if (!p)
                    return MD_ENOMEM;
                memcpy(p, r->prefix_rewrite, r->prefix_rewrite_len);
                memcpy(p + r->prefix_rewrite_len, h.value + r->path_len, h.value_len - r->path_len);
                h.value = p;
                h.value_len = len;
            }
            out[n++] = h;
            continue;
        }
        if (hop_by_hop(&h) || in_names(&h, r->req_remove, r->n_req_remove) ||
            in_adds(&h, r->req_add, r->n_req_add))
            continue;
        if (md_hdr_is(&h, "grpc-timeout") && s->deadline)
            continue; /* replaced by the remaining budget below */
        if (h.name_len == http->xfcc_header_len &&
            strncasecmp(h.name, http->xfcc_header, h.name_len) == 0)
            continue; /* only meshd speaks for the client's certificate */
        if (md_hdr_is(&h, "x-forwarded-for") && !have_xff && s->peer_ip && s->peer_ip[0]) {
            have_xff = true;
            size_t ip = strlen(s->peer_ip);
            char *v = md_arena_alloc(&s->arena, h.value_len + ip + 2);
            if (!v)
                return MD_ENOMEM;
            memcpy(v, h.value, h.value_len);
            memcpy(v + h.value_len, ", ", 2);
            memcpy(v + h.value_len + 2, s->peer_ip, ip);
            h.value_len += ip + 2;
            h.value = v;
        }
        have_rid |= md_hdr_is(&h, "x-request-id");
        out[n++] = h;
    }
    for (size_t i = 0; i < r->n_req_add; i++)
        out[n++] = (struct md_hdr){r->req_add[i].name, r->req_add[i].name_len, r->req_add[i].value,
                                   r->req_add[i].value_len};
    if (!have_xff && s->peer_ip && s->peer_ip[0])
        out[n++] = (struct md_hdr){"x-forwarded-for", 15, s->peer_ip, strlen(s->peer_ip)};
    if (http->xfcc_set && s->peer_id) {
        /* Envoy's x-forwarded-client-cert elements: who verified (By), whom (URI). */
        size_t cap_v = strlen(s->peer_id) + (s->local_id ? strlen(s->local_id) : 0) + 10;
        char *v = md_arena_alloc(&s->arena, cap_v);
        if (!v)
            return MD_ENOMEM;
        int len = s->local_id ? snprintf(v, cap_v, "By=%s;URI=%s", s->local_id, s->peer_id)
                              : snprintf(v, cap_v, "URI=%s", s->peer_id);
        out[n++] = (struct md_hdr){http->xfcc_header, http->xfcc_header_len, v, (size_t)len};
    }
    if (!have_rid) {
        char *id = md_arena_alloc(&s->arena, 37);
        if (!id)
            return MD_ENOMEM;
        format_request_id(s->w, id);
        out[n++] = (struct md_hdr){"x-request-id", 12, id, 36};
    }
    if (s->deadline && s->grpc) {
        char *v = md_arena_alloc(&s->arena, 12);
        if (!v)
            return MD_ENOMEM;
        double left = s->deadline - ev_now(s->w->loop);
        size_t len = md_grpc_timeout_format(left > 0 ? left : 1e-6, v);
        out[n++] = (struct md_hdr){"grpc-timeout", 12, v, len};
    }
    if (r->retry) /* last: rewritten for every attempt (send_upstream) */
        out[n++] = (struct md_hdr){"x-meshd-attempt-count", 21, "1", 1};
    s->us_hdrs = out;
    s->n_us_hdrs = n;
    return 0;
}

/* Narrows s->upgrade (the offered list) to the first token the route
 * allows. Returns false when it allows none. */
static bool pick_upgrade(struct md_stream *s)
{
    const struct md_snap_route *r = s->route;
    const char *p = s->upgrade, *end = s->upgrade + s->upgrade_len;
    while (p < end) {
        const char *e = memchr(p, ',', (size_t)(end - p));
        size_t n = (size_t)((e ? e : end) - p);
        for (size_t i = 0; i < r->n_upgrades; i++)
            if (strlen(r->upgrades[i]) == n && memcmp(r->upgrades[i], p, n) == 0) {
                s->upgrade = p;
                s->upgrade_len = n;
                return true;
            }
        p += n + 1;
    }
    return false;
}

/* Answers an upgrade the route or its cluster cannot take. */
static bool upgrade_allowed(struct md_stream *s)
{
    const struct md_snap_cluster *c = &s->w->snap->clusters[s->cluster];
    const char *why = NULL;
    int status = 403, grpc = MD_GRPC_PERMISSION_DENIED;
    char detail[160];
    if (!pick_upgrade(s)) {
        snprintf(detail, sizeof(detail), "upgrade to \"%.*s\" is not allowed on route %s",
                 (int)(s->upgrade_len > 40 ? 40 : s->upgrade_len), s->upgrade, s->route->name);
        why = "not_allowed";
    } else if (c->protocol != MD_CLUSTER_HTTP1) {
        snprintf(detail, sizeof(detail), "cluster %s speaks HTTP/2; upgrades need an HTTP1 cluster",
                 c->name);
        why = "cluster_http2";
        status = 501;
        grpc = MD_GRPC_UNIMPLEMENTED;
    } else {
        return true;
    }
    md_stats_add(md_stats_l(s->w->stats, s->listener->idx, MD_LSTAT_UPGRADE_REFUSED), 1);
    char u[64];
    MD_LOG(MD_LOG_INFO, "http_upgrade_refused", "stream=%d.%llu route=%s upgrade=\"%s\" reason=%s",
           s->w->id, (unsigned long long)s->id, s->route->name,
           md_log_escape(u, sizeof(u), s->upgrade, s->upgrade_len), why);
    reply(s, status, grpc, detail);
    return false;
}

/* Decides |rbac| for |s| and counts it; a refusal is answered 403 /
 * PERMISSION_DENIED here. Returns false when refused. */
static bool rbac_allows(struct md_stream *s, const struct md_snap_rbac *rbac)
{
    struct md_rbac_decision d;
    bool ok = md_rbac_check(rbac, s->req.hdrs, s->req.n_hdrs, s->grpc, s->peer_id, &d);
    md_stats_add(md_stats_r(s->w->stats, d.stat, ok ? MD_RSTAT_ALLOWED : MD_RSTAT_DENIED), 1);
    if (ok)
        return true;
    const char *scope = rbac->scope == MD_RBAC_SCOPE_LISTENER ? "listener" : "route";
    s->rbac_denied = scope;
    char peer[256] = "-", esc[240];
    if (s->peer_id)
        snprintf(peer, sizeof(peer), "\"%s\"",
                 md_log_escape(esc, sizeof(esc), s->peer_id, strlen(s->peer_id)));
    MD_LOG(MD_LOG_INFO, "rbac_denied",
           "stream=%d.%llu listener=%s route=%s scope=%s policy=%s peer=%s", s->w->id,
           (unsigned long long)s->id, s->listener->name, s->route ? s->route->name : "-", scope,
           d.policy ? d.policy->name : "-", peer);
    /* the detail says no more: which rule refused is for the operator's log */
    reply(s, 403, MD_GRPC_PERMISSION_DENIED, "RBAC: access denied");
    return false;
}

/* Takes a token of the route's limit (shared by all workers) for |s|; over
 * it, answers 429 / RESOURCE_EXHAUSTED with retry-after. Returns false when
 * refused. */
static bool rate_allows(struct md_stream *s, const struct md_snap_rate_limit *q)
{
    size_t len;
    const char *key = md_ratelimit_key(q, s->req.hdrs, s->req.n_hdrs, s->peer_id, &len);
    uint64_t wait = md_ratelimit_take(s->w->ratelimits[q->idx], key, len, md_ratelimit_now());
    md_stats_add(md_stats_q(s->w->stats, q->idx, wait ? MD_QSTAT_LIMITED : MD_QSTAT_ALLOWED), 1);
    if (!wait)
        return true;
    /* RFC 9110 §10.2.3: whole seconds; rounded up so a retry finds a token */
    char secs[24];
    snprintf(secs, sizeof(secs), "%llu", (unsigned long long)((wait + 999999999u) / 1000000000u));
    MD_LOG(MD_LOG_DEBUG, "rate_limited",
           "stream=%d.%llu listener=%s route=%s keyed=%d next_token_ms=%.1f", s->w->id,
           (unsigned long long)s->id, s->listener->name, s->route->name, key != NULL,
           (double)wait / 1e6);
    reply_retry_after(s, 429, MD_GRPC_RESOURCE_EXHAUSTED, "rate limited", secs);
    return false;
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *t, int revents);

/* grpc-message / body of a circuit breaker's refusal: which limit. */
static const char *overflow_detail(const struct md_stream *s)
{
    static const char *const why[] = {
        "upstream overflow: max_connections circuit breaker open",
        "upstream overflow: max_pending_requests circuit breaker open",
        "upstream overflow: max_requests circuit breaker open",
    };
    for (size_t k = 0; k < sizeof(why) / sizeof(why[0]); k++)
        if (s->overflowed && strcmp(s->overflowed, md_breakers_name((enum md_breaker)k)) == 0)
            return why[k];
    return "upstream overflow: circuit breaker open";
}

/* Outlier detection learns how this attempt went, once, for its endpoint:
 * at the response head, or for a gRPC call whose status is still to come,
 * at its end (the trailers). |why| < 0: the head. Connect failures are
 * reported per endpoint tried (connect.c); refusals (GOAWAY) are not the
 * endpoint failing. */
static void note_outcome(struct md_stream *s, int why)
{
    const struct md_snap_cluster *cl = &s->w->snap->clusters[s->cluster];
    const struct md_half *h = &s->resp;
    if (!cl->outlier || s->outlier_noted || !s->us_ep)
        return;
    enum md_outlier_result r;
    if (why == MD_US_CLOSE_RESET || why == MD_US_CLOSE_CONN_LOST) {
        r = MD_OUTLIER_ERROR;
    } else if ((why < 0 || why == MD_US_CLOSE_DONE) && h->headers_done) {
        const struct md_hdr *gs = md_hdrs_find(h->trailers, h->n_trailers, "grpc-status");
        if (!gs)
            gs = md_hdrs_find(h->hdrs, h->n_hdrs, "grpc-status");
        const struct md_hdr *st = md_hdrs_find(h->hdrs, h->n_hdrs, ":status");
        int status = st ? (int)md_hdr_decimal(st->value, st->value_len) : 0;
        if (why < 0 && s->grpc && !gs && status == 200 && !h->end)
            return; /* the status comes with the trailers */
        r = md_outlier_classify(cl->outlier, status,
                                gs ? (int)md_hdr_decimal(gs->value, gs->value_len) : -1);
    } else {
        return;
    }
    s->outlier_noted = true;
    md_outlier_report(s->w, cl, s->us_ep, r);
}

static void wait_then_send(struct md_stream *s, double delay)
{
    s->send_on_timer = true;
    ev_timer_set(&s->retry_timer, delay, 0.);
    ev_timer_start(s->w->loop, &s->retry_timer);
}

/* Attempt |s->attempts| + 1: to the route's cluster, or when it has no
 * endpoint to the route's fallback cluster. */
static void send_upstream(struct md_stream *s)
{
    const struct md_snap_route *r = s->route;
    s->attempts++;
    if (r->retry) {
        char *v = md_arena_alloc(&s->arena, 12);
        if (v) {
            int len = snprintf(v, 12, "%u", s->attempts);
            s->us_hdrs[s->n_us_hdrs - 1].value = v;
            s->us_hdrs[s->n_us_hdrs - 1].value_len = (size_t)len;
        }
    }
    int err = md_upool_acquire(s->w, s);
    if (err == MD_ENOUPSTREAM && r->has_fallback && s->cluster != r->fallback) {
        MD_LOG(MD_LOG_INFO, "http_fallback", "stream=%d.%llu route=%s cluster=%s fallback=%s",
               s->w->id, (unsigned long long)s->id, r->name, s->w->snap->clusters[s->cluster].name,
               s->w->snap->clusters[r->fallback].name);
        md_stats_add(md_stats_c(s->w->stats, s->cluster, MD_CSTAT_RQ_FALLBACK), 1);
        s->cluster = r->fallback;
        err = md_upool_acquire(s->w, s);
    }
    if (err < 0) {
        md_router_local_reply(s, MD_REPLY_UNAVAILABLE,
                              err == MD_ENOUPSTREAM ? "no endpoint to send it to"
                              : err == MD_EOVERFLOW ? overflow_detail(s)
                                                    : "out of memory");
        return;
    }
    if (r->retry && r->retry->per_try_timeout_ms) {
        s->send_on_timer = false;
        ev_timer_set(&s->retry_timer, r->retry->per_try_timeout_ms / 1000.0, 0.);
        ev_timer_start(s->w->loop, &s->retry_timer);
    }
}

/* The failed attempt is tried again if the route's policy allows it and
 * nothing of it reached the client: the upstream side is let go, the
 * request queued again whole, and the next attempt sent after the backoff
 * (or the server's pushback). Returns false when it is not (the caller
 * answers). */
/* A retry in progress holds one of its cluster's max_retries slots, from
 * the decision until that attempt ends (however it ends). */
static void release_retry_slot(struct md_stream *s)
{
    if (!s->retry_slot)
        return;
    s->retry_slot = false;
    md_breakers_retry_end(s->w, s->cluster);
}

/* The cluster's retry budget (retries under way at most budget_percent of
 * the requests under way, at least min_retry_concurrency) and its
 * max_retries breaker. A retry refused is counted per route. */
static bool retry_admitted(struct md_stream *s)
{
    struct md_worker *w = s->w;
    const struct md_snap_retry_budget *rb = &w->snap->clusters[s->cluster].retry_budget;
    struct md_breakers *b = md_breakers_of(w, s->cluster);
    uint64_t budget =
        b ? (uint64_t)md_breakers_open(b, MD_BREAKER_REQUESTS) * rb->percent / 100 : 0;
    if (budget < rb->min_concurrency)
        budget = rb->min_concurrency;
    bool ok = !b || md_breakers_open(b, MD_BREAKER_RETRIES) < budget;
    if (ok && md_breakers_retry_begin(w, s->cluster))
        return s->retry_slot = true;
    md_stats_add(md_stats_t(w->stats, s->route->retry->stat, MD_TSTAT_RETRY_OVERFLOW), 1);
    MD_LOG(MD_LOG_INFO, "http_retry_overflow", "stream=%d.%llu route=%s cluster=%s reason=%s",
           w->id, (unsigned long long)s->id, s->route->name, w->snap->clusters[s->cluster].name,
           ok ? "max_retries" : "retry_budget");
    return false;
}

static bool try_again(struct md_stream *s, const char *why, int64_t pushback_ms)
{
    const struct md_snap_retry *rp = s->route->retry;
    struct md_worker *w = s->w;
    if (!rp || s->attempts > rp->num_retries || s->resp_started || !s->ds || s->keep_lost ||
        s->upgraded || s->local_reply || pushback_ms == -2)
        return false;
    double wait = pushback_ms >= 0 ? pushback_ms / 1000.0
                                   : md_retry_backoff(rp, s->attempts, md_worker_rand(w));
    if (s->deadline && ev_now(w->loop) + wait >= s->deadline)
        return false;      /* no time left for another attempt */
    release_retry_slot(s); /* the attempt that failed was a retry: it is over */
    if (!retry_admitted(s))
        return false;
    if (!s->tried)
        s->tried = md_arena_alloc(&s->arena, (rp->num_retries + 1) * sizeof(*s->tried));
    if (s->tried && s->us_ep && s->n_tried <= rp->num_retries)
        s->tried[s->n_tried++] = md_ep_key(s->us_ep);
    ev_timer_stop(w->loop, &s->retry_timer);
    md_stream_reset_us(s, NGHTTP2_CANCEL);
    if (!md_stream_restart(s))
        return false;
    md_stats_add(md_stats_c(w->stats, s->cluster, MD_CSTAT_RQ_RETRY), 1);
    md_stats_add(md_stats_t(w->stats, rp->stat, MD_TSTAT_RETRY), 1);
    MD_LOG(MD_LOG_INFO, "http_retry",
           "stream=%d.%llu route=%s cluster=%s attempt=%u reason=\"%s\" backoff_ms=%.1f", w->id,
           (unsigned long long)s->id, s->route->name, w->snap->clusters[s->cluster].name,
           s->attempts + 1, why, wait * 1000.0);
    wait_then_send(s, wait);
    return true;
}

static void on_retry_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_stream *s = MD_CONTAINER_OF(t, struct md_stream, retry_timer);
    if (s->send_on_timer) {
        s->send_on_timer = false;
        send_upstream(s);
        return;
    }
    /* The attempt's own deadline: another attempt, or the answer. */
    if (s->resp_started || try_again(s, "per-try timeout", -1))
        return;
    md_stats_add(md_stats_l(s->w->stats, s->listener->idx, MD_LSTAT_RQ_TIMEOUT), 1);
    md_router_local_reply(s, MD_REPLY_TIMEOUT, "per-try timeout");
}

/* Fault injection: an abort is answered here (returns true); a delay is
 * left in |*delay| (seconds). The percentages draw once per request; a
 * request may ask for a fault itself when the route allows it. */
static bool inject_fault(struct md_stream *s, double *delay)
{
    const struct md_snap_fault *f = s->route->fault;
    struct md_worker *w = s->w;
    long http = f->abort_http_status, grpc = f->abort_grpc_status;
    long delay_ms = f->delay_ms;
    bool abort = f->abort_percent && md_worker_rand(w) % 100 < f->abort_percent;
    bool late = f->delay_percent && md_worker_rand(w) % 100 < f->delay_percent;
    if (f->header_control) {
        const struct md_half *q = &s->req;
        long hd = md_hdrs_decimal(q->hdrs, q->n_hdrs, "x-meshd-fault-delay-ms");
        long hh = md_hdrs_decimal(q->hdrs, q->n_hdrs, "x-meshd-fault-abort-http-status");
        long hg = md_hdrs_decimal(q->hdrs, q->n_hdrs, "x-meshd-fault-abort-grpc-status");
        if (hd >= 0 && hd <= 3600000)
            late = true, delay_ms = hd;
        if ((hh >= 200 && hh <= 599) || (hg >= 1 && hg <= 16)) {
            abort = true;
            http = hh >= 200 && hh <= 599 ? hh : 0;
            grpc = hg >= 1 && hg <= 16 ? hg : 0;
        }
    }
    if (late)
        *delay = delay_ms / 1000.0;
    if (!abort)
        return false;
    md_stats_add(md_stats_c(w->stats, s->cluster, MD_CSTAT_RQ_FAULT_ABORT), 1);
    MD_LOG(MD_LOG_INFO, "http_fault_abort",
           "stream=%d.%llu route=%s http_status=%ld grpc_status=%ld", w->id,
           (unsigned long long)s->id, s->route->name, http, grpc);
    /* gRPC callers get the gRPC status when one is set, others the HTTP one */
    reply(s, http ? (int)http : 503, grpc ? (int)grpc : MD_GRPC_UNAVAILABLE, "fault injected");
    return true;
}

void md_router_on_request(struct md_stream *s)
{
    const struct md_snapshot *snap = s->w->snap;
    const struct md_snap_listener *l = s->listener;
    const struct md_half *q = &s->req;
    const struct md_hdr *path = md_hdrs_find(q->hdrs, q->n_hdrs, ":path");
    const struct md_hdr *auth = md_hdrs_find(q->hdrs, q->n_hdrs, ":authority");
    const struct md_hdr *ct = md_hdrs_find(q->hdrs, q->n_hdrs, "content-type");
    if (!auth)
        auth = md_hdrs_find(q->hdrs, q->n_hdrs, "host");
    s->grpc = ct && md_grpc_is_content_type(ct->value, ct->value_len);
    if (!md_reset_flood_calm(&s->w->reset_flood) &&
        !md_reset_flood_admit_slow(&s->w->reset_flood, l->idx, s->peer_ip, md_ratelimit_now())) {
        md_stats_add(md_stats_l(s->w->stats, l->idx, MD_LSTAT_RQ_RESET_FLOOD), 1);
        abandon(s, NGHTTP2_REFUSED_STREAM); /* a client may send it again later */
        return;
    }
    if (!path) {
        md_router_local_reply(s, MD_REPLY_BAD_REQUEST, "request without :path");
        return;
    }
    size_t first = 0; /* pseudo-headers come first (RFC 9113 §8.3) */
    while (first < q->n_hdrs && q->hdrs[first].name_len && q->hdrs[first].name[0] == ':')
        first++;
    struct md_route_input in = {
        .authority = auth ? auth->value : NULL,
        .authority_len = auth ? auth->value_len : 0,
        .path = path->value,
        .path_len = path->value_len,
        .grpc = s->grpc,
        .hdrs = q->hdrs + first,
        .n_hdrs = q->n_hdrs - first,
        .sni = s->sni,
    };
    if (l->http.rbac && !rbac_allows(s, l->http.rbac))
        return;
    const struct md_snap_route_config *rc = &snap->route_configs[l->http.route_config];
    const struct md_snap_vhost *vh = md_route_match_vhost(rc, in.authority, in.authority_len);
    s->route = vh ? md_route_match_route(vh, &in) : NULL;
    if (!s->route) {
        md_stats_add(md_stats_l(s->w->stats, l->idx, MD_LSTAT_RQ_NO_ROUTE), 1);
        char a[256], p[512];
        MD_LOG(MD_LOG_INFO, "http_no_route",
               "stream=%d.%llu listener=%s authority=\"%s\" path=\"%s\"", s->w->id,
               (unsigned long long)s->id, l->name,
               md_log_escape(a, sizeof(a), in.authority ? in.authority : "", in.authority_len),
               md_log_escape(p, sizeof(p), path->value, path->value_len));
        md_router_local_reply(s, MD_REPLY_NO_ROUTE,
                              vh ? "no route matched" : "no virtual host matched");
        return;
    }
    s->cluster = md_route_match_pick_cluster(s->route, (uint32_t)md_worker_rand(s->w));
    if (s->route->rbac && !rbac_allows(s, s->route->rbac))
        return;
    if (s->route->rate_limit && s->w->ratelimits && !rate_allows(s, s->route->rate_limit))
        return;
    if (s->upgrade && !upgrade_allowed(s))
        return;

    double timeout = s->route->timeout_ms / 1000.0, grpc_timeout;
    const struct md_hdr *gt = md_hdrs_find(q->hdrs, q->n_hdrs, "grpc-timeout");
    if (gt && md_grpc_timeout_parse(gt->value, gt->value_len, &grpc_timeout) &&
        (timeout == 0 || grpc_timeout < timeout))
        timeout = grpc_timeout;
    if (timeout > 0)
        s->deadline = ev_now(s->w->loop) + timeout;

    if (s->route->max_stream_duration_ms)
        s->hard_deadline = ev_now(s->w->loop) + s->route->max_stream_duration_ms / 1000.0;
    arm_timer(s);
    if (build_upstream_headers(s) < 0) {
        md_router_local_reply(s, MD_REPLY_UNAVAILABLE, "out of memory");
        return;
    }
    if (s->route->retry && !s->upgrade)
        s->keep_limit = s->route->retry->buffer_limit;
    ev_init(&s->retry_timer, on_retry_timer);
    MD_LOG(MD_LOG_DEBUG, "http_route", "stream=%d.%llu route=%s cluster=%s", s->w->id,
           (unsigned long long)s->id, s->route->name, snap->clusters[s->cluster].name);
    double delay = 0;
    if (s->route->fault && inject_fault(s, &delay))
        return;
    if (delay > 0) {
        wait_then_send(s, delay);
        return;
    }
    send_upstream(s);
}

void md_router_on_response(struct md_stream *s)
{
    const struct md_snap_route *r = s->route;
    struct md_half *h = &s->resp;
    note_outcome(s, -1);
    bool failed = r->retry && md_retry_on_response(r->retry, h, s->grpc);
    if (failed) {
        const struct md_hdr *st = md_hdrs_find(h->hdrs, h->n_hdrs, ":status");
        const struct md_hdr *gs = md_hdrs_find(h->hdrs, h->n_hdrs, "grpc-status");
        char why[48];
        snprintf(why, sizeof(why), "%s %.*s", gs ? "grpc-status" : "status",
                 (int)(gs   ? gs->value_len
                       : st ? st->value_len
                            : 0),
                 gs   ? gs->value
                 : st ? st->value
                      : "");
        if (try_again(s, why, md_retry_pushback_ms(h)))
            return;
    }
    ev_timer_stop(s->w->loop, &s->retry_timer); /* answered: the per-try timeout is done */
    if (s->attempts > 1 && !failed) {           /* a retry that answered what the policy accepts */
        md_stats_add(md_stats_c(s->w->stats, s->cluster, MD_CSTAT_RQ_RETRY_SUCCESS), 1);
        md_stats_add(md_stats_t(s->w->stats, r->retry->stat, MD_TSTAT_RETRY_SUCCESS), 1);
    }
    size_t n = 0;
    struct md_hdr *out = md_arena_alloc(&s->arena, (h->n_hdrs + r->n_resp_add + 1) * sizeof(*out));
    if (!out) {
        md_stream_reset_us(s, NGHTTP2_CANCEL);
        md_router_local_reply(s, MD_REPLY_UNAVAILABLE, "out of memory");
        return;
    }
    for (size_t i = 0; i < h->n_hdrs; i++) {
        const struct md_hdr *x = &h->hdrs[i];
        if (hop_by_hop(x) || in_names(x, r->resp_remove, r->n_resp_remove) ||
            in_adds(x, r->resp_add, r->n_resp_add))
            continue;
        out[n++] = *x;
    }
    for (size_t i = 0; i < r->n_resp_add; i++)
        out[n++] = (struct md_hdr){r->resp_add[i].name, r->resp_add[i].name_len,
                                   r->resp_add[i].value, r->resp_add[i].value_len};
    h->hdrs = out;
    h->n_hdrs = h->cap_hdrs = n;
    const struct md_hdr *st = md_hdrs_find(out, n, ":status");
    if (s->upgrade && st && st->value_len == 3 && memcmp(st->value, "101", 3) == 0) {
        /* A tunnel from now on: it lasts as long as both ends want, bounded
         * by the stream idle timeout only. */
        s->upgraded = true;
        s->deadline = 0;
        md_stats_add(md_stats_l(s->w->stats, s->listener->idx, MD_LSTAT_UPGRADE), 1);
    }
    s->resp_started = true;
    md_stream_notify_headers(s, true);
}

void md_router_on_upstream_closed(struct md_stream *s, enum md_us_close why, uint32_t h2_error)
{
    struct md_worker *w = s->w;
    struct md_stats *st = w->stats;
    s->us = NULL;
    release_retry_slot(s);
    const char *cl = w->snap->clusters[s->cluster].name;
    note_outcome(s, (int)why);
    if (s->route && s->route->retry && !s->resp_started &&
        (why == MD_US_CLOSE_RESET || why == MD_US_CLOSE_CONN_LOST ||
         why == MD_US_CLOSE_CONNECT_FAILED) &&
        md_retry_on_end(s->route->retry, why == MD_US_CLOSE_CONNECT_FAILED
                                             ? MD_RETRY_END_CONNECT_FAILED
                                             : MD_RETRY_END_RESET) &&
        try_again(s,
                  why == MD_US_CLOSE_CONNECT_FAILED ? "connect failure"
                  : why == MD_US_CLOSE_RESET        ? "upstream reset"
                                                    : "connection lost",
                  -1)) {
        md_stream_detach_us(s);
        return;
    }
    if (why == MD_US_CLOSE_REFUSED && s->req.taken == 0 && s->ds && !s->resp_started &&
        s->connect_attempts++ < MAX_REFUSED_RETRIES) {
        /* Refused before any of it was processed (RFC 9113 §8.7): safe to send again. */
        md_stats_add(md_stats_c(st, s->cluster, MD_CSTAT_RQ_REFUSED_RETRY), 1);
        if (md_upool_acquire(w, s) == 0)
            return;
    }
    switch (why) {
    case MD_US_CLOSE_DONE: break;
    case MD_US_CLOSE_RESET:
        md_stats_add(md_stats_c(st, s->cluster, MD_CSTAT_RQ_RESET), 1);
        MD_LOG(MD_LOG_INFO, "upstream_reset", "stream=%d.%llu cluster=%s error=%s", w->id,
               (unsigned long long)s->id, cl, nghttp2_http2_strerror(h2_error));
        /* Pass the reset on with its code, after what arrived before it: the
         * client sees what a direct call would. */
        if (s->ds && s->resp_started && s->resp.body.len > 0) {
            s->reset_after_body = h2_error ? h2_error : NGHTTP2_INTERNAL_ERROR;
            md_stream_notify_data(s, true);
        } else {
            reset_downstream(s, h2_error ? h2_error : NGHTTP2_INTERNAL_ERROR);
        }
        break;
    case MD_US_CLOSE_REFUSED:
    case MD_US_CLOSE_CONNECT_FAILED:
    case MD_US_CLOSE_CONN_LOST:
        if (s->ds && !s->resp_started) {
            md_stats_add(md_stats_c(st, s->cluster, MD_CSTAT_RQ_UNAVAILABLE), 1);
            MD_LOG(MD_LOG_INFO, "upstream_unavailable", "stream=%d.%llu cluster=%s reason=%s",
                   w->id, (unsigned long long)s->id, cl,
                   why == MD_US_CLOSE_CONNECT_FAILED ? "connect_failed"
                   : why == MD_US_CLOSE_REFUSED      ? "refused"
                                                     : "connection_lost");
            reply(s, 503, MD_GRPC_UNAVAILABLE,
                  why == MD_US_CLOSE_CONNECT_FAILED ? "upstream connect failed"
                                                    : "upstream connection lost");
        } else if (s->ds && s->grpc && !s->resp.end &&
                   md_local_reply_trailers(s, MD_GRPC_UNAVAILABLE, "upstream connection lost") ==
                       0) {
            md_stream_end(s, &s->resp); /* what arrived is delivered, then the status */
        } else {
            reset_downstream(s, NGHTTP2_INTERNAL_ERROR);
        }
        break;
    }
    md_stream_detach_us(s);
}

void md_router_on_downstream_closed(struct md_stream *s, uint32_t h2_error)
{
    release_retry_slot(s);
    if (h2_error && !s->resp.end && /* abandoned: rapid reset is bounded across connections */
        md_reset_flood_note(&s->w->reset_flood, s->listener->idx, s->peer_ip,
                            md_ratelimit_now()) == MD_RESET_FLOOD_DRY_NEWS)
        MD_LOG(MD_LOG_WARN, "reset_flood",
               "worker=%d listener=%s peer=%s reason=\"too many streams abandoned: new requests "
               "refused until the budget refills\"",
               s->w->id, s->listener->name, s->peer_ip ? s->peer_ip : "-");
    if (md_log_enabled(MD_LOG_INFO))
        access_log(s, h2_error);
    ev_timer_stop(s->w->loop, &s->timer);
    /* A finished exchange lets the upstream side end on its own: resetting
     * it would cost an HTTP/1.1 upstream its kept-alive connection. */
    if (h2_error == 0 && s->resp.end && s->req.end && s->req.body.len == 0)
        return;
    /* A tunnel's client closed its side cleanly: the upstream side still
     * delivers what it holds, then closes on its own. */
    if (h2_error == 0 && s->upgraded && s->req.end)
        return;
    md_stream_reset_us(s, h2_error && h2_error != NGHTTP2_NO_ERROR ? h2_error : NGHTTP2_CANCEL);
}
