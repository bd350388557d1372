/* SPDX-License-Identifier: Apache-2.0 */
/* A connection's transport: a non-blocking socket, plain or under TLS. The
 * HTTP codecs read, write and close through it and never see which; a TLS
 * socket also carries the identities its handshake established. */
#ifndef MESHD_NET_SOCK_H
#define MESHD_NET_SOCK_H

#include "core/outbuf.h"

#include <ev.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct md_sock {
    int fd;
    SSL *ssl;        /* NULL: plain */
    char *peer_id;   /* the peer's verified SPIFFE ID (malloc'd); NULL: none */
    char *local_id;  /* the SPIFFE ID we presented (malloc'd); NULL: none */
    char *sni;       /* the name a TLS client asked for, lower case (malloc'd); NULL: none */
    bool tls_failed; /* a fatal TLS error: no close_notify may follow */
};

static inline struct md_sock md_sock_plain(int fd)
{
    return (struct md_sock){.fd = fd};
}

struct md_addr;

/* Starts a non-blocking TCP connect (TCP_NODELAY) to |a| on a new socket,
 * stored in *s (fd -1 when none could be had). Returns 0 when connected
 * already, 1 while in progress (wait for EV_WRITE, then
 * md_sock_connect_result), or -errno. */
int md_sock_connect(struct md_sock *s, const struct md_addr *a);

/* The outcome of a connect in progress: 0 or an errno. */
int md_sock_connect_result(const struct md_sock *s);

/* Reads up to |len| bytes. Returns how many (> 0), 0 at the peer's end of
 * stream, -EAGAIN when nothing is there yet, or another -errno (-EPROTO for
 * a TLS failure). A short read means the socket was drained. */
ssize_t md_sock_recv(struct md_sock *s, void *buf, size_t len);

/* Writes as much of |o| as the socket takes (what it took is removed),
 * counting bytes into |tx_stat| (may be NULL). Returns 0 when |o| is empty,
 * -EAGAIN when the socket is full, or another -errno. Under TLS a write the
 * socket did not finish must be repeated with at least the same bytes first
 * in |o| (they stay there: callers only append). */
int md_sock_flush(struct md_sock *s, struct md_outbuf *o, uint64_t *tx_stat);

/* Under TLS once the handshake is done and no fatal error came: sends
 * close_notify. Returns 0 when sent (or not to be sent), -EAGAIN when the
 * socket is full: call again once writable. */
int md_sock_close_notify(struct md_sock *s);

/* Our end of the stream: TLS close_notify (lost if the socket is full), then
 * FIN. */
void md_sock_shutdown_wr(struct md_sock *s);

/* Closes (with an RST when |reset|) and frees the TLS state and identities. */
void md_sock_close(struct md_sock *s, bool reset);

/* Under TLS, bytes already decrypted wait inside OpenSSL where the socket's
 * readiness cannot show them: after a read that stopped early, or when
 * reading resumes, |rio| (started) is fed an event so that they are read. */
void md_sock_kick(struct md_sock *s, struct ev_loop *loop, ev_io *rio);

/* One step of the TLS handshake. Returns 0 when done, -EAGAIN with the
 * events to wait for in |*events| (EV_READ / EV_WRITE), or -EPROTO with why
 * in |err|. */
int md_sock_handshake(struct md_sock *s, int *events, char *err, size_t errlen);

/* After the handshake: notes the SPIFFE ID of the peer's verified
 * certificate (none: peer_id stays NULL) and of ours, and on a server the
 * name the client asked for (SNI). Returns 0, or -1 with why in |err| when
 * the peer's verified certificate names no valid SPIFFE ID (or memory ran
 * out). */
int md_sock_note_identities(struct md_sock *s, char *err, size_t errlen);

#endif
