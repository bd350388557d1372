/* SPDX-License-Identifier: Apache-2.0 */
/* What a route's retry policy says about a failed attempt: whether its
 * answer or its end is one to try again, and how long to wait first. Pure
 * functions; the router does the trying. */
#ifndef MESHD_ROUTER_RETRY_H
#define MESHD_ROUTER_RETRY_H

#include "http/stream.h"
#include "snapshot.h"

#include <stdbool.h>
#include <stdint.h>

/* How an attempt ended without an answer. */
enum md_retry_end {
    MD_RETRY_END_RESET,          /* reset, or its connection lost, before it answered */
    MD_RETRY_END_CONNECT_FAILED, /* no connection could be made */
    MD_RETRY_END_TIMEOUT,        /* the per-try timeout ran out */
};

/* Is |resp| (its header block complete) an answer |rp| retries: a 5xx /
 * gateway error / listed status, or for gRPC a trailers-only status in
 * grpc_retry_on? */
bool md_retry_on_response(const struct md_snap_retry *rp, const struct md_half *resp, bool grpc);

/* Is an attempt that ended as |end| one |rp| retries? */
bool md_retry_on_end(const struct md_snap_retry *rp, enum md_retry_end end);

/* gRPC's server pushback (grpc-retry-pushback-ms in |resp|): -1 when
 * absent, -2 when the server says not to retry (negative or malformed),
 * else the wait in ms. */
int64_t md_retry_pushback_ms(const struct md_half *resp);

/* The wait before attempt |attempt| + 1 (|attempt| >= 1 made so far):
 * exponential backoff with full jitter, in seconds; |rnd| any uint64. */
double md_retry_backoff(const struct md_snap_retry *rp, uint32_t attempt, uint64_t rnd);

#endif
