/* SPDX-License-Identifier: Apache-2.0 */
/* Strict validation of a decoded bundle. Every check runs, every failure is
 * reported with its resource, field and reason; nothing is fixed up silently. */
#ifndef MESHD_XDS_VALIDATE_H
#define MESHD_XDS_VALIDATE_H

#include "core/addr.h"
#include "errlist.h"
#include "mesh/v1/bundle.pb-c.h"

#include <stdbool.h>
#include <stddef.h>

/* Listeners, clusters or route configurations in one bundle, and virtual
 * hosts in one route configuration, at most. */
#define MD_VALIDATE_MAX_RESOURCES 4096u

/* Runs every check over |b|, adding each error to |el|. Returns how many
 * errors were added (0: the bundle is valid). */
size_t md_validate_bundle(const Mesh__V1__Bundle *b, struct md_errlist *el);

/* One resource kind per file. */
void md_validate_listeners(const Mesh__V1__Bundle *b, struct md_errlist *el);
void md_validate_clusters(const Mesh__V1__Bundle *b, struct md_errlist *el);
void md_validate_route_configs(const Mesh__V1__Bundle *b, struct md_errlist *el);

/* Shared helpers. */

/* Writes `KIND "NAME" (PLURAL[i])`, or `PLURAL[i]` when the name is empty. */
void md_validate_label(char *buf, size_t len, const char *kind, const char *plural, size_t i,
                       const char *name);

/* Checks the name of resource |i| of |items| (each a message whose `char *name`
 * sits at |name_off|): required, [a-zA-Z0-9_.-]{1,64}, unique among them. */
void md_validate_name(struct md_errlist *el, const char *res, const char *plural,
                      void *const *items, size_t i, size_t name_off);

/* Same, reporting at |field| ("virtual_hosts[2].name") for names of nested
 * messages; duplicates are named as |plural|[j]. */
void md_validate_name_at(struct md_errlist *el, const char *res, const char *field,
                         const char *plural, void *const *items, size_t i, size_t name_off);

/* Returns true when |name| matches [a-zA-Z0-9_.-]{0,64} (empty allowed). */
bool md_validate_name_syntax(const char *name);

/* Checks a required address (IP literal, port 1-65535) at |field|. Fills |out|
 * when valid. Returns 0 when valid. */
int md_validate_address(struct md_errlist *el, const char *res, const char *field,
                        const Mesh__V1__SocketAddress *a, struct md_addr *out);

/* Checks that |v| is a value |desc| defines. */
void md_validate_enum(struct md_errlist *el, const char *res, const char *field,
                      const ProtobufCEnumDescriptor *desc, int v);

/* Checks |v| is 0 (default) or within [lo, hi]. */
void md_validate_range0(struct md_errlist *el, const char *res, const char *field, uint32_t v,
                        uint32_t lo, uint32_t hi, const char *unit);

/* Checks HTTP/2 options at |field| ("http.http2"); NULL (all defaults) is valid. */
void md_validate_h2_opts(struct md_errlist *el, const char *res, const char *field,
                         const Mesh__V1__Http2Options *o);

/* Checks a header name at |field|: required, lower case, a token, not a
 * pseudo-header (nor hop-by-hop when |forbid_hop_by_hop|); |verb| says what
 * is done with it ("matched", "set", "removed") for the message. */
void md_validate_header_name(struct md_errlist *el, const char *res, const char *field,
                             const char *name, const char *verb, bool forbid_hop_by_hop);

/* Checks a DNS name (an SNI, a cluster's dns_name) at |field|: letters,
 * digits, '-', '.', '_'. */
void md_validate_host_name(struct md_errlist *el, const char *res, const char *field,
                           const char *name);

/* Checks a listener's / a cluster's TLS at field "tls", building its
 * context once from the files (|alpn|: MD_TLS_ALPN_* spoken or offered). */
void md_validate_downstream_tls(struct md_errlist *el, const char *res,
                                const Mesh__V1__DownstreamTlsContext *t, unsigned alpn);
void md_validate_upstream_tls(struct md_errlist *el, const char *res,
                              const Mesh__V1__UpstreamTlsContext *t, unsigned alpn);

/* Checks an Rbac message at |at| ("http.rbac", "virtual_hosts[0].routes[1].rbac"):
 * policy names, principals, permissions (validate_rbac.c). */
void md_validate_rbac(struct md_errlist *el, const char *res, const char *at,
                      const Mesh__V1__Rbac *r);

/* Shared by routes and RBAC permissions (validate_route.c). */

/* Checks a path to match at |field|: starts with '/', no '?', '#', whitespace
 * or control bytes. */
void md_validate_path(struct md_errlist *el, const char *res, const char *field, const char *p);

/* Checks a GrpcMatch at |at| ("...match.grpc"): service required, a dotted
 * identifier; method, when given, an identifier. |g| may be NULL. */
void md_validate_grpc_match(struct md_errlist *el, const char *res, const char *at,
                            const Mesh__V1__GrpcMatch *g);

/* Checks |n| header matchers, reported as |at|.headers[k]: lower-case
 * token names, not pseudo-headers, exact or present set, no CR/LF. */
void md_validate_header_matchers(struct md_errlist *el, const char *res, const char *at,
                                 Mesh__V1__HeaderMatcher *const *hm, size_t n);

/* Resilience (validate_resilience.c). |at| names the message's field. */
void md_validate_retry_policy(struct md_errlist *el, const char *res, const char *at,
                              const Mesh__V1__RetryPolicy *r);
/* |keyed|: a key (header, SPIFFE ID) is allowed (routes). */
void md_validate_rate_limit(struct md_errlist *el, const char *res, const char *at,
                            const Mesh__V1__RateLimit *r, bool keyed);
void md_validate_fault(struct md_errlist *el, const char *res, const char *at,
                       const Mesh__V1__FaultInjection *f);
void md_validate_cluster_resilience(struct md_errlist *el, const char *res,
                                    const Mesh__V1__Cluster *c);
/* The gRPC status code a name ("unavailable") stands for, or -1. */
int md_validate_grpc_status_name(const char *name);
/* The index of a RetryPolicy.retry_on name in its documented order, or -1. */
int md_validate_retry_on_name(const char *name);
/* The name of retry_on condition |k|, or NULL past the last. */
const char *md_validate_retry_on_str(int k);

/* Returns the index of the cluster named |name|, or -1. */
long md_validate_find_cluster(const Mesh__V1__Bundle *b, const char *name);

/* Returns the index of the route configuration named |name|, or -1. */
long md_validate_find_route_config(const Mesh__V1__Bundle *b, const char *name);

#endif
