/* SPDX-License-Identifier: Apache-2.0 */
/* Downstream HTTP/2 (h2c, prior knowledge): one nghttp2 server session per
 * connection, each stream handed to the router as an md_stream. Flow control
 * follows the upstream: request DATA is acknowledged (window updated) only
 * when the upstream has taken it. */
#ifndef MESHD_CODEC_H2_SERVER_H
#define MESHD_CODEC_H2_SERVER_H

#include "net/sock.h"
#include "snapshot.h"

struct md_worker;

/* Takes the accepted socket |sock| (plain, or TLS after its handshake) for
 * HTTP listener |l|. Closes it on failure. */
void md_h2_server_start(struct md_worker *w, const struct md_snap_listener *l, struct md_sock sock);

/* Sends GOAWAY on every connection: open streams finish, no new ones. */
void md_h2_server_drain_all(struct md_worker *w);

/* Closes every connection at once (resetting its streams). */
void md_h2_server_close_all(struct md_worker *w);

#endif
