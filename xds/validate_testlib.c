/* SPDX-License-Identifier: Apache-2.0 */
/* The bundle tests' shared fixtures and checks (validate_testlib.h). */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* failmalloc: snapshot.c is compiled into the tests with its allocations
 * routed through counters, so a test can fail the i-th one (its definitions
 * replace the library's). */
long alloc_fail_at = -1, alloc_count;

static bool alloc_fails(void)
{
    return alloc_fail_at >= 0 && alloc_count++ == alloc_fail_at;
}

static void *fm_malloc(size_t n)
{
    return alloc_fails() ? NULL : malloc(n);
}

static void *fm_calloc(size_t n, size_t size)
{
    return alloc_fails() ? NULL : calloc(n, size);
}

static char *fm_strdup(const char *s)
{
    return alloc_fails() ? NULL : strdup(s);
}

static int fm_asprintf(char **out, const char *fmt, ...)
{
    if (alloc_fails())
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(out, fmt, ap);
    va_end(ap);
    return rc;
}

#undef malloc
#undef calloc
#undef strdup
#undef asprintf
#define malloc fm_malloc
#define calloc fm_calloc
#define strdup fm_strdup
#define asprintf fm_asprintf
#include "snapshot.c"
#include "snapshot_rbac.c"
#undef malloc
#undef calloc
#undef strdup
#undef asprintf

void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    mesh__v1__bundle__init(&f->b);
    mesh__v1__listener__init(&f->l);
    mesh__v1__listener__init(&f->l2);
    mesh__v1__tcp_proxy__init(&f->tp);
    mesh__v1__cluster__init(&f->c);
    mesh__v1__cluster__init(&f->c2);
    mesh__v1__socket_address__init(&f->la);
    mesh__v1__socket_address__init(&f->la2);
    f->la.address = "127.0.0.1";
    f->la.port = 15006;
    f->la2.address = "127.0.0.1";
    f->la2.port = 15007;
    f->tp.cluster = "app";
    f->l.name = "in";
    f->l.address = &f->la;
    f->l.handler_case = MESH__V1__LISTENER__HANDLER_TCP_PROXY;
    f->l.tcp_proxy = &f->tp;
    f->l2 = f->l;
    f->l2.name = "in2";
    f->l2.address = &f->la2;
    f->ls[0] = &f->l;
    f->ls[1] = &f->l2;
    f->b.n_listeners = 1;
    f->b.listeners = f->ls;
    for (int i = 0; i < 3; i++) {
        mesh__v1__socket_address__init(&f->ea[i]);
        f->ea[i].address = "127.0.0.1";
        f->ea[i].port = (uint32_t)(8080 + i);
        mesh__v1__endpoint__init(&f->e[i]);
        f->e[i].address = &f->ea[i];
        f->es[i] = &f->e[i];
    }
    f->c.name = "app";
    f->c.n_endpoints = 2;
    f->c.endpoints = f->es;
    f->c2 = f->c;
    f->c2.name = "other";
    f->cs[0] = &f->c;
    f->cs[1] = &f->c2;
    f->b.n_clusters = 1;
    f->b.clusters = f->cs;
}

char *load(const Mesh__V1__Bundle *b, size_t cut, const char *append, int *rc_out, size_t *n_errors)
{
    size_t len = mesh__v1__bundle__get_packed_size(b);
    size_t extra = append ? strlen(append) : 0;
    uint8_t *buf = malloc(len + extra + 1);
    assert_non_null(buf);
    mesh__v1__bundle__pack(b, buf);
    if (append)
        memcpy(buf + len, append, extra);
    len += extra;
    if (cut)
        len = cut;
    struct md_errlist el;
    md_errlist_init(&el, "t.pb");
    struct md_snapshot *snap = NULL;
    int rc = md_bundle_load_mem(buf, len, &el, &snap);
    free(buf);
    char *joined = NULL;
    size_t jl = 0;
    FILE *f = open_memstream(&joined, &jl);
    md_errlist_print(&el, f);
    fclose(f);
    *n_errors = el.n;
    md_errlist_fini(&el);
    if (rc == 0) {
        assert_non_null(snap);
        md_snapshot_unref(snap);
    } else {
        assert_null(snap);
    }
    *rc_out = rc;
    return joined;
}

