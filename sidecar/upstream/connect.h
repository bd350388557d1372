/* SPDX-License-Identifier: Apache-2.0 */
/* Connects to one endpoint of a cluster: non-blocking connect with a timeout,
 * then for a cluster with TLS the handshake and the check of the server's
 * SPIFFE ID (within the same timeout), and on refusal, timeout or a failed
 * handshake the next endpoint the balancer offers, up to the cluster's
 * max_connect_attempts distinct endpoints. */
#ifndef MESHD_UPSTREAM_CONNECT_H
#define MESHD_UPSTREAM_CONNECT_H

#include "net/sock.h"
#include "snapshot.h"
#include "upstream/lb.h"

#include <ev.h>
#include <stdint.h>

struct md_worker;
struct md_connect;

/* Called once: |sock| is a connected non-blocking socket (TLS established
 * when the cluster has TLS) now owned by the callee, |ep| the endpoint it
 * reaches; or sock == NULL and |err| the last failure (every attempt
 * failed). Not called if md_connect_start returned an error. */
typedef void md_connect_cb(struct md_connect *c, struct md_sock *sock, const struct md_ep *ep,
                           int err);

#define MD_CONNECT_MAX_ATTEMPTS 16

/* Embedded in its owner (a session); no allocation. */
struct md_connect {
    struct md_worker *w;              /* borrowed */
    const struct md_snap_cluster *cl; /* borrowed from the worker's snapshot */
    md_connect_cb *cb;
    uint64_t log_id;     /* the owner's id, for log lines */
    struct md_sock sock; /* fd -1 between attempts */
    struct md_ep ep;     /* being tried (a copy: the worker's set may change meanwhile) */
    uint64_t tried[MD_CONNECT_MAX_ATTEMPTS]; /* md_ep_key of the endpoints tried */
    uint32_t n_tried;
    bool has_hash; /* the request's hash, for the next endpoint's pick */
    uint64_t hash;
    size_t (*load)(void *arg, const struct md_ep *ep); /* LEAST_REQUEST's, for the next too */
    void *load_arg;
    ev_io io;
    ev_timer timer;
};

/* Starts connecting to |cl|: to |first| (an endpoint the caller picked),
 * or when NULL to the balancer's pick for |ctx| (its hash and load also
 * pick the next endpoints). The callback may run before this returns (a connect that
 * completes or fails at once). Returns 0. */
int md_connect_start(struct md_connect *c, struct md_worker *w, const struct md_snap_cluster *cl,
                     uint64_t log_id, const struct md_ep *first, const struct md_lb_ctx *ctx,
                     md_connect_cb *cb);

/* TLS origination pieces, shared with the health checker's probes: the
 * client side of |sock| (connected) on the cluster's current credentials,
 * with SNI; then, after md_sock_handshake and md_sock_note_identities,
 * whether the server's SPIFFE ID is one |t| accepts (NULL) or why not (in
 * |buf|). md_connect_tls_begin returns 0 or MD_ENOMEM. */
int md_connect_tls_begin(struct md_sock *sock, const struct md_snap_cluster_tls *t);
const char *md_connect_identity_refused(const struct md_snap_cluster_tls *t, const char *id,
                                        char *buf, size_t len);

/* Stops an attempt in progress; the callback will not run. Safe to call twice. */
void md_connect_cancel(struct md_connect *c);

#endif
