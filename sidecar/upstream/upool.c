/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/upool.h"

#include "codec/h1_client.h"
#include "codec/h2_client.h"
#include "core/err.h"
#include "core/log.h"
#include "loop/worker.h"
#include "router/router.h"
#include "upstream/breakers.h"
#include "upstream/connect.h"
#include "upstream/lb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A connection of the pool: being made, or an h2 or h1 client. */
struct pconn {
    struct md_list link; /* in md_upool.conns */
    struct md_upool *pool;
    struct md_addr addr; /* the endpoint (the one finally connected) */
    struct md_connect connect;
    struct md_h2_client *cl; /* HTTP/2; NULL while connecting */
    struct md_h1_client *h1; /* HTTP/1.1; NULL while connecting */
    bool idle;               /* h1: kept alive, no request on it */
    ev_timer idle_timer;     /* h1: closes it after pool_idle_timeout_ms idle */
    struct md_list pending;  /* struct pending: streams waiting for the connect */
    size_t n_pending;
    char label[128];
};

/* A stream waiting for its connection: the stream's upstream side meanwhile. */
struct pending {
    struct md_list link;
    struct pconn *pc;
    struct md_stream *s;
};

struct md_upool {
    struct md_worker *w;
    const struct md_snap_cluster *cl;
    struct md_list conns;
    struct md_breakers *brk; /* the cluster's circuit breakers (shared); NULL: none */
};

static int acquire(struct md_worker *w, struct md_stream *s, bool have_slot);

static const struct md_stream_side_ops pending_ops;

static void pending_headers_ready(void *side) {}
static void pending_data_ready(void *side) {}
static void pending_consumed(void *side, size_t n) {}

/* Forgets a waiting stream; returns it. */
static struct md_stream *pending_drop(struct pending *p)
{
    struct md_stream *s = p->s;
    md_list_remove(&p->link);
    p->pc->n_pending--;
    md_breakers_put(p->pc->pool->brk, MD_BREAKER_PENDING);
    free(p);
    return s;
}

static void pending_reset(void *side, uint32_t h2_error)
{
    struct pending *p = side;
    struct md_breakers *brk = p->pc->pool->brk;
    pending_drop(p);
    md_breakers_put(brk, MD_BREAKER_REQUESTS); /* the request ends here */
}

static const struct md_stream_side_ops pending_ops = {
    .headers_ready = pending_headers_ready,
    .data_ready = pending_data_ready,
    .consumed = pending_consumed,
    .reset = pending_reset,
};

static size_t load(const struct pconn *pc)
{
    return pc->n_pending + (pc->cl ? md_h2_client_load(pc->cl) : 0) + (pc->h1 && !pc->idle);
}

static bool connected(const struct pconn *pc)
{
    return pc->cl || pc->h1;
}

/* Can take a stream now: an HTTP/2 peer's limit must be known first. */
static bool ready(const struct pconn *pc)
{
    return pc->h1 || (pc->cl && md_h2_client_ready(pc->cl));
}

static void pconn_free(struct pconn *pc)
{
    md_list_remove(&pc->link);
    md_connect_cancel(&pc->connect);
    ev_timer_stop(pc->pool->w->loop, &pc->idle_timer);
    md_breakers_put(pc->pool->brk, MD_BREAKER_CONNECTIONS); /* taken when it was made */
    if (connected(pc)) {
        struct md_stats *st = pc->pool->w->stats;
        if (!pc->pool->cl->protocol) /* HTTP/2 */
            md_stats_add(md_stats_c(st, pc->pool->cl->idx, MD_CSTAT_H2_CX_ACTIVE), -1);
        md_stats_add(md_stats_c(st, pc->pool->cl->idx, MD_CSTAT_CX_ACTIVE), -1);
    }
    free(pc);
}

/* Takes the first waiting stream off |pc|. */
static struct md_stream *pending_pop(struct pconn *pc)
{
    return pending_drop(MD_CONTAINER_OF(pc->pending.next, struct pending, link));
}

/* Ends every waiting stream with |why|. */
static void fail_pending(struct pconn *pc, enum md_us_close why)
{
    while (!md_list_empty(&pc->pending)) {
        struct md_stream *s = pending_pop(pc);
        md_breakers_put(pc->pool->brk, MD_BREAKER_REQUESTS);
        md_router_on_upstream_closed(s, why, 0);
    }
}

static void on_client_closed(void *owner, struct md_h2_client *cl)
{
    struct pconn *pc = owner;
    md_list_remove(&pc->link); /* no stream may join it while the waiting ones fail */
    md_list_init(&pc->link);
    pc->cl = NULL;
    fail_pending(pc, MD_US_CLOSE_CONN_LOST);
    pc->cl = cl; /* still counted as connected in pconn_free */
    pconn_free(pc);
}