void expect_error(const Mesh__V1__Bundle *b, const char *want)
{
    int rc;
    size_t n;
    char *out = load(b, 0, NULL, &rc, &n);
    if (!strstr(out, want))
        fail_msg("expected error containing\n  %s\ngot\n%s", want, out);
    assert_int_not_equal(rc, 0);
    free(out);
}

void expect_valid(const Mesh__V1__Bundle *b)
{
    int rc;
    size_t n;
    char *out = load(b, 0, NULL, &rc, &n);
    if (rc != 0)
        fail_msg("expected a valid bundle, got\n%s", out);
    free(out);
}

/* config_dump of |s| holds every one of |want| (the dump shown if not). */
void assert_dump_has(const struct md_snapshot *s, const char *const *want, size_t n)
{
    char *dump;
    size_t len;
    assert_int_equal(md_snapshot_dump(s, &dump, &len), 0);
    for (size_t i = 0; i < n; i++)
        if (!strstr(dump, want[i]))
            fail_msg("config_dump lacks\n%s\n--- dump ---\n%s", want[i], dump);
    free(dump);
}

struct md_snapshot *load_snapshot(const Mesh__V1__Bundle *b)
{
    size_t len = mesh__v1__bundle__get_packed_size(b);
    uint8_t *buf = malloc(len + 1);
    assert_non_null(buf);
    mesh__v1__bundle__pack(b, buf);
    struct md_errlist el;
    md_errlist_init(&el, "t.pb");
    struct md_snapshot *snap = NULL;
    int rc = md_bundle_load_mem(buf, len, &el, &snap);
    free(buf);
    if (rc != 0) {
        md_errlist_print(&el, stderr);
        fail_msg("load failed: %d", rc);
    }
    md_errlist_fini(&el);
    return snap;
}

