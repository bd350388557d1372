/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/tcp_proxy.h"

#include "core/buf.h"
#include "core/addr.h"
#include "core/err.h"
#include "core/log.h"
#include "loop/worker.h"
#include "net/errwatch.h"
#include "upstream/breakers.h"
#include "upstream/connect.h"
#include "upstream/outlier.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes moved per callback before yielding to other connections. */
#define MAX_ROUNDS 16

struct side {
    int fd;
    ev_io rio, wio;
    struct md_errwatch ew; /* resets while neither watcher is on */
    bool shut_wr;          /* we sent FIN on it */
};

/* One direction: src -> (pipe | buf) -> dst. */
struct dir {
    struct side *src, *dst;
    int pipe[2];       /* splice mode once allocated; -1 otherwise */
    struct md_buf buf; /* copy mode */
    size_t pending;    /* bytes held between src and dst */
    size_t limit;
    bool splice; /* try splice when the pipe can be had */
    bool src_eof;
    uint64_t moved_in, moved_out; /* for the access log */
    uint64_t *rx_stat, *tx_stat;
};

struct session {
    struct md_list link; /* in worker->sessions */
    struct md_worker *w;
    const struct md_snap_listener *l;
    const struct md_snap_cluster *cl;
    char ep[MD_ADDR_STRLEN]; /* the upstream endpoint once connected; "" before */
    uint64_t id;
    struct side ds, us;
    struct dir up;   /* downstream -> upstream */
    struct dir down; /* upstream -> downstream */
    struct md_connect connect;
    ev_timer idle;
    ev_tstamp started, last_active;
    bool us_connected;
    bool cx_slot; /* holds a connections slot of the cluster's circuit breaker */
    bool held;    /* counted in the balancer's sessions to connect.ep */
};

static void watch(struct ev_loop *loop, ev_io *io, bool on)
{
    if (on && !ev_is_active(io))
        ev_io_start(loop, io);
    else if (!on && ev_is_active(io))
        ev_io_stop(loop, io);
}

static void side_close(struct ev_loop *loop, struct side *s, bool reset)
{
    if (s->fd < 0)
        return;
    ev_io_stop(loop, &s->rio);
    ev_io_stop(loop, &s->wio);
    if (reset)
        md_sock_close_reset(s->fd);
    else
        close(s->fd);
    s->fd = -1;
}

static void dir_fini(struct md_worker *w, struct dir *d)
{
    if (d->pipe[0] >= 0) {
        if (d->pending == 0) {
            md_worker_pipe_put(w, d->pipe);
        } else {
            close(d->pipe[0]);
            close(d->pipe[1]);
        }
        d->pipe[0] = d->pipe[1] = -1;
    }
    md_buf_fini(&d->buf);
}

static void session_free(struct session *s, bool reset, const char *reason)
{
    struct md_worker *w = s->w;
    struct md_stats *st = w->stats;
    md_connect_cancel(&s->connect);
    ev_timer_stop(w->loop, &s->idle);
    side_close(w->loop, &s->ds, reset);
    side_close(w->loop, &s->us, reset);
    dir_fini(w, &s->up);
    dir_fini(w, &s->down);
    md_stats_add(md_stats_l(st, s->l->idx, MD_LSTAT_CX_ACTIVE), -1);
    if (s->cx_slot)
        md_breakers_put(md_breakers_of(w, s->cl->idx), MD_BREAKER_CONNECTIONS);
    if (s->us_connected)
        md_stats_add(md_stats_c(st, s->cl->idx, MD_CSTAT_CX_ACTIVE), -1);
    if (s->held)
        md_lb_release(&w->lbs[s->cl->idx], &s->connect.ep.addr);
    __atomic_sub_fetch(&w->active, 1, __ATOMIC_RELAXED);
    md_list_remove(&s->link);
    MD_LOG(MD_LOG_INFO, "tcp_session_end",
           "session=%d.%llu listener=%s cluster=%s ep=%s bytes_from_downstream=%llu "
           "bytes_to_downstream=%llu duration_ms=%.0f reason=%s",
           w->id, (unsigned long long)s->id, s->l->name, s->cl->name, s->ep[0] ? s->ep : "-",
           (unsigned long long)s->up.moved_in, (unsigned long long)s->down.moved_out,
           (ev_now(w->loop) - s->started) * 1000.0, reason);
    free(s);
}

