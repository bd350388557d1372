/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1.1 body framing both HTTP/1 codecs write (RFC 9112 §6-7): bytes as
 * they are (Content-Length, close-delimited, a tunnel) or as chunks, and
 * the last chunk with its trailer section. Bytes go from the stream's queue
 * straight into the output buffer, with no copy in between. */
#ifndef MESHD_CODEC_H1_BODY_H
#define MESHD_CODEC_H1_BODY_H

#include "core/outbuf.h"
#include "http/stream.h"

#include <stdbool.h>
#include <sys/types.h>

/* How a body goes out. */
enum md_h1_framing {
    MD_H1_RAW,     /* as they are */
    MD_H1_CHUNKED, /* one chunk per call */
    MD_H1_DISCARD, /* taken and dropped (a HEAD response's) */
};

/* Moves up to |max| queued body bytes of |h| into |o|. Returns how many (0:
 * none queued), or MD_ENOMEM with nothing taken. */
ssize_t md_h1_body_pull(struct md_stream *s, struct md_half *h, struct md_outbuf *o, size_t max,
                        enum md_h1_framing framing);

/* The last chunk and a trailer section of |n| fields, less any that would
 * frame or route the message (pseudo-headers, connection-specific fields,
 * Content-Length, Host, TE). Returns 0 or MD_ENOMEM. */
int md_h1_last_chunk(struct md_outbuf *o, const struct md_hdr *trailers, size_t n);

#endif