void hfix_init(struct hfix *h)
{
    memset(h, 0, sizeof(*h));
    fixture_init(&h->f);
    Mesh__V1__Bundle *b = &h->f.b;

    mesh__v1__socket_address__init(&h->hla);
    h->hla.address = "127.0.0.1";
    h->hla.port = 15008;
    mesh__v1__http_connection_manager__init(&h->hcm);
    h->hcm.route_config = "rc";
    mesh__v1__listener__init(&h->hl);
    h->hl.name = "web";
    h->hl.address = &h->hla;
    h->hl.handler_case = MESH__V1__LISTENER__HANDLER_HTTP;
    h->hl.http = &h->hcm;
    h->ls[0] = &h->f.l;
    h->ls[1] = &h->hl;
    b->listeners = h->ls;
    b->n_listeners = 2;
    b->n_clusters = 2; /* app, other */
    mesh__v1__http2_options__init(&h->lh2);
    mesh__v1__http2_options__init(&h->ch2);
    mesh__v1__cluster__connection_pool__init(&h->pool);
    h->pool.http2 = &h->ch2;

    /* routes[0]: gRPC test.v1.Echo/Unary -> app, 5 s */
    mesh__v1__grpc_match__init(&h->g);
    h->g.service = "test.v1.Echo";
    h->g.method = "Unary";
    /* routes[1]: prefix /v1/ with headers -> app 80 / other 20 */
    mesh__v1__header_matcher__init(&h->hm[0]);
    h->hm[0].name = "x-env";
    h->hm[0].match_case = MESH__V1__HEADER_MATCHER__MATCH_EXACT;
    h->hm[0].exact = "canary";
    mesh__v1__header_matcher__init(&h->hm[1]);
    h->hm[1].name = "x-internal";
    h->hm[1].match_case = MESH__V1__HEADER_MATCHER__MATCH_PRESENT;
    h->hm[1].present = false;
    h->hms[0] = &h->hm[0];
    h->hms[1] = &h->hm[1];
    mesh__v1__weighted_clusters__init(&h->wc);
    for (int i = 0; i < 2; i++) {
        mesh__v1__cluster_weight__init(&h->cw[i]);
        h->cws[i] = &h->cw[i];
        mesh__v1__header_value__init(&h->hv[i]);
    }
    h->cw[0].name = "app";
    h->cw[0].weight = 80;
    h->cw[1].name = "other";
    h->cw[1].weight = 20;
    h->wc.n_clusters = 2;
    h->wc.clusters = h->cws;
    h->hv[0].key = "x-route";
    h->hv[0].value = "v1 \"canary\"";
    h->hv[1].key = "x-served-by";
    h->hv[1].value = "meshd";
    h->req_add[0] = &h->hv[0];
    h->resp_add[0] = &h->hv[1];
    h->req_remove[0] = "x-debug";
    h->resp_remove[0] = "server";
    /* routes[3]: every method of test.v1.Echo */
    mesh__v1__grpc_match__init(&h->g_any);
    h->g_any.service = "test.v1.Echo";

    for (int i = 0; i < 4; i++) {
        mesh__v1__route__init(&h->r[i]);
        mesh__v1__route_match__init(&h->m[i]);
        mesh__v1__route_action__init(&h->a[i]);
        h->r[i].match = &h->m[i];
        h->r[i].route = &h->a[i];
        h->rs[i] = &h->r[i];
        h->a[i].cluster_specifier_case = MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
        h->a[i].cluster = "app";
    }
    h->m[0].path_specifier_case = MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_GRPC;
    h->m[0].grpc = &h->g;
    h->a[0].timeout_ms = 5000;
    h->m[1].path_specifier_case = MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
    h->m[1].prefix = "/v1/";
    h->m[1].n_headers = 2;
    h->m[1].headers = h->hms;
    h->a[1].cluster_specifier_case = MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS;
    h->a[1].weighted_clusters = &h->wc;
    h->a[1].prefix_rewrite = "/";
    h->a[1].n_request_headers_to_add = 1;
    h->a[1].request_headers_to_add = h->req_add;
    h->a[1].n_request_headers_to_remove = 1;
    h->a[1].request_headers_to_remove = h->req_remove;
    h->a[1].n_response_headers_to_add = 1;
    h->a[1].response_headers_to_add = h->resp_add;
    h->a[1].n_response_headers_to_remove = 1;
    h->a[1].response_headers_to_remove = h->resp_remove;
    h->r[2].name = "health";
    h->m[2].path_specifier_case = MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PATH;
    h->m[2].path = "/health";
    h->a[2].cluster = "other";
    h->m[3].path_specifier_case = MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_GRPC;
    h->m[3].grpc = &h->g_any;

    mesh__v1__virtual_host__init(&h->vh);
    h->vh.name = "api";
    h->domains[0] = "api.example.com";
    h->domains[1] = "*.Example.COM";
    h->domains[2] = "API.*";
    h->vh.n_domains = 3;
    h->vh.domains = h->domains;
    h->vh.n_routes = 4;
    h->vh.routes = h->rs;

    mesh__v1__route__init(&h->r2);
    mesh__v1__route_match__init(&h->m2);
    mesh__v1__route_action__init(&h->a2);
    h->m2.path_specifier_case = MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
    h->m2.prefix = "/";
    h->a2.cluster_specifier_case = MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    h->a2.cluster = "other";
    h->r2.match = &h->m2;
    h->r2.route = &h->a2;
    h->rs2[0] = &h->r2;
    mesh__v1__virtual_host__init(&h->vh2);
    h->vh2.name = "fallback";
    h->domains2[0] = "*";
    h->vh2.n_domains = 1;
    h->vh2.domains = h->domains2;
    h->vh2.n_routes = 1;
    h->vh2.routes = h->rs2;

    h->vhs[0] = &h->vh;
    h->vhs[1] = &h->vh2;
    mesh__v1__route_configuration__init(&h->rc);
    h->rc.name = "rc";
    h->rc.n_virtual_hosts = 2;
    h->rc.virtual_hosts = h->vhs;
    h->rc2 = h->rc;
    h->rc2.name = "rc2";
    h->rcs[0] = &h->rc;
    h->rcs[1] = &h->rc2;
    b->n_route_configs = 1;
    b->route_configs = h->rcs;
}

