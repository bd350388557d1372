/* SPDX-License-Identifier: Apache-2.0 */
/* Upstream connection pools, one per worker and cluster, made on first use.
 * Each request's endpoint is the cluster's balancer's pick (lb_policy, health,
 * ejection, priority; a retry avoids the endpoints already tried). HTTP/2
 * clusters: streams multiplexed onto a connection to that endpoint with room
 * (the peer's MAX_CONCURRENT_STREAMS honoured), another connection opened
 * when all are full, up to max_connections_per_endpoint; past that, the least
 * loaded connection queues the stream (nghttp2 holds it until a slot frees).
 * HTTP/1.1 clusters: one request per connection, an idle kept-alive one
 * reused, else a new one (at most max_connections_per_endpoint kept idle). */
#ifndef MESHD_UPSTREAM_UPOOL_H
#define MESHD_UPSTREAM_UPOOL_H

#include "http/stream.h"

#include <stddef.h>

struct md_worker;
struct md_upool;

/* Finds or makes an upstream stream for |s| on cluster s->cluster. The
 * stream's upstream side is attached now (a pending entry while a connection
 * is being made); failures later arrive as md_router_on_upstream_closed.
 * The cluster's circuit breakers are applied (upstream/breakers.h): over a
 * limit nothing is attached, s->overflowed names the breaker and
 * MD_EOVERFLOW is returned. Returns 0, MD_ENOUPSTREAM (no endpoint),
 * MD_EOVERFLOW or MD_ENOMEM (nothing attached). */
int md_upool_acquire(struct md_worker *w, struct md_stream *s);

/* Closes every connection of the pool and frees it. NULL is ignored. */
void md_upool_free(struct md_upool *p);

#endif
