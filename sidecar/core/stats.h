/* SPDX-License-Identifier: Apache-2.0 */
/* Per-worker counters and gauges. Each worker writes only its own block, with
 * relaxed atomics and no locks; the admin thread sums the blocks on scrape. */
#ifndef MESHD_CORE_STATS_H
#define MESHD_CORE_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per listener. */
enum md_lstat {
    MD_LSTAT_CX_TOTAL,              /* downstream connections accepted */
    MD_LSTAT_CX_ACTIVE,             /* gauge: downstream connections open */
    MD_LSTAT_RX_BYTES,              /* bytes read from downstream */
    MD_LSTAT_TX_BYTES,              /* bytes written to downstream */
    MD_LSTAT_FD_EXHAUSTED,          /* accept() hit EMFILE/ENFILE */
    MD_LSTAT_RQ_TOTAL,              /* HTTP requests received */
    MD_LSTAT_RQ_ACTIVE,             /* gauge: HTTP requests in progress */
    MD_LSTAT_RQ_NO_ROUTE,           /* answered 404 / UNIMPLEMENTED */
    MD_LSTAT_RQ_TIMEOUT,            /* answered 504 / DEADLINE_EXCEEDED, or ended at the deadline */
    MD_LSTAT_RQ_DS_RESET,           /* the client reset a stream before it completed */
    MD_LSTAT_RQ_TOO_LARGE,          /* header block over max_header_list_size */
    MD_LSTAT_RQ_BAD_REQUEST,        /* malformed: HTTP/1 400/414, HTTP/2 PROTOCOL_ERROR */
    MD_LSTAT_RQ_HEADER_TIMEOUT,     /* header section not complete within request_headers_timeout_ms */
    MD_LSTAT_H2_GOAWAY_ERROR,       /* connections closed for protocol errors or floods */
    MD_LSTAT_DETECT_H2,             /* AUTO: connections detected as h2c */
    MD_LSTAT_DETECT_HTTP1,          /* AUTO: connections detected as HTTP/1.1 */
    MD_LSTAT_DETECT_TLS,            /* AUTO: a TLS ClientHello, proxied to tcp_fallback */
    MD_LSTAT_DETECT_TCP,            /* AUTO: other bytes, proxied to tcp_fallback */
    MD_LSTAT_DETECT_TIMEOUT,        /* AUTO: silence (server-first), proxied to tcp_fallback */
    MD_LSTAT_DETECT_NONE,           /* AUTO: closed before a decision, or nowhere to go */
    MD_LSTAT_UPGRADE,               /* upgraded exchanges (101): tunnels opened */
    MD_LSTAT_UPGRADE_REFUSED,       /* upgrade requests meshd refused (403 / 501) */
    MD_LSTAT_TLS_HANDSHAKE,         /* TLS handshakes completed */
    MD_LSTAT_TLS_HANDSHAKE_ERROR,   /* TLS handshakes failed or timed out */
    MD_LSTAT_TLS_PLAINTEXT_REFUSED, /* non-TLS connections closed on a TLS listener */
    MD_LSTAT_RQ_RESET_FLOOD,        /* refused: the client's or listener's resets ran over */
    MD_LSTAT_ACCESS_LOG_DROPPED,    /* access-log lines of failed exchanges left out (a flood) */
    MD_LSTAT__N
};

/* Per cluster. */
enum md_cstat {
    MD_CSTAT_CX_TOTAL,              /* connect attempts started */
    MD_CSTAT_CX_ACTIVE,             /* gauge: established upstream connections */
    MD_CSTAT_CONNECT_FAIL,          /* refused / unreachable connects */
    MD_CSTAT_CONNECT_TIMEOUT,       /* connects that ran past connect_timeout */
    MD_CSTAT_UNAVAILABLE,           /* downstream closed: every attempt failed */
    MD_CSTAT_RX_BYTES,              /* bytes read from upstream */
    MD_CSTAT_TX_BYTES,              /* bytes written to upstream */
    MD_CSTAT_RQ_TOTAL,              /* HTTP requests sent upstream */
    MD_CSTAT_RQ_ACTIVE,             /* gauge: HTTP requests in progress upstream */
    MD_CSTAT_RQ_UNAVAILABLE,        /* answered 503 / UNAVAILABLE: no upstream connection */
    MD_CSTAT_RQ_RESET,              /* upstream reset a stream before it completed */
    MD_CSTAT_RQ_REFUSED_RETRY,      /* refused (GOAWAY/REFUSED_STREAM) and sent again */
    MD_CSTAT_H2_CX_ACTIVE,          /* gauge: pooled HTTP/2 connections */
    MD_CSTAT_TLS_HANDSHAKE_ERROR,   /* TLS handshakes with an endpoint that failed */
    MD_CSTAT_TLS_IDENTITY_MISMATCH, /* servers whose SPIFFE ID the cluster does not accept */
    MD_CSTAT_RQ_RETRY,              /* attempts made again (retry policies) */
    MD_CSTAT_RQ_RETRY_SUCCESS,      /* requests answered by an attempt after the first */
    MD_CSTAT_RQ_FALLBACK,           /* requests sent to the route's fallback cluster */
    MD_CSTAT_RQ_FAULT_ABORT,        /* requests aborted by fault injection */
    /* refused by a circuit breaker, one per breaker in enum md_breaker order */
    MD_CSTAT_OVERFLOW_CONNECTIONS,
    MD_CSTAT_OVERFLOW_PENDING,
    MD_CSTAT_OVERFLOW_REQUESTS,
    MD_CSTAT_OVERFLOW_RETRIES,
    MD_CSTAT__N
};

