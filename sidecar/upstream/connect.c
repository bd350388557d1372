/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/connect.h"

#include "core/err.h"
#include "core/log.h"
#include "loop/worker.h"
#include "tls/tls_creds.h"
#include "upstream/outlier.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void try_next(struct md_connect *c, int last_err);

static void finish(struct md_connect *c, int err)
{
    ev_io_stop(c->w->loop, &c->io);
    ev_timer_stop(c->w->loop, &c->timer);
    struct md_sock sock = c->sock;
    c->sock = md_sock_plain(-1);
    c->cb(c, sock.fd >= 0 ? &sock : NULL, sock.fd >= 0 ? &c->ep : NULL, err);
}

static void drop_attempt(struct md_connect *c)
{
    ev_io_stop(c->w->loop, &c->io);
    ev_timer_stop(c->w->loop, &c->timer);
    if (c->sock.fd >= 0)
        md_sock_close(&c->sock, false);
}

static void attempt_failed(struct md_connect *c, int err, bool timeout)
{
    struct md_stats *st = c->w->stats;
    md_stats_add(
        md_stats_c(st, c->cl->idx, timeout ? MD_CSTAT_CONNECT_TIMEOUT : MD_CSTAT_CONNECT_FAIL), 1);
    MD_LOG(MD_LOG_WARN, "upstream_connect_failed", "session=%d.%llu cluster=%s ep=%s err=%s",
           c->w->id, (unsigned long long)c->log_id, c->cl->name, c->ep.label,
           timeout ? "timeout" : md_err_str(err));
    if (timeout || (err != MD_ENOMEM && err != -EMFILE && err != -ENFILE)) /* not our own lack */
        md_outlier_report(c->w, c->cl, &c->ep.addr, MD_OUTLIER_ERROR);
    drop_attempt(c);
    try_next(c, err);
}

/* The handshake failed or the server is not who it must be: this endpoint
 * is no good, the next may be. */
static void tls_failed(struct md_connect *c, enum md_cstat stat, const char *why)
{
    md_stats_add(md_stats_c(c->w->stats, c->cl->idx, stat), 1);
    MD_LOG(MD_LOG_WARN, "upstream_tls_failed", "session=%d.%llu cluster=%s ep=%s reason=\"%s\"",
           c->w->id, (unsigned long long)c->log_id, c->cl->name, c->ep.label, why);
    md_outlier_report(c->w, c->cl, &c->ep.addr, MD_OUTLIER_ERROR);
    drop_attempt(c);
    try_next(c, MD_EPROTO);
}

const char *md_connect_identity_refused(const struct md_snap_cluster_tls *t, const char *id,
                                        char *buf, size_t len)
{
    if (!id)
        return "the server's certificate names no SPIFFE ID";
    for (size_t i = 0; i < t->n_match_ids; i++)
        if (strcmp(id, t->match_ids[i]) == 0)
            return NULL;
    if (t->n_match_ids == 0)
        return NULL;
    snprintf(buf, len, "server identity %s is not one of match_spiffe_ids (%s%s)", id,
             t->match_ids[0], t->n_match_ids > 1 ? ", ..." : "");
    return buf;
}

static void handshake_step(struct md_connect *c)
{
    char why[512];
    int events = 0;
    int rc = md_sock_handshake(&c->sock, &events, why, sizeof(why));
    if (rc == -EAGAIN) {
        ev_io_stop(c->w->loop, &c->io);
        ev_io_set(&c->io, c->sock.fd, events);
        ev_io_start(c->w->loop, &c->io);
        return;
    }
    if (rc < 0) {
        tls_failed(c, MD_CSTAT_TLS_HANDSHAKE_ERROR, why);
        return;
    }
    const char *refused =
        md_sock_note_identities(&c->sock, why, sizeof(why)) < 0
            ? why
            : md_connect_identity_refused(c->cl->tls, c->sock.peer_id, why, sizeof(why));
    if (refused) {
        tls_failed(c, MD_CSTAT_TLS_IDENTITY_MISMATCH, refused);
        return;
    }
    finish(c, 0);
}

