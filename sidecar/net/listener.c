/* SPDX-License-Identifier: Apache-2.0 */
#include "net/listener.h"

#include "codec/tcp_proxy.h"
#include "core/err.h"
#include "core/log.h"
#include "loop/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPTS_PER_WAKEUP 64
#define BACKLOG 4096
#define EMFILE_PAUSE_S 0.1

static void on_accept(struct ev_loop *loop, ev_io *io, int revents);

static void shed_one(struct md_listener *ln)
{
    /* The reserve fd makes room for exactly one accept, so the oldest pending
     * client gets a reset now instead of waiting in the backlog. */
    struct md_worker *w = ln->w;
    if (w->reserve_fd < 0)
        return;
    close(w->reserve_fd);
    int fd = accept4(ln->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_backoff(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_listener *ln = MD_CONTAINER_OF(t, struct md_listener, backoff);
    if (ln->fd >= 0)
        ev_io_start(loop, &ln->io);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct md_listener *ln = MD_CONTAINER_OF(io, struct md_listener, io);
    struct md_worker *w = ln->w;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        int fd = accept4(ln->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            md_tcp_proxy_start(w, ln->cfg, fd);
            continue;
        }
        switch (errno) {
        case EAGAIN: return;
        case EINTR:
        case ECONNABORTED: continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            md_stats_add(md_stats_l(w->stats, ln->cfg->idx, MD_LSTAT_FD_EXHAUSTED), 1);
            MD_LOG(MD_LOG_WARN, "accept_fd_exhausted", "listener=%s worker=%d err=%s pause_ms=%d",
                   ln->cfg->name, w->id, md_err_str(-errno), (int)(EMFILE_PAUSE_S * 1000));
            shed_one(ln);
            ev_io_stop(loop, &ln->io);
            ev_timer_set(&ln->backoff, EMFILE_PAUSE_S, 0.);
            ev_timer_start(loop, &ln->backoff);
            return;
        default:
            MD_LOG(MD_LOG_ERROR, "accept_failed", "listener=%s worker=%d err=%s", ln->cfg->name,
                   w->id, md_err_str(-errno));
            return;
        }
    }
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
    const char *step = "socket";
    ln->fd = socket(cfg->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (ln->fd >= 0) {
        step = "setsockopt";
        if (setsockopt(ln->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
            setsockopt(ln->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0) {
            step = "bind";
            if (bind(ln->fd, (const struct sockaddr *)&cfg->addr.ss, cfg->addr.len) == 0) {
                step = "listen";
                if (listen(ln->fd, BACKLOG) == 0) {
                    ev_io_init(&ln->io, on_accept, ln->fd, EV_READ);
                    ev_init(&ln->backoff, on_backoff);
                    return ln;
                }
            }
        }
    }
    *err = -errno;
    MD_LOG(MD_LOG_ERROR, "listener_bind_failed", "listener=%s addr=%s step=%s err=%s", cfg->name,
           cfg->label, step, md_err_str(*err));
    if (ln->fd >= 0)
        close(ln->fd);
    free(ln);
    return NULL;
}

void md_listener_start(struct md_listener *ln)
{
    ev_io_start(ln->w->loop, &ln->io);
}

void md_listener_close(struct md_listener *ln)
{
    if (ln->fd < 0)
        return;
    ev_io_stop(ln->w->loop, &ln->io);
    ev_timer_stop(ln->w->loop, &ln->backoff);
    close(ln->fd);
    ln->fd = -1;
}

void md_listener_free(struct md_listener *ln)
{
    if (!ln)
        return;
    md_listener_close(ln);
    free(ln);
}
