/* SPDX-License-Identifier: Apache-2.0 */
/* Protocol detection for HTTP listeners in AUTO mode: peek (MSG_PEEK, nothing
 * is consumed) at the first bytes and hand the connection on: a TLS
 * ClientHello to TLS termination when the listener has TLS, the HTTP/2
 * preface to h2c, an HTTP/1 method token to HTTP/1.1, and anything else (a
 * TLS ClientHello on a listener without TLS, another protocol, or silence
 * past detect_timeout_ms: a server-first protocol) to the listener's
 * tcp_fallback as a byte pipe. Without a tcp_fallback, other bytes go to
 * HTTP/1.1 (which answers 400) and TLS is closed, and a plaintext prefix
 * that stalls is closed at request_headers_timeout_ms from its first byte
 * (counted as none). A TLS listener closes whatever is not TLS unless it
 * allows plaintext. */
#ifndef MESHD_NET_DETECT_H
#define MESHD_NET_DETECT_H

#include "snapshot.h"

#include <stddef.h>
#include <stdint.h>

struct md_worker;

/* What the first |n| bytes of a connection say. */
enum md_detect_kind {
    MD_DETECT_MORE,  /* undecided: a prefix of the preface or of a method token */
    MD_DETECT_H2,    /* the HTTP/2 connection preface */
    MD_DETECT_HTTP1, /* a method token and a space */
    MD_DETECT_TLS,   /* a TLS handshake record */
    MD_DETECT_OTHER, /* none of these */
};

enum md_detect_kind md_detect_classify(const uint8_t *b, size_t n);

/* Takes the accepted |fd| and hands it to the right codec once decided. */
void md_detect_start(struct md_worker *w, const struct md_snap_listener *l, int fd);

/* Closes every connection still being sniffed. */
void md_detect_close_all(struct md_worker *w);

#endif