/* Per RBAC slot (md_snapshot.rbac_stats: a policy, or an Rbac's "none matched"). */
enum md_rstat {
    MD_RSTAT_ALLOWED, /* requests the decision let through */
    MD_RSTAT_DENIED,  /* requests refused (403 / PERMISSION_DENIED) */
    MD_RSTAT__N
};

/* Per rate limit (md_snapshot.rate_limits, by md_snap_rate_limit.idx). */
enum md_qstat {
    MD_QSTAT_ALLOWED, /* requests or connections a token was taken for */
    MD_QSTAT_LIMITED, /* refused: 429 / RESOURCE_EXHAUSTED, or the connection closed */
    MD_QSTAT__N
};

/* Per route with a retry policy (md_snap_retry.stat; routes of one name
 * share a slot). */
enum md_tstat {
    MD_TSTAT_RETRY,          /* attempts made again */
    MD_TSTAT_RETRY_SUCCESS,  /* requests answered by an attempt after the first */
    MD_TSTAT_RETRY_OVERFLOW, /* retries not made: over the retry budget or max_retries */
    MD_TSTAT__N
};

/* What the counters are kept per: each a table of [n][width] slots. */
enum md_stat_dim {
    MD_DIM_LISTENER,
    MD_DIM_CLUSTER,
    MD_DIM_RBAC,
    MD_DIM_RATE_LIMIT,
    MD_DIM_ROUTE,
    MD_DIM__N
};

struct md_stat_desc {
    const char *name; /* Prometheus metric name */
    const char *help;
    bool gauge;
    /* Extra labels, e.g. breaker="pending"; NULL: none. Consecutive entries
     * with one name are one family, told apart by these. */
    const char *labels;
};

extern const struct md_stat_desc md_lstat_desc[MD_LSTAT__N];
extern const struct md_stat_desc md_cstat_desc[MD_CSTAT__N];
extern const struct md_stat_desc md_rstat_desc[MD_RSTAT__N];
extern const struct md_stat_desc md_qstat_desc[MD_QSTAT__N];
extern const struct md_stat_desc md_tstat_desc[MD_TSTAT__N];

/* One worker's block. Owned by its worker; read by the admin thread. */
struct md_stats {
    size_t n[MD_DIM__N];    /* rows: listeners, clusters, RBAC slots, rate limits, routes */
    uint64_t *v[MD_DIM__N]; /* [n][width of the dimension] */
};

/* |n| rows per dimension. Returns NULL on allocation failure. */
struct md_stats *md_stats_new(const size_t n[MD_DIM__N]);
void md_stats_free(struct md_stats *st);

/* Only the owning worker calls these: a relaxed load+store is enough since
 * nobody else writes the slot, and readers see a whole 64-bit value. */
static inline void md_stats_add(uint64_t *slot, int64_t delta)
{
    __atomic_store_n(slot, __atomic_load_n(slot, __ATOMIC_RELAXED) + (uint64_t)delta,
                     __ATOMIC_RELAXED);
}

/* Slots per row of each dimension. */
extern const size_t md_stat_width[MD_DIM__N];

static inline uint64_t *md_stats_at(struct md_stats *st, enum md_stat_dim d, size_t row, int s)
{
    return &st->v[d][row * md_stat_width[d] + (size_t)s];
}

/* Typed doors to md_stats_at. */
static inline uint64_t *md_stats_l(struct md_stats *st, size_t listener, enum md_lstat s)
{
    return md_stats_at(st, MD_DIM_LISTENER, listener, s);
}

static inline uint64_t *md_stats_c(struct md_stats *st, size_t cluster, enum md_cstat s)
{
    return md_stats_at(st, MD_DIM_CLUSTER, cluster, s);
}

static inline uint64_t *md_stats_r(struct md_stats *st, size_t slot, enum md_rstat s)
{
    return md_stats_at(st, MD_DIM_RBAC, slot, s);
}

static inline uint64_t *md_stats_q(struct md_stats *st, size_t rate_limit, enum md_qstat s)
{
    return md_stats_at(st, MD_DIM_RATE_LIMIT, rate_limit, s);
}

static inline uint64_t *md_stats_t(struct md_stats *st, size_t route, enum md_tstat s)
{
    return md_stats_at(st, MD_DIM_ROUTE, route, s);
}

/* Sums one slot over |n| workers' blocks (gauges may be negative per worker). */
int64_t md_stats_sum(struct md_stats *const *blocks, size_t n, enum md_stat_dim d, size_t row,
                     int s);
static inline int64_t md_stats_sum_l(struct md_stats *const *b, size_t n, size_t i, enum md_lstat s)
{
    return md_stats_sum(b, n, MD_DIM_LISTENER, i, s);
}
static inline int64_t md_stats_sum_c(struct md_stats *const *b, size_t n, size_t i, enum md_cstat s)
{
    return md_stats_sum(b, n, MD_DIM_CLUSTER, i, s);
}
static inline int64_t md_stats_sum_r(struct md_stats *const *b, size_t n, size_t i, enum md_rstat s)
{
    return md_stats_sum(b, n, MD_DIM_RBAC, i, s);
}
static inline int64_t md_stats_sum_q(struct md_stats *const *b, size_t n, size_t i, enum md_qstat s)
{
    return md_stats_sum(b, n, MD_DIM_RATE_LIMIT, i, s);
}
static inline int64_t md_stats_sum_t(struct md_stats *const *b, size_t n, size_t i, enum md_tstat s)
{
    return md_stats_sum(b, n, MD_DIM_ROUTE, i, s);
}

#endif
