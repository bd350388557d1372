/* SPDX-License-Identifier: Apache-2.0 */
/* The TCP proxy: a byte pipe between an accepted downstream connection and an
 * upstream endpoint of the listener's cluster.
 *
 * Per direction at most buffer_limit bytes are held (in a pipe for splice, or
 * in an md_buf when copying); above that the sending side is not read. FIN is
 * forwarded as shutdown(SHUT_WR) once everything before it was written; a
 * reset on either side resets the other (SO_LINGER 0). */
#ifndef MESHD_CODEC_TCP_PROXY_H
#define MESHD_CODEC_TCP_PROXY_H

#include "snapshot.h"

struct md_worker;

/* Takes ownership of the accepted non-blocking socket |fd| and starts
 * proxying it for listener |l|. On failure |fd| is closed (reset). */
void md_tcp_proxy_start(struct md_worker *w, const struct md_snap_listener *l, int fd);

/* Closes every session of |w| at once (drain timeout, exit). */
void md_tcp_proxy_close_all(struct md_worker *w);

#endif