/* Moves bytes src -> pipe|buf. Returns >0 bytes, 0 at EOF, or -errno. */
static ssize_t dir_in(struct md_worker *w, struct dir *d)
{
    size_t room = d->limit - d->pending;
    if (d->splice && d->pipe[0] < 0) {
        int cap = md_worker_pipe_get(w, d->pipe, d->limit);
        if (cap < 0)
            d->splice = false; /* out of fds for a pipe: copy instead */
        else if ((size_t)cap < d->limit)
            d->limit = (size_t)cap;
        room = d->limit - d->pending;
    }
    ssize_t n;
    if (d->pipe[0] >= 0) {
        n = splice(d->src->fd, NULL, d->pipe[1], NULL, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } else {
        if (!d->buf.data && md_buf_init(&d->buf, d->limit) < 0)
            return MD_ENOMEM;
        uint8_t *p = md_buf_reserve(&d->buf, &room);
        n = recv(d->src->fd, p, room, 0);
        if (n > 0)
            md_buf_commit(&d->buf, (size_t)n);
    }
    return n < 0 ? -errno : n;
}

/* Moves held bytes to dst. Returns >0 bytes or -errno (-EAGAIN: dst full). */
static ssize_t dir_out(struct dir *d)
{
    ssize_t n;
    if (d->pipe[0] >= 0) {
        n = splice(d->pipe[0], NULL, d->dst->fd, NULL, d->pending,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } else {
        n = send(d->dst->fd, md_buf_head(&d->buf), d->pending, MSG_NOSIGNAL);
        if (n > 0)
            md_buf_consume(&d->buf, (size_t)n);
    }
    return n < 0 ? -errno : n;
}

/* Runs one direction as far as it can go now. Returns 0, or -errno when a
 * side failed (the caller resets the session). */
static int dir_run(struct session *s, struct dir *d)
{
    struct ev_loop *loop = s->w->loop;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        while (d->pending > 0) {
            ssize_t n = dir_out(d);
            if (n == -EAGAIN)
                break;
            if (n < 0)
                return (int)n;
            d->pending -= (size_t)n;
            d->moved_out += (uint64_t)n;
            md_stats_add(d->tx_stat, n);
            s->last_active = ev_now(loop);
        }
        watch(loop, &d->dst->wio, d->pending > 0);
        if (d->src_eof) {
            if (d->pending == 0 && !d->dst->shut_wr) {
                shutdown(d->dst->fd, SHUT_WR);
                d->dst->shut_wr = true;
            }
            return 0;
        }
        if (d->pending >= d->limit) {
            watch(loop, &d->src->rio, false); /* backpressure: dst drains first */
            return 0;
        }
        ssize_t n = dir_in(s->w, d);
        if (n == -EAGAIN) {
            /* With bytes held, EAGAIN may mean the pipe ran out of slots
             * (partial pages) rather than an empty socket: wait for dst to
             * drain (its write watcher is on) instead of polling a readable
             * socket in a loop. */
            watch(loop, &d->src->rio, d->pending == 0);
            return 0;
        }
        if (n < 0)
            return (int)n;
        if (n == 0) {
            d->src_eof = true;
            watch(loop, &d->src->rio, false);
            continue;
        }
        d->pending += (size_t)n;
        d->moved_in += (uint64_t)n;
        md_stats_add(d->rx_stat, n);
        s->last_active = ev_now(loop);
    }
    /* Yielded with work left: both watchers are level-triggered, so the one
     * that can make progress fires again on the next loop pass. */
    watch(loop, &d->dst->wio, d->pending > 0);
    watch(loop, &d->src->rio, d->pending < d->limit);
    return 0;
}

static bool dir_done(const struct dir *d)
{
    return d->src_eof && d->pending == 0 && d->dst->shut_wr;
}

static void run(struct session *s, struct dir *d)
{
    int rc = dir_run(s, d);
    if (rc < 0) {
        session_free(s, true, rc == -ECONNRESET || rc == -EPIPE ? "peer_reset" : md_err_str(rc));
        return;
    }
    if (dir_done(&s->up) && dir_done(&s->down))
        session_free(s, false, "closed");
}

static void on_ds_read(struct ev_loop *l, ev_io *io, int ev)
{
    run(MD_CONTAINER_OF(io, struct session, ds.rio),
        &MD_CONTAINER_OF(io, struct session, ds.rio)->up);
}
static void on_us_read(struct ev_loop *l, ev_io *io, int ev)
{
    run(MD_CONTAINER_OF(io, struct session, us.rio),
        &MD_CONTAINER_OF(io, struct session, us.rio)->down);
}
static void on_us_write(struct ev_loop *l, ev_io *io, int ev)
{
    run(MD_CONTAINER_OF(io, struct session, us.wio),
        &MD_CONTAINER_OF(io, struct session, us.wio)->up);
}
static void on_ds_write(struct ev_loop *l, ev_io *io, int ev)
{
    run(MD_CONTAINER_OF(io, struct session, ds.wio),
        &MD_CONTAINER_OF(io, struct session, ds.wio)->down);
}

static void on_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct session *s = MD_CONTAINER_OF(t, struct session, idle);
    ev_tstamp timeout = s->l->tcp.idle_timeout_ms / 1000.0;
    ev_tstamp left = s->last_active + timeout - ev_now(loop);
    if (left > 0.001) {
        /* Activity since the timer was set: sleep for the rest ("be smart about timeouts"). */
        t->repeat = left;
        ev_timer_again(loop, t);
        return;
    }
    session_free(s, false, "idle_timeout");
}

