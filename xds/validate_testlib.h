/* SPDX-License-Identifier: Apache-2.0 */
/* What the bundle tests (bundle_, validate_*_, snapshot*_test.c) share: valid
 * bundles to edit (fixture, hfix, rfix), loading them, the expected-error
 * and config_dump checks, and failing the snapshot's i-th allocation. */
#ifndef MESHD_XDS_VALIDATE_TESTLIB_H
#define MESHD_XDS_VALIDATE_TESTLIB_H

#include "bundle.h"
#include "core/err.h"
#include "mesh/v1/bundle.pb-c.h"
#include "snapshot.h"
#include "snapshot_build.h"
#include "validate.h"

#include <stdbool.h>
#include <stddef.h>

/* failmalloc: the snapshot's allocations fail when alloc_count reaches
 * alloc_fail_at (-1: never); see validate_testlib.c. */
extern long alloc_fail_at, alloc_count;

/* A valid bundle the tests edit: listener "in" -> cluster "app" (2 endpoints). */
struct fixture {
    Mesh__V1__Bundle b;
    Mesh__V1__Listener l, l2;
    Mesh__V1__Listener *ls[2];
    Mesh__V1__SocketAddress la, la2, ea[3];
    Mesh__V1__TcpProxy tp;
    Mesh__V1__Cluster c, c2;
    Mesh__V1__Cluster *cs[2];
    Mesh__V1__Endpoint e[3];
    Mesh__V1__Endpoint *es[3];
};

void fixture_init(struct fixture *f);

/* Packs |b|, adds |append|, cuts at |cut| (0: no cut), loads it; returns all error lines
 * joined (caller frees) and the load's return code. */
char *load(const Mesh__V1__Bundle *b, size_t cut, const char *append, int *rc_out,
           size_t *n_errors);
void expect_error(const Mesh__V1__Bundle *b, const char *want);
void expect_valid(const Mesh__V1__Bundle *b);
/* config_dump of |s| holds every one of |want| (the dump shown if not). */
void assert_dump_has(const struct md_snapshot *s, const char *const *want, size_t n);
/* Loads a bundle that must be valid (the errors shown if not). */
struct md_snapshot *load_snapshot(const Mesh__V1__Bundle *b);

/* A valid bundle with HTTP: the base fixture's tcp listener "in" plus listener
 * "web" (http) -> route config "rc": virtual host "api" with a gRPC method
 * route, a prefix route (headers, split 80/20 app/other, rewrite, header
 * edits), an exact path route and a service-wide gRPC route; virtual host
 * "fallback" on "*". */
struct hfix {
    struct fixture f;
    Mesh__V1__Listener hl;
    Mesh__V1__Listener *ls[2];
    Mesh__V1__SocketAddress hla;
    Mesh__V1__HttpConnectionManager hcm;
    Mesh__V1__Http2Options lh2, ch2;
    Mesh__V1__Cluster__ConnectionPool pool;
    Mesh__V1__RouteConfiguration rc, rc2;
    Mesh__V1__RouteConfiguration *rcs[2];
    Mesh__V1__VirtualHost vh, vh2;
    Mesh__V1__VirtualHost *vhs[2];
    char *domains[3], *domains2[1];
    Mesh__V1__Route r[4];
    Mesh__V1__Route *rs[4];
    Mesh__V1__Route r2;
    Mesh__V1__Route *rs2[1];
    Mesh__V1__RouteMatch m[4], m2;
    Mesh__V1__RouteAction a[4], a2;
    Mesh__V1__GrpcMatch g, g_any;
    Mesh__V1__HeaderMatcher hm[2];
    Mesh__V1__HeaderMatcher *hms[2];
    Mesh__V1__WeightedClusters wc;
    Mesh__V1__ClusterWeight cw[2];
    Mesh__V1__ClusterWeight *cws[2];
    Mesh__V1__HeaderValue hv[2];
    Mesh__V1__HeaderValue *req_add[1], *resp_add[1];
    char *req_remove[1], *resp_remove[1];
};

void hfix_init(struct hfix *h);

#define RC "route_config \"rc\" (route_configs[0]): "
#define WEB "listener \"web\" (listeners[1]): "
#define R(v, r) RC "virtual_hosts[" #v "].routes[" #r "]."

/* hfix with RBAC: listener "web" ALLOW [grpc-echo: six principals, one of
 * each kind; permissions Echo/Unary, or /admin/ with x-role: ops] [open: any
 * peer, any request]; route routes[0] DENY [deny-web: one SPIFFE ID]. */
struct rfix {
    struct hfix h;
    Mesh__V1__Rbac lr, rr;
    Mesh__V1__RbacPolicy p[3];
    Mesh__V1__RbacPolicy *lps[2], *rps[1];
    Mesh__V1__Principal pr[6];
    Mesh__V1__Principal *prs[6];
    Mesh__V1__Permission pm[2];
    Mesh__V1__Permission *pms[2];
    Mesh__V1__GrpcMatch g;
    Mesh__V1__HeaderMatcher hm;
    Mesh__V1__HeaderMatcher *hms[1];
};

void rfix_init(struct rfix *r);

#define LRBAC WEB "http.rbac."
#define RRBAC R(0, 0) "rbac."

#endif