void rfix_init(struct rfix *r)
{
    memset(r, 0, sizeof(*r));
    hfix_init(&r->h);
    for (int i = 0; i < 6; i++) {
        mesh__v1__principal__init(&r->pr[i]);
        r->prs[i] = &r->pr[i];
    }
    r->pr[0].identity_case = MESH__V1__PRINCIPAL__IDENTITY_SPIFFE_ID;
    r->pr[0].spiffe_id = "spiffe://mesh.test/ns/shop/sa/web";
    r->pr[1].identity_case = MESH__V1__PRINCIPAL__IDENTITY_SPIFFE_ID_PREFIX;
    r->pr[1].spiffe_id_prefix = "spiffe://mesh.test/ns/ops/";
    r->pr[2].identity_case = MESH__V1__PRINCIPAL__IDENTITY_TRUST_DOMAIN;
    r->pr[2].trust_domain = "partner.test";
    r->pr[3].identity_case = MESH__V1__PRINCIPAL__IDENTITY_AUTHENTICATED;
    r->pr[3].authenticated = true;
    r->pr[4].identity_case = MESH__V1__PRINCIPAL__IDENTITY_UNAUTHENTICATED;
    r->pr[4].unauthenticated = true;
    r->pr[5].identity_case = MESH__V1__PRINCIPAL__IDENTITY_ANY;
    r->pr[5].any = true;
    mesh__v1__grpc_match__init(&r->g);
    r->g.service = "test.v1.Echo";
    r->g.method = "Unary";
    mesh__v1__header_matcher__init(&r->hm);
    r->hm.name = "x-role";
    r->hm.match_case = MESH__V1__HEADER_MATCHER__MATCH_EXACT;
    r->hm.exact = "ops";
    r->hms[0] = &r->hm;
    for (int i = 0; i < 2; i++) {
        mesh__v1__permission__init(&r->pm[i]);
        r->pms[i] = &r->pm[i];
    }
    r->pm[0].grpc = &r->g;
    r->pm[1].path_prefix = "/admin/";
    r->pm[1].n_headers = 1;
    r->pm[1].headers = r->hms;
    for (int i = 0; i < 3; i++)
        mesh__v1__rbac_policy__init(&r->p[i]);
    r->p[0].name = "grpc-echo";
    r->p[0].n_principals = 6;
    r->p[0].principals = r->prs;
    r->p[0].n_permissions = 2;
    r->p[0].permissions = r->pms;
    r->p[1].name = "open";
    r->p[2].name = "deny-web";
    r->p[2].n_principals = 1;
    r->p[2].principals = r->prs;
    r->lps[0] = &r->p[0];
    r->lps[1] = &r->p[1];
    r->rps[0] = &r->p[2];
    mesh__v1__rbac__init(&r->lr);
    r->lr.n_policies = 2;
    r->lr.policies = r->lps;
    mesh__v1__rbac__init(&r->rr);
    r->rr.action = MESH__V1__RBAC__ACTION__DENY;
    r->rr.n_policies = 1;
    r->rr.policies = r->rps;
    r->h.hcm.rbac = &r->lr;
    r->h.r[0].rbac = &r->rr;
}