static void on_ds_error(struct md_errwatch *ew, uint32_t events);
static void on_us_error(struct md_errwatch *ew, uint32_t events);

static void side_error(struct session *s, struct side *x)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(x->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err == 0)
        return; /* both FINs seen: the directions end on their own */
    session_free(s, true, err == ECONNRESET ? "peer_reset" : md_err_str(-err));
}

static void on_ds_error(struct md_errwatch *ew, uint32_t events)
{
    struct session *s = MD_CONTAINER_OF(ew, struct session, ds.ew);
    side_error(s, &s->ds);
}

static void on_us_error(struct md_errwatch *ew, uint32_t events)
{
    struct session *s = MD_CONTAINER_OF(ew, struct session, us.ew);
    side_error(s, &s->us);
}

static void on_connected(struct md_connect *c, struct md_sock *sock, const struct md_ep *ep,
                         int err)
{
    int fd = sock ? sock->fd : -1; /* plain: TLS clusters are refused for TCP proxies */
    struct session *s = MD_CONTAINER_OF(c, struct session, connect);
    struct md_worker *w = s->w;
    if (fd < 0) {
        md_stats_add(md_stats_c(w->stats, s->cl->idx, MD_CSTAT_UNAVAILABLE), 1);
        MD_LOG(MD_LOG_WARN, "upstream_unavailable",
               "session=%d.%llu listener=%s cluster=%s attempts=%u err=%s", w->id,
               (unsigned long long)s->id, s->l->name, s->cl->name, c->n_tried, md_err_str(err));
        session_free(s, true, "upstream_unavailable");
        return;
    }
    memcpy(s->ep, ep->label, sizeof(s->ep));
    md_lb_hold(&w->lbs[s->cl->idx], &ep->addr);
    s->held = true;
    md_outlier_report(w, s->cl, &ep->addr, MD_OUTLIER_SUCCESS); /* all a TCP proxy learns */
    s->us.fd = fd;
    s->us_connected = true;
    md_stats_add(md_stats_c(w->stats, s->cl->idx, MD_CSTAT_CX_ACTIVE), 1);
    ev_io_init(&s->us.rio, on_us_read, fd, EV_READ);
    ev_io_init(&s->us.wio, on_us_write, fd, EV_WRITE);
    s->last_active = ev_now(w->loop);
    ev_timer_init(&s->idle, on_idle, 0., s->l->tcp.idle_timeout_ms / 1000.0);
    ev_timer_again(w->loop, &s->idle);
    ev_io_start(w->loop, &s->ds.rio);
    ev_io_start(w->loop, &s->us.rio);
    /* Without it a reset on a paused or half-closed side waits for the idle timeout. */
    md_errwatch_add(&w->errwatch, s->ds.fd, &s->ds.ew, on_ds_error);
    md_errwatch_add(&w->errwatch, fd, &s->us.ew, on_us_error);
}

