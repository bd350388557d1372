/* SPDX-License-Identifier: Apache-2.0 */
#include "net/detect.h"

#include "codec/h1_server.h"
#include "codec/h2_server.h"
#include "codec/tcp_proxy.h"
#include "core/log.h"
#include "loop/worker.h"
#include "net/tls_accept.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* RFC 9113 §3.4 */
static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(PREFACE) - 1)
/* Longer than any method token (the longest registered, UPDATEREDIRECTREF, is 17). */
#define MAX_METHOD 20
/* Bytes that only began to arrive: look again this soon. */
#define REPEEK_S 0.002
#define REPEEK_MAX_S 0.05

struct detect {
    struct md_list link; /* in worker->detecting */
    struct md_worker *w;
    const struct md_snap_listener *l;
    int fd;
    ev_io io;
    ev_timer timer;
    ev_tstamp idle_deadline;   /* nothing decided by then: closed */
    ev_tstamp silent_deadline; /* nothing received by then: server-first (0: never) */
    ev_tstamp stall_deadline;  /* only a prefix by then: its likely codec takes it */
    ev_tstamp repeek;          /* the wait before peeking at a prefix again */
    ev_tstamp headers_deadline; /* a plaintext prefix with no fallback: closed by then (0: none) */
};

enum md_detect_kind md_detect_classify(const uint8_t *b, size_t n)
{
    if (n == 0)
        return MD_DETECT_MORE;
    if (memcmp(b, PREFACE, n < PREFACE_LEN ? n : PREFACE_LEN) == 0)
        return n >= PREFACE_LEN ? MD_DETECT_H2 : MD_DETECT_MORE;
    /* TLS record: handshake (22), then the major version 3 (RFC 8446 §5.1) */
    if (b[0] == 0x16)
        return n == 1 ? MD_DETECT_MORE : b[1] == 3 ? MD_DETECT_TLS : MD_DETECT_OTHER;
    /* RFC 9112 §3: method SP; registered methods are upper case, '-' and '_' */
    for (size_t i = 0; i < n && i <= MAX_METHOD; i++) {
        uint8_t c = b[i];
        if (c == ' ')
            return i > 0 ? MD_DETECT_HTTP1 : MD_DETECT_OTHER;
        if (!((c >= 'A' && c <= 'Z') || c == '-' || c == '_'))
            return MD_DETECT_OTHER;
    }
    return n <= MAX_METHOD ? MD_DETECT_MORE : MD_DETECT_OTHER;
}

static void finish(struct detect *d)
{
    struct md_worker *w = d->w;
    ev_io_stop(w->loop, &d->io);
    ev_timer_stop(w->loop, &d->timer);
    md_list_remove(&d->link);
    free(d);
}

static void close_undecided(struct detect *d, const char *why)
{
    MD_LOG(MD_LOG_DEBUG, "detect_closed", "listener=%s reason=%s", d->l->name, why);
    md_stats_add(md_stats_l(d->w->stats, d->l->idx, MD_LSTAT_DETECT_NONE), 1);
    close(d->fd);
    finish(d);
}

/* Hands the connection to what |k| says (MD_DETECT_MORE: silence). */
static void hand_over(struct detect *d, enum md_detect_kind k)
{
    struct md_worker *w = d->w;
    const struct md_snap_listener *l = d->l;
    int fd = d->fd;
    bool fallback = l->http.tcp_fallback;
    if (l->tls && k != MD_DETECT_TLS && !l->tls->allow_plaintext) {
        MD_LOG(MD_LOG_INFO, "tls_plaintext_refused",
               "listener=%s reason=\"not a TLS ClientHello on a TLS listener without "
               "allow_plaintext\"",
               l->name);
        md_stats_add(md_stats_l(w->stats, l->idx, MD_LSTAT_TLS_PLAINTEXT_REFUSED), 1);
        close(fd);
        finish(d);
        return;
    }
    if (k == MD_DETECT_TLS && !l->tls && !fallback) {
        MD_LOG(MD_LOG_INFO, "detect_tls_refused",
               "listener=%s reason=\"TLS ClientHello on a listener without TLS or "
               "tcp_fallback\"",
               l->name);
        close_undecided(d, "tls");
        return;
    }
    finish(d);
    struct md_stats *st = w->stats;
    switch (k) {
    case MD_DETECT_H2:
        md_stats_add(md_stats_l(st, l->idx, MD_LSTAT_DETECT_H2), 1);
        md_h2_server_start(w, l, md_sock_plain(fd));
        break;
    case MD_DETECT_HTTP1:
        md_stats_add(md_stats_l(st, l->idx, MD_LSTAT_DETECT_HTTP1), 1);
        md_h1_server_start(w, l, md_sock_plain(fd));
        break;
    case MD_DETECT_TLS:
        md_stats_add(md_stats_l(st, l->idx, MD_LSTAT_DETECT_TLS), 1);
        if (l->tls)
            md_tls_accept_start(w, l, fd);
        else
            md_tcp_proxy_start(w, l, fd);
        break;
    case MD_DETECT_OTHER:
        /* No fallback: HTTP/1.1 answers it with a 400 that says why. */
        md_stats_add(md_stats_l(st, l->idx, fallback ? MD_LSTAT_DETECT_TCP : MD_LSTAT_DETECT_HTTP1),
                     1);
        if (fallback)
            md_tcp_proxy_start(w, l, fd);
        else
            md_h1_server_start(w, l, md_sock_plain(fd));
        break;
    default:
        md_stats_add(md_stats_l(st, l->idx, MD_LSTAT_DETECT_TIMEOUT), 1);
        md_tcp_proxy_start(w, l, fd);
        break;
    }
}

