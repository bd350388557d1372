/* SPDX-License-Identifier: Apache-2.0 */
#include "net/linger.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define DISCARD_BUF 16384
#define READS_PER_EVENT 16

struct lsock {
    struct md_list link; /* in set->socks */
    struct md_linger_set *set;
    struct md_sock sock; /* ssl set only until close_notify is out */
    ev_io io;            /* EV_WRITE for close_notify, then EV_READ */
    ev_timer timer;
    ev_tstamp last, until; /* last byte from the peer; the cap */
};

static void set_count(struct md_linger_set *ls, size_t n)
{
    __atomic_store_n(&ls->n, n, __ATOMIC_RELAXED);
}

static void entry_free(struct lsock *e)
{
    struct md_linger_set *ls = e->set;
    ev_io_stop(ls->loop, &e->io);
    ev_timer_stop(ls->loop, &e->timer);
    md_list_remove(&e->link);
    md_sock_close(&e->sock, false); /* close_notify is out or given up on: no retry */
    free(e);
    set_count(ls, ls->n - 1);
    if (ls->n == 0 && ls->on_empty)
        ls->on_empty(ls);
}

/* When the socket is closed unless the peer sends: the earlier of the
 * inactivity timeout and the cap (and at exit, the exit deadline). */
static ev_tstamp deadline(const struct lsock *e)
{
    ev_tstamp t = e->last + MD_LINGER_TIMEOUT_S;
    if (e->until < t)
        t = e->until;
    if (e->set->exit_by && e->set->exit_by < t)
        t = e->set->exit_by;
    return t;
}

static void arm(struct lsock *e)
{
    ev_tstamp left = deadline(e) - ev_now(e->set->loop);
    ev_timer_stop(e->set->loop, &e->timer);
    ev_timer_set(&e->timer, left > 0 ? left : 0., 0.);
    ev_timer_start(e->set->loop, &e->timer);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct lsock *e = MD_CONTAINER_OF(t, struct lsock, timer);
    if (ev_now(loop) >= deadline(e) - 1e-3) {
        entry_free(e);
        return;
    }
    arm(e); /* the peer sent since: reading moves `last`, not the timer */
}

/* Reads and drops what the peer sent. Returns false once the socket is
 * done (EOF or an error); sets *got when bytes came. */
static bool drop_input(int fd, bool *got)
{
    char buf[DISCARD_BUF];
    for (int i = 0; i < READS_PER_EVENT; i++) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            *got = true;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && errno == EAGAIN;
    }
    return true;
}

/* FIN sent: wait for the peer's bytes (raw from now on: what it sends is
 * dropped, so there is nothing to decrypt). */
static void start_reading(struct lsock *e)
{
    struct ev_loop *loop = e->set->loop;
    ev_io_stop(loop, &e->io);
    ev_io_set(&e->io, e->sock.fd, EV_READ);
    ev_io_start(loop, &e->io);
}

/* TLS: close_notify (retried while the socket is full), then FIN. */
static void shut_tls(struct lsock *e)
{
    struct ev_loop *loop = e->set->loop;
    if (md_sock_close_notify(&e->sock) == -EAGAIN) {
        ev_io_stop(loop, &e->io);
        ev_io_set(&e->io, e->sock.fd, EV_WRITE);
        ev_io_start(loop, &e->io);
        return;
    }
    SSL_free(e->sock.ssl);
    e->sock.ssl = NULL;
    shutdown(e->sock.fd, SHUT_WR);
    start_reading(e);
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct lsock *e = MD_CONTAINER_OF(io, struct lsock, io);
    bool got = false;
    if (revents & EV_WRITE)
        shut_tls(e);
    else if (!drop_input(e->sock.fd, &got))
        entry_free(e);
    else if (got)
        e->last = ev_now(loop); /* the timer sees it when it fires */
}

void md_linger_init(struct md_linger_set *ls, struct ev_loop *loop, size_t max)
{
    ls->loop = loop;
    md_list_init(&ls->socks);
    ls->n = 0;
    ls->max = max;
    ls->exit_by = 0;
    ls->on_empty = NULL;
}

void md_linger_close(struct md_linger_set *ls, struct md_sock *s, bool reset)
{
    if (s->fd < 0)
        return;
    if (reset || ls->n >= ls->max) {
        md_sock_close(s, reset);
        return;
    }
    bool got = false;
    if (!s->ssl) {
        /* Often the peer has closed already (its EOF waits unread): then
         * nothing is left to wait for. */
        shutdown(s->fd, SHUT_WR);
        if (!drop_input(s->fd, &got)) {
            md_sock_close(s, false);
            return;
        }
    }
    struct lsock *e = malloc(sizeof(*e));
    if (!e) {
        md_sock_close(s, false);
        return;
    }
    e->set = ls;
    e->sock = md_sock_plain(s->fd);
    e->sock.ssl = s->ssl;
    e->sock.tls_failed = s->tls_failed;
    s->ssl = NULL;
    s->fd = -1;
    md_sock_close(s, false); /* the identities */
    md_list_insert_tail(&ls->socks, &e->link);
    set_count(ls, ls->n + 1);
    e->last = ev_now(ls->loop);
    e->until = e->last + MD_LINGER_TIME_S;
    ev_io_init(&e->io, on_io, e->sock.fd, EV_READ);
    ev_init(&e->timer, on_timer);
    if (e->sock.ssl)
        shut_tls(e);
    else
        start_reading(e);
    arm(e);
}

size_t md_linger_count(const struct md_linger_set *ls)
{
    return __atomic_load_n(&ls->n, __ATOMIC_RELAXED);
}

void md_linger_exit(struct md_linger_set *ls, double within,
                    void (*on_empty)(struct md_linger_set *ls))
{
    if (within <= 0) {
        ls->max = 0;
        md_linger_fini(ls);
    } else {
        ls->exit_by = ev_now(ls->loop) + within;
        for (struct md_list *it = ls->socks.next; it != &ls->socks; it = it->next)
            arm(MD_CONTAINER_OF(it, struct lsock, link));
    }
    ls->on_empty = on_empty;
    if (ls->n == 0 && on_empty)
        on_empty(ls);
}

void md_linger_fini(struct md_linger_set *ls)
{
    if (!ls->loop)
        return;
    ls->on_empty = NULL;
    while (!md_list_empty(&ls->socks))
        entry_free(MD_CONTAINER_OF(ls->socks.next, struct lsock, link));
}
