/* SPDX-License-Identifier: Apache-2.0 */
#include "net/listener.h"

#include "codec/h1_server.h"
#include "codec/h2_server.h"
#include "net/detect.h"
#include "net/tls_accept.h"
#include "codec/tcp_proxy.h"
#include "core/err.h"
#include "core/log.h"
#include "filter/ratelimit.h"
#include "loop/worker.h"

#include <stdlib.h>
#include <unistd.h>

#define BACKLOG 4096

/* connection_rate_limit, from the budget all workers share: over it the
 * connection is closed before a byte is read. Returns false when refused. */
static bool conn_admitted(struct md_listener *ln)
{
    const struct md_snap_rate_limit *q = ln->cfg->conn_rate_limit;
    struct md_worker *w = ln->w;
    uint64_t wait = md_ratelimit_take(w->ratelimits[q->idx], NULL, 0, md_ratelimit_now());
    md_stats_add(md_stats_q(w->stats, q->idx, wait ? MD_QSTAT_LIMITED : MD_QSTAT_ALLOWED), 1);
    if (wait)
        MD_LOG(MD_LOG_DEBUG, "conn_rate_limited", "listener=%s worker=%d next_token_ms=%.1f",
               ln->cfg->name, w->id, (double)wait / 1e6);
    return !wait;
}

static void on_conn(struct md_acceptor *a, int fd)
{
    struct md_listener *ln = MD_CONTAINER_OF(a, struct md_listener, acc);
    const struct md_snap_listener *l = ln->cfg;
    if (l->conn_rate_limit && ln->w->ratelimits && !conn_admitted(ln)) {
        close(fd);
        return;
    }
    if (l->handler == MD_HANDLER_TCP_PROXY)
        md_tcp_proxy_start(ln->w, l, fd);
    else if (l->http.codec == MD_HTTP_CODEC_AUTO)
        md_detect_start(ln->w, l, fd);
    else if (l->tls)
        md_tls_accept_start(ln->w, l, fd);
    else if (l->http.codec == MD_HTTP_CODEC_H2C)
        md_h2_server_start(ln->w, l, md_sock_plain(fd));
    else
        md_h1_server_start(ln->w, l, md_sock_plain(fd));
}

static void on_exhausted(struct md_acceptor *a, int err)
{
    struct md_listener *ln = MD_CONTAINER_OF(a, struct md_listener, acc);
    md_stats_add(md_stats_l(ln->w->stats, ln->cfg->idx, MD_LSTAT_FD_EXHAUSTED), 1);
    MD_LOG(MD_LOG_WARN, "accept_fd_exhausted", "listener=%s worker=%d err=%s pause_ms=100",
           ln->cfg->name, ln->w->id, md_err_str(err));
}

struct md_listener *md_listener_new(struct md_worker *w, const struct md_snap_listener *cfg,
                                    int *err)
{
    struct md_listener *ln = calloc(1, sizeof(*ln));
    if (!ln) {
        *err = MD_ENOMEM;
        return NULL;
    }
    ln->w = w;
    ln->cfg = cfg;
    const char *step;
    int fd = md_acceptor_listen((const struct sockaddr *)&cfg->addr.ss, cfg->addr.len, true,
                                BACKLOG, &step);
    if (fd < 0) {
        *err = fd;
        MD_LOG(MD_LOG_ERROR, "listener_bind_failed", "listener=%s addr=%s step=%s err=%s",
               cfg->name, cfg->label, step, md_err_str(fd));
        free(ln);
        return NULL;
    }
    md_acceptor_init(&ln->acc, w->loop, fd, &w->reserve_fd, on_conn, on_exhausted);
    ln->acc.keep_reserve = true; /* the reserve is admin's and open connections' */
    return ln;
}

void md_listener_start(struct md_listener *ln)
{
    md_acceptor_start(&ln->acc);
}

void md_listener_close(struct md_listener *ln)
{
    md_acceptor_close(&ln->acc);
}

void md_listener_free(struct md_listener *ln)
{
    if (!ln)
        return;
    md_listener_close(ln);
    free(ln);
}
