/* SPDX-License-Identifier: Apache-2.0 */
/* Between a downstream stream and its upstream: routes the request, applies
 * the route's edits and deadline, asks the pool for an upstream stream, and
 * turns every failure into a precise answer (local_reply.c). Codecs call in
 * at these points; nothing else here is visible to them. */
#ifndef MESHD_ROUTER_ROUTER_H
#define MESHD_ROUTER_ROUTER_H

#include "http/stream.h"

#include <stdint.h>

/* The downstream request's header block is complete (s->req.headers_done). */
void md_router_on_request(struct md_stream *s);

/* The upstream response's header block is complete (s->resp.headers_done). */
void md_router_on_response(struct md_stream *s);

/* Why an upstream stream ended (for md_router_on_upstream_closed). */
enum md_us_close {
    MD_US_CLOSE_DONE,           /* closed normally with error code 0 */
    MD_US_CLOSE_RESET,          /* the upstream reset it (h2 error code given) */
    MD_US_CLOSE_REFUSED,        /* refused before processing: GOAWAY or REFUSED_STREAM */
    MD_US_CLOSE_CONNECT_FAILED, /* no connection could be made */
    MD_US_CLOSE_CONN_LOST,      /* the connection closed under it */
};

/* The upstream side is done with |s|; it must not touch |s| afterwards. This
 * detaches the upstream side (and may free |s|). */
void md_router_on_upstream_closed(struct md_stream *s, enum md_us_close why, uint32_t h2_error);

/* The downstream stream closed with |h2_error| (0 when complete). Resets the
 * upstream if it is still going. Does not detach the downstream side. */
void md_router_on_downstream_closed(struct md_stream *s, uint32_t h2_error);

/* A request the codec refuses before routing (e.g. headers too large). */
enum md_reply_kind {
    MD_REPLY_NO_ROUTE,          /* 404 / UNIMPLEMENTED */
    MD_REPLY_UNAVAILABLE,       /* 503 / UNAVAILABLE */
    MD_REPLY_TIMEOUT,           /* 504 / DEADLINE_EXCEEDED */
    MD_REPLY_HEADERS_TOO_LARGE, /* 431 / RESOURCE_EXHAUSTED */
    MD_REPLY_BAD_REQUEST,       /* 400 / INTERNAL */
};

/* Answers |s| from meshd (trailers-only for gRPC) and cancels the upstream. */
void md_router_local_reply(struct md_stream *s, enum md_reply_kind kind, const char *detail);

#endif
