/* SPDX-License-Identifier: Apache-2.0 */
/* The one place that turns a proxy-made failure into an answer: a gRPC
 * request gets a trailers-only response with the precise grpc-status, a plain
 * HTTP request the matching status code and a short text body. */
#ifndef MESHD_HTTP_LOCAL_REPLY_H
#define MESHD_HTTP_LOCAL_REPLY_H

#include "http/stream.h"

/* Replaces |s|'s response with (|http_status|, or |grpc_status| when s->grpc)
 * and |detail|; with x-meshd-overflowed when s->overflowed names a circuit
 * breaker. The response half must not have been sent yet. Returns 0 or
 * MD_ENOMEM. */
int md_local_reply_build(struct md_stream *s, int http_status, int grpc_status, const char *detail);

/* Adds |name|: |value| to the head of the reply md_local_reply_build made
 * (for gRPC, to its trailers-only block). Returns 0, MD_ENOMEM or
 * MD_ETOOBIG. */
int md_local_reply_add_header(struct md_stream *s, const char *name, const char *value);

/* Sets gRPC trailers (grpc-status, grpc-message) that end a response already
 * under way. Returns 0 or MD_ENOMEM. */
int md_local_reply_trailers(struct md_stream *s, int grpc_status, const char *detail);

#endif