int md_connect_tls_begin(struct md_sock *sock, const struct md_snap_cluster_tls *t)
{
    sock->ssl = md_tls_creds_ssl(t->files.creds);
    if (!sock->ssl || SSL_set_fd(sock->ssl, sock->fd) != 1 ||
        (t->sni && SSL_set_tlsext_host_name(sock->ssl, t->sni) != 1))
        return MD_ENOMEM; /* md_sock_close frees what was made */
    SSL_set_connect_state(sock->ssl);
    return 0;
}

/* TCP is up: done, or TLS begins (the connect timer keeps running). */
static void connected(struct md_connect *c)
{
    const struct md_snap_cluster_tls *t = c->cl->tls;
    if (!t) {
        finish(c, 0);
        return;
    }
    if (md_connect_tls_begin(&c->sock, t) < 0) {
        attempt_failed(c, MD_ENOMEM, false);
        return;
    }
    handshake_step(c);
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct md_connect *c = MD_CONTAINER_OF(io, struct md_connect, io);
    if (c->sock.ssl) {
        handshake_step(c);
        return;
    }
    int soerr = md_sock_connect_result(&c->sock);
    if (soerr) {
        attempt_failed(c, -soerr, false);
        return;
    }
    connected(c);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_connect *c = MD_CONTAINER_OF(t, struct md_connect, timer);
    attempt_failed(c, -ETIMEDOUT, true);
}

static void try_endpoint(struct md_connect *c, const struct md_ep *ep, int last_err);

static void try_next(struct md_connect *c, int last_err)
{
    struct md_worker *w = c->w;
    const struct md_snap_cluster *cl = c->cl;
    struct md_lb_ctx ctx = {.has_hash = c->has_hash,
                            .hash = c->hash,
                            .tried = c->tried,
                            .n_tried = c->n_tried,
                            .load = c->load,
                            .load_arg = c->load_arg};
    try_endpoint(
        c, c->n_tried < cl->max_connect_attempts ? md_lb_pick(&w->lbs[cl->idx], cl, &ctx) : NULL,
        last_err);
}

static void try_endpoint(struct md_connect *c, const struct md_ep *ep, int last_err)
{
    struct md_worker *w = c->w;
    const struct md_snap_cluster *cl = c->cl;
    if (!ep) {
        finish(c, last_err ? last_err : MD_ENOUPSTREAM);
        return;
    }
    c->ep = *ep;
    c->tried[c->n_tried++] = ep->key;
    md_stats_add(md_stats_c(w->stats, cl->idx, MD_CSTAT_CX_TOTAL), 1);
    ev_timer_set(&c->timer, cl->connect_timeout_ms / 1000.0, 0.);
    ev_timer_start(w->loop, &c->timer);
    int rc = md_sock_connect(&c->sock, &c->ep.addr);
    if (rc == 0) {
        connected(c);
        return;
    }
    if (rc < 0) {
        attempt_failed(c, rc, false);
        return;
    }
    ev_io_set(&c->io, c->sock.fd, EV_WRITE);
    ev_io_start(w->loop, &c->io);
}

int md_connect_start(struct md_connect *c, struct md_worker *w, const struct md_snap_cluster *cl,
                     uint64_t log_id, const struct md_ep *first, const struct md_lb_ctx *ctx,
                     md_connect_cb *cb)
{
    c->w = w;
    c->cl = cl;
    c->cb = cb;
    c->log_id = log_id;
    c->sock = md_sock_plain(-1);
    c->n_tried = 0;
    c->has_hash = ctx && ctx->has_hash;
    c->hash = ctx ? ctx->hash : 0;
    c->load = ctx ? ctx->load : NULL;
    c->load_arg = ctx ? ctx->load_arg : NULL;
    ev_init(&c->io, on_io);
    ev_init(&c->timer, on_timeout);
    if (first && cl->max_connect_attempts > 0)
        try_endpoint(c, first, 0);
    else
        try_next(c, 0);
    return 0;
}

void md_connect_cancel(struct md_connect *c)
{
    if (!c->w)
        return;
    drop_attempt(c);
}