/* The peer's SETTINGS came: its limit is known. Streams that waited go out up
 * to that limit; the rest look for room elsewhere (or a new connection). */
static void on_client_ready(void *owner, struct md_h2_client *cl)
{
    struct pconn *pc = owner;
    struct md_worker *w = pc->pool->w;
    while (!md_list_empty(&pc->pending)) {
        struct md_stream *s = pending_pop(pc);
        s->us = NULL;
        /* The request keeps its requests slot: the client stream, or the
         * next place, holds it now (acquire gives it back when it fails). */
        bool room = md_h2_client_capacity(cl) > 0;
        int rc = room ? md_h2_client_submit(cl, s) : acquire(w, s, true);
        if (rc < 0 && room)
            md_breakers_put(pc->pool->brk, MD_BREAKER_REQUESTS);
        if (rc < 0)
            md_router_on_upstream_closed(s, MD_US_CLOSE_CONNECT_FAILED, 0);
    }
}

static size_t idle_count(struct md_upool *pool, const struct md_addr *ep)
{
    size_t n = 0;
    for (struct md_list *it = pool->conns.next; it != &pool->conns; it = it->next) {
        struct pconn *pc = MD_CONTAINER_OF(it, struct pconn, link);
        n += md_addr_equal(&pc->addr, ep) && pc->h1 && pc->idle;
    }
    return n;
}

static void on_h1_event(void *owner, struct md_h1_client *cl, bool idle)
{
    struct pconn *pc = owner;
    /* pc->h1 stays set below: pconn_free counts the connection as closed. */
    if (!idle) { /* the client closed and freed itself */
        pconn_free(pc);
        return;
    }
    /* Keep at most max_connections_per_endpoint idle per endpoint. */
    if (idle_count(pc->pool, &pc->addr) >= pc->pool->cl->max_connections_per_endpoint) {
        md_h1_client_free(cl);
        pconn_free(pc);
        return;
    }
    pc->idle = true;
    ev_timer_again(pc->pool->w->loop, &pc->idle_timer);
}

static void on_idle_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct pconn *pc = MD_CONTAINER_OF(t, struct pconn, idle_timer);
    if (!pc->idle)
        return;
    md_h1_client_free(pc->h1);
    pconn_free(pc);
}

static int submit(struct pconn *pc, struct md_stream *s, bool reused)
{
    s->us_ep = &pc->addr;
    if (pc->h1) {
        pc->idle = false;
        ev_timer_stop(pc->pool->w->loop, &pc->idle_timer);
        return md_h1_client_submit(pc->h1, s, reused);
    }
    return md_h2_client_submit(pc->cl, s);
}

static void on_connected(struct md_connect *c, struct md_sock *sock, const struct md_ep *ep,
                         int err)
{
    struct pconn *pc = MD_CONTAINER_OF(c, struct pconn, connect);
    struct md_upool *pool = pc->pool;
    struct md_worker *w = pool->w;
    if (!sock) {
        md_list_remove(&pc->link); /* no new streams join it while the pending ones fail */
        md_list_init(&pc->link);
        fail_pending(pc, MD_US_CLOSE_CONNECT_FAILED);
        pconn_free(pc);
        return;
    }
    pc->addr = ep->addr;
    snprintf(pc->label, sizeof(pc->label), "%s/%s", pool->cl->name, ep->label);
    struct md_stats *st = w->stats;
    struct md_h2_client_cfg cfg = {
        .h2 = &pool->cl->h2,
        .keepalive_interval_ms = pool->cl->keepalive_interval_ms,
        .idle_timeout_ms = pool->cl->pool_idle_timeout_ms,
        .rx_stat = md_stats_c(st, pool->cl->idx, MD_CSTAT_RX_BYTES),
        .tx_stat = md_stats_c(st, pool->cl->idx, MD_CSTAT_TX_BYTES),
        .rq_active_stat = md_stats_c(st, pool->cl->idx, MD_CSTAT_RQ_ACTIVE),
        .rq_slots = pool->brk ? &pool->brk->open[MD_BREAKER_REQUESTS] : NULL,
        .label = pc->label,
        .ready = on_client_ready,
    };
    if (pool->cl->protocol == MD_CLUSTER_HTTP1) {
        struct md_h1_client_cfg cfg1 = {.rx_stat = cfg.rx_stat,
                                        .tx_stat = cfg.tx_stat,
                                        .rq_active_stat = cfg.rq_active_stat,
                                        .rq_slots = cfg.rq_slots,
                                        .label = pc->label};
        pc->h1 = md_h1_client_new(w, *sock, &cfg1, on_h1_event, pc);
    } else {
        pc->cl = md_h2_client_new(w, *sock, &cfg, on_client_closed, pc);
    }
    if (!connected(pc)) {
        md_list_remove(&pc->link);
        md_list_init(&pc->link);
        fail_pending(pc, MD_US_CLOSE_CONNECT_FAILED);
        pconn_free(pc);
        return;
    }
    if (pc->cl)
        md_stats_add(md_stats_c(st, pool->cl->idx, MD_CSTAT_H2_CX_ACTIVE), 1);
    md_stats_add(md_stats_c(st, pool->cl->idx, MD_CSTAT_CX_ACTIVE), 1);
    if (pc->cl)
        return; /* HTTP/2: the waiting streams go out when the peer's SETTINGS arrive */
    while (!md_list_empty(&pc->pending)) {
        struct md_stream *s = pending_pop(pc);
        s->us = NULL;
        if (submit(pc, s, false) < 0) {
            md_breakers_put(pool->brk, MD_BREAKER_REQUESTS);
            md_router_on_upstream_closed(s, MD_US_CLOSE_CONNECT_FAILED, 0);
        }
    }
}

