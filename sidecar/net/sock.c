/* SPDX-License-Identifier: Apache-2.0 */
#include "net/sock.h"

#include "core/addr.h"
#include "core/stats.h"
#include "tls/tls_ctx.h"

#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* SSL_get_error for a failed call |r|, as -errno; marks fatal ones. */
static int tls_error(struct md_sock *s, int r)
{
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return -EAGAIN;
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    s->tls_failed = true;
    int rc = e == SSL_ERROR_SYSCALL && errno ? -errno : -EPROTO;
    ERR_clear_error();
    return rc;
}

ssize_t md_sock_recv(struct md_sock *s, void *buf, size_t len)
{
    if (!s->ssl) {
        for (;;) {
            ssize_t n = recv(s->fd, buf, len, 0);
            if (n >= 0)
                return n;
            if (errno != EINTR)
                return -errno;
        }
    }
    /* One SSL_read returns one record at most: read on until the buffer is
     * full or the socket drained, so that a short read means what it means
     * on a plain socket. */
    size_t got = 0;
    while (got < len) {
        size_t n = 0;
        ERR_clear_error();
        if (SSL_read_ex(s->ssl, (uint8_t *)buf + got, len - got, &n) == 1) {
            got += n;
            continue;
        }
        if (got)
            break; /* the condition comes back on the next call */
        return tls_error(s, 0);
    }
    return (ssize_t)got;
}

int md_sock_flush(struct md_sock *s, struct md_outbuf *o, uint64_t *tx_stat)
{
    size_t off = 0;
    int rc = 0;
    while (off < o->len) {
        size_t n;
        if (s->ssl) {
            ERR_clear_error();
            if (SSL_write_ex(s->ssl, o->data + off, o->len - off, &n) != 1) {
                rc = tls_error(s, 0);
                if (rc == 0)
                    rc = -EPIPE; /* close_notify came: nothing more may be sent */
                break;
            }
        } else {
            ssize_t w = send(s->fd, o->data + off, o->len - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = -errno;
                break;
            }
            n = (size_t)w;
        }
        off += n;
        if (tx_stat)
            md_stats_add(tx_stat, n);
    }
    memmove(o->data, o->data + off, o->len - off);
    o->len -= off;
    return rc;
}

int md_sock_close_notify(struct md_sock *s)
{
    if (!s->ssl || s->tls_failed || !SSL_is_init_finished(s->ssl))
        return 0;
    ERR_clear_error();
    int r = SSL_shutdown(s->ssl); /* the peer's close_notify is not awaited */
    int rc = r < 0 && SSL_get_error(s->ssl, r) == SSL_ERROR_WANT_WRITE ? -EAGAIN : 0;
    ERR_clear_error();
    return rc;
}

void md_sock_shutdown_wr(struct md_sock *s)
{
    md_sock_close_notify(s);
    shutdown(s->fd, SHUT_WR);
}

void md_sock_close(struct md_sock *s, bool reset)
{
    if (s->ssl) {
        if (!reset)
            md_sock_close_notify(s);
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        if (reset)
            md_sock_close_reset(s->fd);
        else
            close(s->fd);
        s->fd = -1;
    }
    free(s->peer_id);
    free(s->local_id);
    free(s->sni);
    s->peer_id = s->local_id = s->sni = NULL;
}

void md_sock_kick(struct md_sock *s, struct ev_loop *loop, ev_io *rio)
{
    if (s->ssl && ev_is_active(rio) && SSL_pending(s->ssl) > 0)
        ev_feed_event(loop, rio, EV_READ);
}

int md_sock_handshake(struct md_sock *s, int *events, char *err, size_t errlen)
{
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1)
        return 0;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *events = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        return -EAGAIN;
    }
    s->tls_failed = true;
    long v = SSL_get_verify_result(s->ssl);
    unsigned long last = ERR_peek_last_error();
    if (v != X509_V_OK)
        snprintf(err, errlen, "peer certificate: %s", X509_verify_cert_error_string(v));
    else if (last)
        snprintf(err, errlen, "%s", ERR_reason_error_string(last));
    else if (e == SSL_ERROR_SYSCALL && errno)
        snprintf(err, errlen, "%s", strerror(errno));
    else
        snprintf(err, errlen, "peer closed the connection during the handshake");
    ERR_clear_error();
    return -EPROTO;
}

static int note_id(X509 *cert, char **out, char *err, size_t errlen)
{
    char id[MD_SPIFFE_ID_MAX + 1];
    if (md_tls_spiffe_id(cert, id, sizeof(id), err, errlen) < 0)
        return -1;
    if (!(*out = strdup(id))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int md_sock_note_identities(struct md_sock *s, char *err, size_t errlen)
{
    X509 *mine = SSL_get_certificate(s->ssl);
    char ignored[256];
    if (mine && !s->local_id)
        note_id(mine, &s->local_id, ignored, sizeof(ignored)); /* checked when loaded */
    const char *name =
        SSL_is_server(s->ssl) ? SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    if (name && !s->sni) {
        if (!(s->sni = strdup(name))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (char *p = s->sni; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    X509 *peer = SSL_get0_peer_certificate(s->ssl);
    if (!peer || SSL_get_verify_result(s->ssl) != X509_V_OK)
        return 0;
    return note_id(peer, &s->peer_id, err, errlen);
}

int md_sock_connect(struct md_sock *s, const struct md_addr *a)
{
    *s = md_sock_plain(socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (s->fd < 0)
        return -errno;
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s->fd, (const struct sockaddr *)&a->ss, a->len) == 0)
        return 0;
    return errno == EINPROGRESS ? 1 : -errno;
}

int md_sock_connect_result(const struct md_sock *s)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    return soerr;
}
