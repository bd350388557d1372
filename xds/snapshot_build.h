/* SPDX-License-Identifier: Apache-2.0 */
/* Validated protobuf -> snapshot. Internal to xds/. */
#ifndef MESHD_XDS_SNAPSHOT_BUILD_H
#define MESHD_XDS_SNAPSHOT_BUILD_H

#include "mesh/v1/bundle.pb-c.h"
#include "snapshot.h"

#include <stdbool.h>
#include <stdio.h>

/* Builds a snapshot with one reference from |b|, which md_validate_bundle
 * accepted. Returns 0 or MD_ENOMEM. */
int md_snapshot_build(const Mesh__V1__Bundle *b, struct md_snapshot **out);

/* Shared by snapshot.c and snapshot_rbac.c. */

/* "/SERVICE/METHOD" (or "/SERVICE/" with *any_method set when |g| names no
 * method), malloc'd; NULL when out of memory. */
char *md_snapshot_grpc_path(const Mesh__V1__GrpcMatch *g, bool *any_method);

/* Builds |n| header matchers into a new array *out (*n_out = n); nothing
 * when n is 0. Returns 0 or MD_ENOMEM (what was built is freed with the
 * snapshot, as *out and *n_out are set first). */
int md_snapshot_build_header_matchers(Mesh__V1__HeaderMatcher *const *hm, size_t n,
                                      struct md_snap_header_matcher **out, size_t *n_out);
void md_snapshot_free_header_matchers(struct md_snap_header_matcher *h, size_t n);

/* config_dump pieces: `key: "s"` and `header { ... }` lines at |indent|. */
void md_snapshot_dump_str(FILE *f, int indent, const char *key, const char *s);
void md_snapshot_dump_header_matcher(FILE *f, int indent, const struct md_snap_header_matcher *h);

/* RBAC (snapshot_rbac.c). */

/* Builds |r| for |scope|, owned by |owner| (borrowed: the listener's or
 * route's name, which lives as long as the snapshot) into a new *out.
 * Stats slots are given later by md_snapshot_index_rbac. Returns 0 or
 * MD_ENOMEM (*out is set as soon as it exists, for md_snapshot_free_rbac). */
int md_snapshot_build_rbac(const Mesh__V1__Rbac *r, enum md_rbac_scope scope, const char *owner,
                           struct md_snap_rbac **out);

/* Numbers every policy and "none matched" slot of |s|'s Rbacs, listeners'
 * first, and fills s->rbac_stats. Returns 0 or MD_ENOMEM. */
int md_snapshot_index_rbac(struct md_snapshot *s);

/* NULL is ignored. */
void md_snapshot_free_rbac(struct md_snap_rbac *r);

/* Writes `rbac { ... }` at |indent|. */
void md_snapshot_dump_rbac(FILE *f, int indent, const struct md_snap_rbac *r);

/* Resilience (snapshot_resilience.c). Each builds into a new *out, set as
 * soon as it exists so that the snapshot frees it on a later failure.
 * Returns 0 or MD_ENOMEM. */
int md_snapshot_build_retry(const Mesh__V1__RetryPolicy *r, struct md_snap_retry **out);
void md_snapshot_free_retry(struct md_snap_retry *r);
/* |scope| ("listener", "route") and |owner| are borrowed for stats labels. */
int md_snapshot_build_rate_limit(const Mesh__V1__RateLimit *r, const char *scope, const char *owner,
                                 struct md_snap_rate_limit **out);
void md_snapshot_free_rate_limit(struct md_snap_rate_limit *r);
int md_snapshot_build_fault(const Mesh__V1__FaultInjection *f, struct md_snap_fault **out);
/* Breakers and retry budget (defaults applied) and outlier detection. */
int md_snapshot_build_cluster_resilience(const Mesh__V1__Cluster *c, struct md_snap_cluster *out);
/* Fills s->rate_limits with every listener's then route's rate limit and
 * numbers them. */
int md_snapshot_index_rate_limits(struct md_snapshot *s);
/* Gives every route with a retry policy its stats slot, one per route name,
 * and fills s->retry_stats. */
int md_snapshot_index_retries(struct md_snapshot *s);
void md_snapshot_dump_route_resilience(FILE *f, int indent, const struct md_snap_route *r);
void md_snapshot_dump_rate_limit(FILE *f, int indent, const char *key,
                                 const struct md_snap_rate_limit *r);
void md_snapshot_dump_cluster_resilience(FILE *f, const struct md_snap_cluster *c);

#endif