static void arm(struct detect *d, ev_tstamp at)
{
    struct ev_loop *loop = d->w->loop;
    ev_tstamp after = at - ev_now(loop);
    ev_timer_stop(loop, &d->timer); /* setting an active timer is ignored */
    ev_timer_set(&d->timer, after > 0 ? after : 0, 0.);
    ev_timer_start(loop, &d->timer);
}

/* Has the peer sent its FIN? (Bytes it sent before still wait unread.) */
static bool peer_closed(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void decide(struct detect *d)
{
    uint8_t buf[PREFACE_LEN];
    ssize_t n = recv(d->fd, buf, sizeof(buf), MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        close_undecided(d, n == 0 ? "eof" : "error");
        return;
    }
    struct ev_loop *loop = d->w->loop;
    ev_tstamp now = ev_now(loop);
    enum md_detect_kind k = md_detect_classify(buf, n > 0 ? (size_t)n : 0);
    if (k != MD_DETECT_MORE) {
        hand_over(d, k);
        return;
    }
    if (n < 0) { /* silent so far */
        if (d->silent_deadline && now >= d->silent_deadline) {
            hand_over(d, MD_DETECT_MORE); /* a server-first protocol */
        } else if (now >= d->idle_deadline) {
            close_undecided(d, "idle_timeout");
        } else {
            ev_io_start(loop, &d->io);
            arm(d, d->silent_deadline ? d->silent_deadline : d->idle_deadline);
        }
        return;
    }
    if (peer_closed(d->fd)) {
        close_undecided(d, "eof"); /* a prefix, then FIN: peeking cannot see it */
        return;
    }
    if (!d->headers_deadline && !d->l->http.tcp_fallback && buf[0] != 0x16) {
        /* A partial method or preface is a request's first bytes: the
         * request-headers timeout runs from here, as it would in a codec. */
        d->headers_deadline = now + d->l->http.request_headers_timeout_ms / 1000.0;
        if (d->headers_deadline < d->stall_deadline)
            d->stall_deadline = d->headers_deadline;
    }
    if (d->headers_deadline && now >= d->headers_deadline) {
        close_undecided(d, "request_headers_timeout");
        return;
    }
    if (now >= d->stall_deadline) {
        /* A client that began and stalled goes where its first bytes point;
         * that codec's own timeouts apply from here. */
        hand_over(d, memcmp(buf, PREFACE, (size_t)n) == 0 ? MD_DETECT_H2
                     : buf[0] == 0x16                     ? MD_DETECT_TLS
                                                          : MD_DETECT_HTTP1);
        return;
    }
    /* A prefix only: wait for the rest without spinning on a readable
     * socket, looking less often the longer it takes. */
    ev_io_stop(loop, &d->io);
    d->repeek = !d->repeek ? REPEEK_S : d->repeek * 2 < REPEEK_MAX_S ? d->repeek * 2 : REPEEK_MAX_S;
    arm(d, now + d->repeek < d->stall_deadline ? now + d->repeek : d->stall_deadline);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    decide(MD_CONTAINER_OF(io, struct detect, io));
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    decide(MD_CONTAINER_OF(t, struct detect, timer));
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
    ev_tstamp now = ev_now(w->loop);
    /* A client that says nothing and has nowhere else to go gets the
     * listener's idle timeout. */
    double idle = l->http.idle_timeout_ms / 1000.0;
    if (l->tls) /* a TLS client that sends no ClientHello fails its handshake */
        idle = l->tls->handshake_timeout_ms / 1000.0;
    d->idle_deadline = now + (idle > 0 ? idle : 3600);
    if (l->http.tcp_fallback)
        d->silent_deadline = now + l->http.detect_timeout_ms / 1000.0;
    /* With a fallback, a stalled prefix is decided at the detect timeout;
     * without one there is no hurry (and nothing better to do with it). */
    d->stall_deadline = d->silent_deadline ? d->silent_deadline : d->idle_deadline;
    ev_io_init(&d->io, on_readable, fd, EV_READ);
    ev_init(&d->timer, on_timer);
    ev_io_start(w->loop, &d->io);
    arm(d, d->silent_deadline ? d->silent_deadline : d->idle_deadline);
    md_list_insert_tail(&w->detecting, &d->link);
}

void md_detect_close_all(struct md_worker *w)
{
    while (!md_list_empty(&w->detecting))
        close_undecided(MD_CONTAINER_OF(w->detecting.next, struct detect, link), "shutdown");
}
