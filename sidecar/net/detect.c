/* SPDX-License-Identifier: Apache-2.0 */
#include "net/detect.h"

#include "codec/h1_server.h"
#include "codec/h2_server.h"
#include "core/log.h"
#include "loop/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* RFC 9113 §3.4 */
static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(PREFACE) - 1)
/* A preface split across segments: look again this soon. */
#define REPEEK_S 0.002

struct detect {
    struct md_list link; /* in worker->detecting */
    struct md_worker *w;
    const struct md_snap_listener *l;
    int fd;
    ev_io io;
    ev_timer timer;
    ev_tstamp deadline;
};

static void finish(struct detect *d, bool keep)
{
    struct md_worker *w = d->w;
    if (!keep)
        md_stats_add(md_stats_l(w->stats, d->l->idx, MD_LSTAT_DETECT_NONE), 1);
    ev_io_stop(w->loop, &d->io);
    ev_timer_stop(w->loop, &d->timer);
    md_list_remove(&d->link);
    if (!keep)
        close(d->fd);
    free(d);
}

static void decide(struct detect *d)
{
    char buf[PREFACE_LEN];
    ssize_t n = recv(d->fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        finish(d, false);
        return;
    }
    bool h2 = memcmp(buf, PREFACE, (size_t)n) == 0;
    if (h2 && (size_t)n < PREFACE_LEN) {
        /* Could still be either: wait for the rest without spinning on a
         * readable socket. */
        ev_io_stop(d->w->loop, &d->io);
        ev_timer_stop(d->w->loop, &d->timer); /* setting an active timer is ignored */
        ev_timer_set(&d->timer, REPEEK_S, 0.);
        ev_timer_start(d->w->loop, &d->timer);
        return;
    }
    struct md_worker *w = d->w;
    const struct md_snap_listener *l = d->l;
    int fd = d->fd;
    finish(d, true);
    md_stats_add(md_stats_l(w->stats, l->idx, h2 ? MD_LSTAT_DETECT_H2 : MD_LSTAT_DETECT_HTTP1), 1);
    if (h2)
        md_h2_server_start(w, l, fd);
    else
        md_h1_server_start(w, l, fd);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    decide(MD_CONTAINER_OF(io, struct detect, io));
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct detect *d = MD_CONTAINER_OF(t, struct detect, timer);
    if (ev_now(loop) >= d->deadline) {
        MD_LOG(MD_LOG_DEBUG, "detect_timeout", "listener=%s", d->l->name);
        finish(d, false);
        return;
    }
    /* Re-peek; the deadline stays armed while undecided. */
    ev_timer_set(t, d->deadline - ev_now(loop), 0.);
    ev_timer_start(loop, t);
    ev_io_start(loop, &d->io);
    decide(d);
}

void md_detect_start(struct md_worker *w, const struct md_snap_listener *l, int fd)
{
    struct detect *d = calloc(1, sizeof(*d));
    if (!d) {
        close(fd);
        return;
    }
    d->w = w;
    d->l = l;
    d->fd = fd;
    /* A client that says nothing gets the listener's idle timeout. */
    double idle = l->http.idle_timeout_ms / 1000.0;
    d->deadline = ev_now(w->loop) + (idle > 0 ? idle : 3600);
    ev_io_init(&d->io, on_readable, fd, EV_READ);
    ev_timer_init(&d->timer, on_timer, d->deadline - ev_now(w->loop), 0.);
    ev_io_start(w->loop, &d->io);
    ev_timer_start(w->loop, &d->timer);
    md_list_insert_tail(&w->detecting, &d->link);
}

void md_detect_close_all(struct md_worker *w)
{
    while (!md_list_empty(&w->detecting))
        finish(MD_CONTAINER_OF(w->detecting.next, struct detect, link), false);
}