static void dir_init(struct dir *d, struct side *src, struct side *dst,
                     const struct md_snap_listener *l, uint64_t *rx, uint64_t *tx)
{
    d->src = src;
    d->dst = dst;
    d->pipe[0] = d->pipe[1] = -1;
    d->limit = l->tcp.buffer_limit;
    d->splice = l->tcp.splice;
    d->rx_stat = rx;
    d->tx_stat = tx;
}

/* RING_HASH / MAGLEV with a source_ip hash policy: the client's address
 * keeps reaching the same endpoint (header policies mean nothing here). */
static void source_hash(const struct md_snap_cluster *cl, int fd, struct md_lb_ctx *ctx)
{
    for (size_t k = 0; k < cl->n_hash_policies; k++) {
        char ip[INET6_ADDRSTRLEN] = "";
        if (!cl->hash_policies[k].header)
            md_addr_peer_ip(fd, ip, sizeof(ip));
        if (ip[0]) {
            ctx->has_hash = true;
            ctx->hash = md_hash64(ip, strlen(ip));
            return;
        }
    }
}

void md_tcp_proxy_start(struct md_worker *w, const struct md_snap_listener *l, int fd)
{
    struct md_lb_ctx ctx = {0};
    struct md_stats *st = w->stats;
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        MD_LOG(MD_LOG_ERROR, "out_of_memory", "listener=%s what=tcp_session", l->name);
        md_sock_close_reset(fd);
        return;
    }
    s->w = w;
    s->l = l;
    s->cl = &w->snap->clusters[l->tcp.cluster];
    s->id = ++w->next_session_id;
    s->ds.fd = fd;
    s->us.fd = -1;
    s->started = ev_now(w->loop);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ev_io_init(&s->ds.rio, on_ds_read, fd, EV_READ);
    ev_io_init(&s->ds.wio, on_ds_write, fd, EV_WRITE);
    ev_init(&s->idle, on_idle);
    dir_init(&s->up, &s->ds, &s->us, l, md_stats_l(st, l->idx, MD_LSTAT_RX_BYTES),
             md_stats_c(st, s->cl->idx, MD_CSTAT_TX_BYTES));
    dir_init(&s->down, &s->us, &s->ds, l, md_stats_c(st, s->cl->idx, MD_CSTAT_RX_BYTES),
             md_stats_l(st, l->idx, MD_LSTAT_TX_BYTES));
    md_list_insert_tail(&w->sessions, &s->link);
    __atomic_add_fetch(&w->active, 1, __ATOMIC_RELAXED);
    md_stats_add(md_stats_l(st, l->idx, MD_LSTAT_CX_TOTAL), 1);
    md_stats_add(md_stats_l(st, l->idx, MD_LSTAT_CX_ACTIVE), 1);
    /* Over the cluster's max_connections the client's connection is closed
     * at once: TCP has no way to say why. */
    if (!md_breakers_take(md_breakers_of(w, s->cl->idx), MD_BREAKER_CONNECTIONS)) {
        md_breakers_overflowed(w, s->cl->idx, MD_BREAKER_CONNECTIONS);
        session_free(s, true, "overflow");
        return;
    }
    s->cx_slot = true;
    /* Downstream is not read until the upstream is connected: its bytes wait
     * in the kernel, which bounds them. */
    source_hash(s->cl, fd, &ctx);
    ctx.load = md_lb_sessions; /* LEAST_REQUEST: the endpoint with fewer sessions */
    ctx.load_arg = &w->lbs[s->cl->idx];
    md_connect_start(&s->connect, w, s->cl, s->id, NULL, &ctx, on_connected);
}

void md_tcp_proxy_close_all(struct md_worker *w)
{
    while (!md_list_empty(&w->sessions))
        session_free(MD_CONTAINER_OF(w->sessions.next, struct session, link), false, "shutdown");
}