/* Queues |s| on the connection being made; the entry is |s|'s upstream side meanwhile. */
static int add_pending(struct pconn *pc, struct md_stream *s)
{
    struct pending *p = calloc(1, sizeof(*p));
    if (!p)
        return MD_ENOMEM;
    p->pc = pc;
    p->s = s;
    md_list_insert_tail(&pc->pending, &p->link);
    pc->n_pending++;
    s->us_ep = &pc->addr;
    s->us = p;
    s->us_ops = &pending_ops;
    return 0;
}

static struct md_upool *pool_get(struct md_worker *w, size_t cluster)
{
    if (w->upools[cluster])
        return w->upools[cluster];
    struct md_upool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->w = w;
    p->cl = &w->snap->clusters[cluster];
    p->brk = md_breakers_of(w, cluster);
    md_list_init(&p->conns);
    w->upools[cluster] = p;
    return p;
}

/* LEAST_REQUEST: streams in progress or waiting on this worker's
 * connections to |ep|. */
static size_t ep_load(void *arg, const struct md_ep *ep)
{
    struct md_upool *pool = arg;
    size_t n = 0;
    for (struct md_list *it = pool->conns.next; it != &pool->conns; it = it->next) {
        struct pconn *pc = MD_CONTAINER_OF(it, struct pconn, link);
        if (md_addr_equal(&pc->addr, &ep->addr))
            n += load(pc);
    }
    return n;
}

/* The request's hash for the consistent-hash balancers: the first hash
 * policy with a value. */
static bool request_hash(const struct md_snap_cluster *cl, const struct md_stream *s,
                         uint64_t *hash)
{
    for (size_t k = 0; k < cl->n_hash_policies; k++) {
        const struct md_snap_hash_policy *hp = &cl->hash_policies[k];
        if (!hp->header) {
            if (s->peer_ip && s->peer_ip[0]) {
                *hash = md_hash64(s->peer_ip, strlen(s->peer_ip));
                return true;
            }
            continue;
        }
        const struct md_hdr *h = md_hdrs_find(s->req.hdrs, s->req.n_hdrs, hp->header);
        if (h) {
            *hash = md_hash64(h->value, h->value_len);
            return true;
        }
    }
    return false;
}

/* Refuses |s| for breaker |k|: counted, named on the stream for the answer. */
static int overflow(struct md_upool *pool, struct md_stream *s, enum md_breaker k)
{
    md_breakers_overflowed(pool->w, pool->cl->idx, k);
    s->overflowed = md_breakers_name(k);
    MD_LOG(MD_LOG_DEBUG, "upstream_overflow", "stream=%d.%llu cluster=%s breaker=%s", pool->w->id,
           (unsigned long long)s->id, pool->cl->name, s->overflowed);
    return MD_EOVERFLOW;
}

