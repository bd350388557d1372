/* SPDX-License-Identifier: Apache-2.0 */
/* Route selection over a snapshot's route configuration: the virtual host by
 * :authority, then the first route whose match holds. Pure functions of
 * their arguments: no allocation, no I/O. */
#ifndef MESHD_ROUTER_ROUTE_MATCH_H
#define MESHD_ROUTER_ROUTE_MATCH_H

#include "http/hdrs.h"
#include "snapshot.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What matching looks at. All pointers are borrowed for the call. */
struct md_route_input {
    const char *authority; /* :authority (or Host); may carry ":port"; may be NULL */
    size_t authority_len;
    const char *path; /* :path, may carry "?query" */
    size_t path_len;
    bool grpc;                 /* content-type is application/grpc or application/grpc+... */
    const struct md_hdr *hdrs; /* the request's regular headers (no pseudo-headers) */
    size_t n_hdrs;
    const char *sni; /* the TLS server name, lower case; NULL: plaintext or none sent */
};

/* Returns the virtual host of |rc| for |authority| (port stripped,
 * case-insensitive; most specific wins: exact, longest *.suffix, longest
 * prefix.*, then *), or NULL when none matches. */
const struct md_snap_vhost *md_route_match_vhost(const struct md_snap_route_config *rc,
                                                 const char *authority, size_t authority_len);

/* Returns the first route of |vh| whose path, header and server name
 * matchers all hold for |in|, or NULL. */
const struct md_snap_route *md_route_match_route(const struct md_snap_vhost *vh,
                                                 const struct md_route_input *in);

/* The parts of a route's match, shared with RBAC permissions (rbac.c). */

/* Does |in|'s path (query removed) match |path| (|path_len| bytes) as |kind|
 * says? MD_PATH_MATCH_GRPC needs in->grpc, and with |grpc_any_method| takes
 * |path| ("/svc/") as the prefix of "/svc/method". */
bool md_route_match_path(enum md_path_match_kind kind, const char *path, size_t path_len,
                         bool grpc_any_method, const struct md_route_input *in);

/* Do all |n| matchers of |m| hold for in->hdrs? (n == 0: true.) */
bool md_route_match_headers(const struct md_snap_header_matcher *m, size_t n,
                            const struct md_route_input *in);

/* Picks the cluster index of |r| for a uniformly random |rnd| (any uint32):
 * weighted by the clusters' weights (clusters with weight 0 never chosen). */
size_t md_route_match_pick_cluster(const struct md_snap_route *r, uint32_t rnd);

#endif
