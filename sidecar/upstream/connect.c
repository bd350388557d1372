/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/connect.h"

#include "core/err.h"
#include "core/log.h"
#include "loop/worker.h"
#include "upstream/lb_rr.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void try_next(struct md_connect *c, int last_err);

static void finish(struct md_connect *c, int fd, int err)
{
    ev_io_stop(c->w->loop, &c->io);
    ev_timer_stop(c->w->loop, &c->timer);
    c->fd = -1;
    c->cb(c, fd, fd >= 0 ? c->ep : NULL, err);
}

static void attempt_failed(struct md_connect *c, int err, bool timeout)
{
    struct md_stats *st = c->w->stats;
    md_stats_add(
        md_stats_c(st, c->cl->idx, timeout ? MD_CSTAT_CONNECT_TIMEOUT : MD_CSTAT_CONNECT_FAIL), 1);
    MD_LOG(MD_LOG_WARN, "upstream_connect_failed", "session=%d.%llu cluster=%s ep=%s err=%s",
           c->w->id, (unsigned long long)c->log_id, c->cl->name, c->ep->label,
           timeout ? "timeout" : md_err_str(err));
    ev_io_stop(c->w->loop, &c->io);
    ev_timer_stop(c->w->loop, &c->timer);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    try_next(c, err);
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    struct md_connect *c = MD_CONTAINER_OF(io, struct md_connect, io);
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr) {
        attempt_failed(c, -soerr, false);
        return;
    }
    finish(c, c->fd, 0);
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_connect *c = MD_CONTAINER_OF(t, struct md_connect, timer);
    attempt_failed(c, -ETIMEDOUT, true);
}

static void try_endpoint(struct md_connect *c, long idx, int last_err);

static void try_next(struct md_connect *c, int last_err)
{
    struct md_worker *w = c->w;
    const struct md_snap_cluster *cl = c->cl;
    long idx = c->n_tried < cl->max_connect_attempts
                   ? md_lb_rr_pick(&w->rr_cursor[cl->idx], cl->n_endpoints, c->tried, c->n_tried)
                   : -1;
    try_endpoint(c, idx, last_err);
}

static void try_endpoint(struct md_connect *c, long idx, int last_err)
{
    struct md_worker *w = c->w;
    const struct md_snap_cluster *cl = c->cl;
    if (idx < 0) {
        finish(c, -1, last_err ? last_err : MD_ENOUPSTREAM);
        return;
    }
    c->tried[c->n_tried++] = (uint32_t)idx;
    c->ep = &cl->endpoints[idx];
    md_stats_add(md_stats_c(w->stats, cl->idx, MD_CSTAT_CX_TOTAL), 1);
    const struct md_addr *a = &c->ep->addr;
    c->fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        attempt_failed(c, -errno, false);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
        finish(c, c->fd, 0);
        return;
    }
    if (errno != EINPROGRESS) {
        attempt_failed(c, -errno, false);
        return;
    }
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(w->loop, &c->io);
    ev_timer_set(&c->timer, cl->connect_timeout_ms / 1000.0, 0.);
    ev_timer_start(w->loop, &c->timer);
}

int md_connect_start(struct md_connect *c, struct md_worker *w, const struct md_snap_cluster *cl,
                     uint64_t log_id, md_connect_cb *cb)
{
    return md_connect_start_at(c, w, cl, log_id, -1, cb);
}

int md_connect_start_at(struct md_connect *c, struct md_worker *w, const struct md_snap_cluster *cl,
                        uint64_t log_id, long first, md_connect_cb *cb)
{
    c->w = w;
    c->cl = cl;
    c->cb = cb;
    c->log_id = log_id;
    c->fd = -1;
    c->ep = NULL;
    c->n_tried = 0;
    ev_init(&c->io, on_writable);
    ev_init(&c->timer, on_timeout);
    if (first >= 0 && (size_t)first < cl->n_endpoints && cl->max_connect_attempts > 0)
        try_endpoint(c, first, 0);
    else
        try_next(c, 0);
    return 0;
}

void md_connect_cancel(struct md_connect *c)
{
    if (!c->w)
        return;
    ev_io_stop(c->w->loop, &c->io);
    ev_timer_stop(c->w->loop, &c->timer);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}
