/* SPDX-License-Identifier: Apache-2.0 */
/* A worker's listening socket for one configured listener (SO_REUSEPORT: each
 * worker binds its own and the kernel spreads connections). An accepted
 * connection over the listener's connection_rate_limit is closed at once;
 * the others go to the TCP proxy, protocol detection (AUTO), the TLS
 * handshake (ALPN then picks the codec), or the HTTP/2 or HTTP/1.1 server. */
#ifndef MESHD_NET_LISTENER_H
#define MESHD_NET_LISTENER_H

#include "net/acceptor.h"
#include "snapshot.h"

struct md_worker;

struct md_listener {
    struct md_worker *w;                /* borrowed; the owner */
    const struct md_snap_listener *cfg; /* borrowed from w->snap */
    struct md_acceptor acc;
};

/* Creates, binds and listens. Returns the listener, or NULL with *err set to
 * -errno (the failure is logged with the address). */
struct md_listener *md_listener_new(struct md_worker *w, const struct md_snap_listener *cfg,
                                    int *err);
/* Starts accepting on the worker's loop (from the worker thread). */
void md_listener_start(struct md_listener *ln);
/* Stops accepting and closes the socket; idempotent. */
void md_listener_close(struct md_listener *ln);
void md_listener_free(struct md_listener *ln);

#endif
