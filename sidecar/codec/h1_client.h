/* SPDX-License-Identifier: Apache-2.0 */
/* One upstream HTTP/1.1 connection carrying one md_stream at a time: the
 * request serialised from its HTTP/2-shaped headers (:authority becomes Host,
 * bodies chunked unless a length is known), the response parsed by llhttp
 * (strict). Kept alive between requests by the pool (upstream/upool.c). */
#ifndef MESHD_CODEC_H1_CLIENT_H
#define MESHD_CODEC_H1_CLIENT_H

#include "http/stream.h"
#include "net/sock.h"

#include <stdbool.h>
#include <stdint.h>

struct md_worker;
struct md_h1_client;

/* The pool's hooks, called from a deferred flush or an event (never inside a
 * md_stream call): the exchange ended and the connection can take another
 * request (|idle| true), or it is gone and freed (|idle| false). */
typedef void md_h1_client_event_cb(void *owner, struct md_h1_client *cl, bool idle);

struct md_h1_client_cfg {
    uint64_t *rx_stat, *tx_stat, *rq_active_stat;
    uint32_t *rq_slots; /* as md_h2_client_cfg's: given back when the request ends */
    const char *label;  /* "cluster/ep"; outlives the connection */
};

/* Wraps the connected socket |sock| (taken). NULL on ENOMEM (sock closed). */
struct md_h1_client *md_h1_client_new(struct md_worker *w, struct md_sock sock,
                                      const struct md_h1_client_cfg *cfg,
                                      md_h1_client_event_cb *event, void *owner);

/* Sends |s|'s request and attaches as its upstream side. |reused|: the
 * connection served a request before (a close before any response byte then
 * reads as "refused", which the router may retry). Returns 0 or MD_E*. */
int md_h1_client_submit(struct md_h1_client *cl, struct md_stream *s, bool reused);

/* Closes at once; a stream on it ends with MD_US_CLOSE_CONN_LOST. The event
 * callback is not called. */
void md_h1_client_free(struct md_h1_client *cl);

#endif
