/* SPDX-License-Identifier: Apache-2.0 */
#include "net/tls_accept.h"

#include "codec/h1_server.h"
#include "codec/h2_server.h"
#include "core/addr.h"
#include "core/log.h"
#include "loop/worker.h"
#include "net/sock.h"
#include "tls/tls_creds.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct handshake {
    struct md_list link; /* in worker->tls_accepting */
    struct md_worker *w;
    const struct md_snap_listener *l;
    struct md_sock sock;
    ev_io io;
    ev_timer timer;
};

static void end(struct handshake *h)
{
    ev_io_stop(h->w->loop, &h->io);
    ev_timer_stop(h->w->loop, &h->timer);
    md_list_remove(&h->link);
    free(h);
}

static void fail(struct handshake *h, const char *why)
{
    char peer[INET6_ADDRSTRLEN];
    md_addr_peer_ip(h->sock.fd, peer, sizeof(peer));
    md_stats_add(md_stats_l(h->w->stats, h->l->idx, MD_LSTAT_TLS_HANDSHAKE_ERROR), 1);
    MD_LOG(MD_LOG_INFO, "tls_handshake_failed", "listener=%s peer=%s reason=\"%s\"", h->l->name,
           peer, why);
    md_sock_close(&h->sock, false);
    end(h);
}

/* ALPN's choice; without ALPN, the listener's codec (AUTO: HTTP/1.1, as a
 * client that names no protocol is most likely an HTTP/1.1 one). */
static bool speaks_h2(const struct handshake *h)
{
    const unsigned char *p;
    unsigned len;
    SSL_get0_alpn_selected(h->sock.ssl, &p, &len);
    if (len)
        return len == 2 && memcmp(p, "h2", 2) == 0;
    return h->l->http.codec == MD_HTTP_CODEC_H2C;
}

static void step(struct handshake *h)
{
    char why[512];
    int events = 0;
    int rc = md_sock_handshake(&h->sock, &events, why, sizeof(why));
    if (rc == -EAGAIN) {
        ev_io_stop(h->w->loop, &h->io);
        ev_io_set(&h->io, h->sock.fd, events);
        ev_io_start(h->w->loop, &h->io);
        return;
    }
    if (rc < 0) {
        fail(h, why);
        return;
    }
    if (md_sock_note_identities(&h->sock, why, sizeof(why)) < 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "client certificate: %s", why);
        fail(h, msg);
        return;
    }
    struct md_worker *w = h->w;
    const struct md_snap_listener *l = h->l;
    struct md_sock sock = h->sock;
    bool h2 = speaks_h2(h);
    md_stats_add(md_stats_l(w->stats, l->idx, MD_LSTAT_TLS_HANDSHAKE), 1);
    end(h);
    if (h2)
        md_h2_server_start(w, l, sock);
    else
        md_h1_server_start(w, l, sock);
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    step(MD_CONTAINER_OF(io, struct handshake, io));
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    fail(MD_CONTAINER_OF(t, struct handshake, timer), "handshake timeout");
}

void md_tls_accept_start(struct md_worker *w, const struct md_snap_listener *l, int fd)
{
    struct handshake *h = calloc(1, sizeof(*h));
    SSL *ssl = h ? md_tls_creds_ssl(l->tls->files.creds) : NULL;
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        MD_LOG(MD_LOG_ERROR, "out_of_memory", "listener=%s what=tls_handshake", l->name);
        SSL_free(ssl);
        free(h);
        close(fd);
        return;
    }
    SSL_set_accept_state(ssl);
    h->w = w;
    h->l = l;
    h->sock = (struct md_sock){.fd = fd, .ssl = ssl};
    ev_init(&h->io, on_io);
    ev_timer_init(&h->timer, on_timeout, l->tls->handshake_timeout_ms / 1000.0, 0.);
    ev_timer_start(w->loop, &h->timer);
    md_list_insert_tail(&w->tls_accepting, &h->link);
    step(h);
}

void md_tls_accept_close_all(struct md_worker *w)
{
    while (!md_list_empty(&w->tls_accepting)) {
        struct handshake *h = MD_CONTAINER_OF(w->tls_accepting.next, struct handshake, link);
        md_sock_close(&h->sock, false);
        end(h);
    }
}
