/* SPDX-License-Identifier: Apache-2.0 */
/* One upstream HTTP/2 connection (h2c, prior knowledge): an nghttp2 client
 * session carrying many md_streams. The pool (upstream/upool.c) decides which
 * connection a stream goes to; this file only speaks HTTP/2. */
#ifndef MESHD_CODEC_H2_CLIENT_H
#define MESHD_CODEC_H2_CLIENT_H

#include "http/stream.h"
#include "net/sock.h"
#include "snapshot.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct md_worker;
struct md_h2_client;

/* Called (from a deferred flush, never inside nghttp2) when the connection
 * is gone; its streams were already told. |owner| is the pool's. */
typedef void md_h2_client_closed_cb(void *owner, struct md_h2_client *cl);
/* Called once, when the peer's first SETTINGS arrived: its stream limit is
 * known from then on. */
typedef void md_h2_client_ready_cb(void *owner, struct md_h2_client *cl);

struct md_h2_client_cfg {
    const struct md_snap_h2_opts *h2;
    uint32_t keepalive_interval_ms;
    uint32_t idle_timeout_ms;
    uint64_t *rx_stat, *tx_stat, *rq_active_stat;
    /* Atomic count of requests in progress (a circuit breaker's): the pool
     * took a slot for each stream it submits, given back here when the
     * stream ends. NULL: none. */
    uint32_t *rq_slots;
    const char *label; /* "cluster/ep" for logs; must outlive the connection */
    md_h2_client_ready_cb *ready;
};

/* Wraps the connected socket |sock| (taken). Returns NULL on ENOMEM (sock closed). */
struct md_h2_client *md_h2_client_new(struct md_worker *w, struct md_sock sock,
                                      const struct md_h2_client_cfg *cfg,
                                      md_h2_client_closed_cb *closed, void *owner);

/* Streams open or queued on it. */
size_t md_h2_client_load(const struct md_h2_client *cl);
/* Streams it can still take now: min(ours, the peer's MAX_CONCURRENT_STREAMS) - load;
 * 0 after GOAWAY or when closing. */
size_t md_h2_client_capacity(const struct md_h2_client *cl);
/* True once the peer's SETTINGS arrived (its stream limit is known). */
bool md_h2_client_ready(const struct md_h2_client *cl);
/* False after GOAWAY, a failed PING, or when closing. */
bool md_h2_client_usable(const struct md_h2_client *cl);

/* Sends |s|'s request (s->us_hdrs, then its body) and attaches as its
 * upstream side. Returns 0, or a negative error (nothing attached). */
int md_h2_client_submit(struct md_h2_client *cl, struct md_stream *s);

/* Closes at once: streams end with MD_US_CLOSE_CONN_LOST; |closed| is not called. */
void md_h2_client_free(struct md_h2_client *cl);

#endif
