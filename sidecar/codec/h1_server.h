/* SPDX-License-Identifier: Apache-2.0 */
/* Downstream HTTP/1.1 (llhttp, strict): one request at a time per connection
 * (pipelined requests wait their turn, answered in order), each handed to the
 * router as an md_stream like an HTTP/2 stream. Request bodies are read only
 * as fast as the upstream takes them; responses go out with Content-Length
 * when known, else chunked (trailers as a chunked trailer section). A
 * request's framing and request line are judged before it is routed; its
 * header section must be in within request_headers_timeout_ms of its first
 * byte (else 408). */
#ifndef MESHD_CODEC_H1_SERVER_H
#define MESHD_CODEC_H1_SERVER_H

#include "net/sock.h"
#include "snapshot.h"

#include <stddef.h>
#include <stdint.h>

struct md_worker;

/* Takes the accepted socket |sock| (plain, or TLS after its handshake) for
 * HTTP listener |l|. Closes it on failure. */
void md_h1_server_start(struct md_worker *w, const struct md_snap_listener *l, struct md_sock sock);

/* Idle connections close now; busy ones close after their current response. */
void md_h1_server_drain_all(struct md_worker *w);

/* Closes every connection at once. */
void md_h1_server_close_all(struct md_worker *w);

#endif