/* |have_slot|: |s| holds a requests slot already (a waiting stream moved on). */
static int acquire(struct md_worker *w, struct md_stream *s, bool have_slot)
{
    struct md_upool *pool = pool_get(w, s->cluster);
    if (!pool) {
        if (have_slot)
            md_breakers_put(md_breakers_of(w, s->cluster), MD_BREAKER_REQUESTS);
        return MD_ENOMEM;
    }
    const struct md_snap_cluster *cl = pool->cl;
    struct md_breakers *brk = pool->brk;
    if (!have_slot && !md_breakers_take(brk, MD_BREAKER_REQUESTS))
        return overflow(pool, s, MD_BREAKER_REQUESTS);
    struct md_lb_ctx ctx = {
        .load = ep_load,
        .load_arg = pool,
        .tried = s->tried,
        .n_tried = s->n_tried,
        .healthy_only = s->route && s->route->has_fallback && s->cluster != s->route->fallback,
    };
    ctx.has_hash = request_hash(cl, s, &ctx.hash);
    const struct md_ep *ep = md_lb_pick(&w->lbs[cl->idx], cl, &ctx);
    if (!ep && ctx.n_tried) { /* a retry goes elsewhere when it can, else where it was */
        ctx.n_tried = 0;
        ep = md_lb_pick(&w->lbs[cl->idx], cl, &ctx);
    }
    int rc = MD_ENOUPSTREAM;
    if (!ep)
        goto fail;
    struct pconn *best = NULL, *least = NULL, *any = NULL;
    size_t n_ep = 0;
    bool h1 = cl->protocol == MD_CLUSTER_HTTP1;
    for (struct md_list *it = pool->conns.next; it != &pool->conns; it = it->next) {
        struct pconn *pc = MD_CONTAINER_OF(it, struct pconn, link);
        bool usable = !h1 && !(pc->cl && !md_h2_client_usable(pc->cl));
        if (usable && (!any || load(pc) < load(any)))
            any = pc; /* the least loaded to any endpoint, should no new one be allowed */
        if (!md_addr_equal(&pc->addr, &ep->addr))
            continue;
        if (h1) { /* one request per connection: an idle one, or a new one */
            if (pc->h1 && pc->idle) {
                best = pc;
                break;
            }
            continue;
        }
        if (!usable)
            continue;
        n_ep++;
        /* One not ready yet (connecting, or waiting for the peer's SETTINGS)
         * holds streams up to our own limit; they are spread when it is. */
        size_t room = ready(pc) ? md_h2_client_capacity(pc->cl)
                                : (load(pc) < cl->h2.max_concurrent_streams ? 1 : 0);
        if (room && !best)
            best = pc;
        if (!least || load(pc) < load(least))
            least = pc;
    }
    if (!h1 && !best && n_ep >= cl->max_connections_per_endpoint)
        best = least; /* full: nghttp2 queues the stream until a slot frees */
    bool fresh = !best;
    if (fresh && !md_breakers_take(brk, MD_BREAKER_CONNECTIONS)) {
        /* No new connection: HTTP/2 multiplexes onto one there is (nghttp2
         * queues past its stream limit); HTTP/1.1 cannot wait on one. */
        if (!any) {
            rc = overflow(pool, s, MD_BREAKER_CONNECTIONS);
            goto fail;
        }
        best = any;
        fresh = false;
    }
    bool waits = fresh || !ready(best); /* for a connection to be made */
    if (waits && !md_breakers_take(brk, MD_BREAKER_PENDING)) {
        rc = overflow(pool, s, MD_BREAKER_PENDING);
        goto fail_conn;
    }
    if (fresh) {
        best = calloc(1, sizeof(*best));
        rc = MD_ENOMEM;
        if (!best)
            goto fail_pending;
        best->pool = pool;
        best->addr = ep->addr;
        md_list_init(&best->pending);
        md_list_insert_tail(&pool->conns, &best->link);
        snprintf(best->label, sizeof(best->label), "%s/%s", cl->name, ep->label);
        ev_init(&best->idle_timer, on_idle_timeout);
        best->idle_timer.repeat = cl->pool_idle_timeout_ms / 1000.0;
    }
    rc = waits ? add_pending(best, s) : submit(best, s, true);
    if (rc < 0) {
        if (fresh) {
            md_list_remove(&best->link);
            free(best);
        }
        goto fail_pending;
    }
    md_stats_add(md_stats_c(w->stats, cl->idx, MD_CSTAT_RQ_TOTAL), 1);
    /* After queueing: the connect may complete (or fail) before it returns. */
    if (fresh)
        md_connect_start(&best->connect, w, cl, s->id, ep, &ctx, on_connected);
    return 0;
fail_pending:
    if (waits)
        md_breakers_put(brk, MD_BREAKER_PENDING);
fail_conn:
    if (fresh)
        md_breakers_put(brk, MD_BREAKER_CONNECTIONS);
fail:
    md_breakers_put(brk, MD_BREAKER_REQUESTS);
    return rc;
}

int md_upool_acquire(struct md_worker *w, struct md_stream *s)
{
    /* A new attempt: nothing refused it or was reported for it yet. */
    s->overflowed = NULL;
    s->outlier_noted = false;
    return acquire(w, s, false);
}

void md_upool_free(struct md_upool *p)
{
    if (!p)
        return;
    while (!md_list_empty(&p->conns)) {
        struct pconn *pc = MD_CONTAINER_OF(p->conns.next, struct pconn, link);
        fail_pending(pc, MD_US_CLOSE_CONN_LOST);
        if (pc->cl)
            md_h2_client_free(pc->cl);
        if (pc->h1)
            md_h1_client_free(pc->h1);
        pconn_free(pc);
    }
    free(p);
}
