/* SPDX-License-Identifier: Apache-2.0 */
/* TLS termination for a listener: the server handshake on an accepted
 * socket (bounded by handshake_timeout_ms), then the client's SPIFFE ID
 * noted and the connection handed to the codec ALPN chose. */
#ifndef MESHD_NET_TLS_ACCEPT_H
#define MESHD_NET_TLS_ACCEPT_H

#include "snapshot.h"

struct md_worker;

/* Takes the accepted |fd| of TLS listener |l|. */
void md_tls_accept_start(struct md_worker *w, const struct md_snap_listener *l, int fd);

/* Abandons every handshake in progress. */
void md_tls_accept_close_all(struct md_worker *w);

#endif
