/* SPDX-License-Identifier: Apache-2.0 */
/* Every bundle error the validator and the wire check report: each test
 * builds a bundle, breaks one thing and expects one precise line. */
#include "bundle.h"
#include "mesh/v1/bundle.pb-c.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* failmalloc: snapshot.c is compiled into this test with its allocations
 * routed through counters, so a test can fail the i-th one (its definitions
 * replace the library's). */
static long alloc_fail_at = -1, alloc_count;

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

static void fixture_init(struct fixture *f)
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

/* Packs |b|, lets |mutate| edit the bytes, loads them; returns all error lines
 * joined (caller frees) and the load's return code. */
static char *load(const Mesh__V1__Bundle *b, size_t cut, const char *append, int *rc_out,
                  size_t *n_errors)
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

static void expect_error(const Mesh__V1__Bundle *b, const char *want)
{
    int rc;
    size_t n;
    char *out = load(b, 0, NULL, &rc, &n);
    if (!strstr(out, want))
        fail_msg("expected error containing\n  %s\ngot\n%s", want, out);
    assert_int_not_equal(rc, 0);
    free(out);
}

static void expect_valid(const Mesh__V1__Bundle *b)
{
    int rc;
    size_t n;
    char *out = load(b, 0, NULL, &rc, &n);
    if (rc != 0)
        fail_msg("expected a valid bundle, got\n%s", out);
    free(out);
}

/* config_dump of |s| holds every one of |want| (the dump shown if not). */
static void assert_dump_has(const struct md_snapshot *s, const char *const *want, size_t n)
{
    char *dump;
    size_t len;
    assert_int_equal(md_snapshot_dump(s, &dump, &len), 0);
    for (size_t i = 0; i < n; i++)
        if (!strstr(dump, want[i]))
            fail_msg("config_dump lacks\n%s\n--- dump ---\n%s", want[i], dump);
    free(dump);
}

static void test_valid(void **state)
{
    struct fixture f;
    fixture_init(&f);
    int rc;
    size_t n;
    char *out = load(&f.b, 0, NULL, &rc, &n);
    assert_int_equal(rc, 0);
    assert_int_equal(n, 0);
    assert_string_equal(out, "");
    free(out);
}

static void test_unknown_cluster(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.tp.cluster = "nope";
    expect_error(
        &f.b,
        "error: t.pb: listener \"in\" (listeners[0]): tcp_proxy.cluster: unknown cluster \"nope\"");
}

static void test_missing_cluster_ref(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.tp.cluster = "";
    expect_error(&f.b, "listener \"in\" (listeners[0]): tcp_proxy.cluster: required");
}

static void test_duplicate_names(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.b.n_listeners = 2;
    f.l2.name = "in";
    f.b.n_clusters = 2;
    f.c2.name = "app";
    expect_error(&f.b, "listener \"in\" (listeners[1]): name: duplicate of listeners[0]");
    expect_error(&f.b, "cluster \"app\" (clusters[1]): name: duplicate of clusters[0]");
}

static void test_duplicate_bind(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.b.n_listeners = 2;
    f.l2.address = &f.la;
    expect_error(
        &f.b,
        "listener \"in2\" (listeners[1]): address: 127.0.0.1:15006 already bound by listeners[0]");
}

static void test_port_range(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.la.port = 70000;
    expect_error(&f.b, "listener \"in\" (listeners[0]): address.port: 70000 out of range 1-65535");
    f.la.port = 0;
    expect_error(&f.b, "address.port: 0 out of range 1-65535");
    f.la.port = 80;
    f.ea[1].port = 65536;
    expect_error(&f.b,
                 "cluster \"app\" (clusters[0]): endpoints[1].address.port: 65536 out of range");
}

static void test_bad_address(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.la.address = "localhost";
    expect_error(&f.b, "address.address: \"localhost\" is not an IPv4 or IPv6 literal");
    f.la.address = "";
    expect_error(&f.b, "listener \"in\" (listeners[0]): address.address: required");
    f.la.address = "::1";
    f.l.address = NULL;
    expect_error(&f.b, "listener \"in\" (listeners[0]): address: required");
}

static void test_empty_static_cluster(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.c.n_endpoints = 0;
    expect_error(
        &f.b,
        "cluster \"app\" (clusters[0]): endpoints: a STATIC cluster needs at least one endpoint");
}

static void test_duplicate_endpoint(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.ea[1].port = f.ea[0].port;
    expect_error(&f.b,
                 "cluster \"app\" (clusters[0]): endpoints[1].address: duplicate of endpoints[0]");
}

static void test_unknown_enum(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.c.lb_policy = 7;
    expect_error(
        &f.b, "cluster \"app\" (clusters[0]): lb_policy: unknown enum value 7 (known: ROUND_ROBIN, "
              "WEIGHTED_ROUND_ROBIN, LEAST_REQUEST, RING_HASH, MAGLEV, RANDOM)");
    f.c.lb_policy = 0;
    f.c.type = 3;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): type: unknown enum value 3");
}

static void test_discovery(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.c.dns_name = "backend.test";
    expect_error(&f.b,
                 "cluster \"app\" (clusters[0]): dns_name: only for DNS and DNS_SRV clusters");
    f.c.type = MESH__V1__CLUSTER__DISCOVERY_TYPE__DNS;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): endpoints: only for STATIC clusters");
    expect_error(&f.b, "cluster \"app\" (clusters[0]): dns_port: missing: 1-65535 is required");
    f.c.n_endpoints = 0;
    f.c.dns_port = 8080;
    f.c.dns_name = "bad_name!";
    expect_error(&f.b, "cluster \"app\" (clusters[0]): dns_name: \"bad_name!\" is not a host name");
    f.c.dns_name = "";
    expect_error(&f.b, "cluster \"app\" (clusters[0]): dns_name: required for DNS");
    f.c.dns_name = "backend.test";
    expect_valid(&f.b);
    f.c.type = MESH__V1__CLUSTER__DISCOVERY_TYPE__DNS_SRV;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): dns_port: only for DNS clusters");
    f.c.dns_port = 0;
    f.c.dns_name = "_grpc._tcp.backend.test";
    expect_valid(&f.b);
}

static void test_lb_and_health(void **state)
{
    struct fixture f;
    fixture_init(&f);
    Mesh__V1__HashPolicy hp = MESH__V1__HASH_POLICY__INIT, *hps[] = {&hp};
    f.c.n_hash_policy = 1;
    f.c.hash_policy = hps;
    expect_error(
        &f.b,
        "cluster \"app\" (clusters[0]): hash_policy: only for lb_policy RING_HASH and MAGLEV");
    f.c.lb_policy = MESH__V1__CLUSTER__LB_POLICY__MAGLEV;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): hash_policy[0]: header or source_ip: true "
                       "is required");
    hp.policy_case = MESH__V1__HASH_POLICY__POLICY_HEADER;
    hp.header = "X-User";
    expect_error(&f.b, "cluster \"app\" (clusters[0]): hash_policy[0].header: \"X-User\" must be "
                       "lower case");
    hp.header = "x-user";
    expect_valid(&f.b);
    Mesh__V1__Cluster__RingHash rh = MESH__V1__CLUSTER__RING_HASH__INIT;
    rh.points_per_weight = 10;
    f.c.ring_hash = &rh;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): ring_hash: only for lb_policy RING_HASH");
    f.c.lb_policy = MESH__V1__CLUSTER__LB_POLICY__RING_HASH;
    expect_error(
        &f.b, "cluster \"app\" (clusters[0]): ring_hash.points_per_weight: 10 points out of range");
    rh.points_per_weight = 1024;
    f.e[0].weight = 2000000;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): endpoints[0].weight: 2000000 out of range");
    f.e[0].weight = 3;
    f.e[1].priority = 200;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): endpoints[1].priority: 200, at most 127");
    f.e[1].priority = 1;
    f.c.panic_threshold_percent = 101;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): panic_threshold_percent: 101% out of range");
    f.c.panic_threshold_percent = 0;
    expect_valid(&f.b);

    Mesh__V1__HealthCheck hc = MESH__V1__HEALTH_CHECK__INIT;
    f.c.health_check = &hc;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): health_check: a check is required");
    Mesh__V1__HttpHealthCheck http = MESH__V1__HTTP_HEALTH_CHECK__INIT;
    uint32_t st[] = {200, 700};
    hc.check_case = MESH__V1__HEALTH_CHECK__CHECK_HTTP;
    hc.http = &http;
    http.path = "";
    expect_error(&f.b, "cluster \"app\" (clusters[0]): health_check.http.path: required");
    http.path = "/healthz";
    http.n_expected_statuses = 2;
    http.expected_statuses = st;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): health_check.http.expected_statuses[1]: 700 "
                       "is not an HTTP status");
    st[1] = 204;
    hc.interval_ms = 500;
    hc.timeout_ms = 600;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): health_check.timeout_ms: 600 ms, at most "
                       "interval_ms (500 ms)");
    hc.timeout_ms = 0;
    hc.unhealthy_threshold = 1000;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): health_check.unhealthy_threshold: 1000 out "
                       "of range");
    hc.unhealthy_threshold = 0;
    expect_valid(&f.b);
}

static void test_names(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.l.name = "";
    expect_error(&f.b, "listeners[0]: name: required");
    f.l.name = "bad name!";
    expect_error(&f.b, "name: \"bad name!\" must match [a-zA-Z0-9_.-]{1,64}");
}

static void test_handler_required(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.l.handler_case = MESH__V1__LISTENER__HANDLER__NOT_SET;
    f.l.tcp_proxy = NULL;
    expect_error(&f.b, "listener \"in\" (listeners[0]): handler: none set");
}

static void test_ranges(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.tp.buffer_limit_bytes = 100;
    expect_error(&f.b, "tcp_proxy.buffer_limit_bytes: 100 bytes out of range");
    f.tp.buffer_limit_bytes = 0;
    f.c.connect_timeout_ms = 600000;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): connect_timeout_ms: 600000 ms out of range");
    f.c.connect_timeout_ms = 0;
    f.c.max_connect_attempts = 17;
    expect_error(&f.b, "max_connect_attempts: 17 out of range");
    f.c.max_connect_attempts = 0;
    f.tp.idle_timeout_ms = 90000000;
    expect_error(&f.b, "tcp_proxy.idle_timeout_ms: 90000000 ms out of range");
}

static void test_no_listeners(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.b.n_listeners = 0;
    expect_error(&f.b, "error: t.pb: bundle: listeners: none defined");
}

static void test_admin(void **state)
{
    struct fixture f;
    fixture_init(&f);
    Mesh__V1__Admin admin = MESH__V1__ADMIN__INIT;
    Mesh__V1__SocketAddress aa = MESH__V1__SOCKET_ADDRESS__INIT;
    aa.address = "127.0.0.1";
    aa.port = 15006;
    admin.address = &aa;
    f.b.admin = &admin;
    expect_error(&f.b,
                 "listener \"in\" (listeners[0]): address: 127.0.0.1:15006 is the admin address");
    aa.port = 0;
    expect_error(&f.b, "admin: address.port: 0 out of range");
}

static void test_all_errors_reported(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.tp.cluster = "nope";
    f.la.port = 99999;
    f.c.n_endpoints = 0;
    int rc;
    size_t n;
    char *out = load(&f.b, 0, NULL, &rc, &n);
    assert_int_equal(n, 3);
    free(out);
}

static void test_truncated(void **state)
{
    struct fixture f;
    fixture_init(&f);
    size_t len = mesh__v1__bundle__get_packed_size(&f.b);
    int rc;
    size_t n;
    char *out = load(&f.b, len - 3, NULL, &rc, &n);
    assert_int_equal(n, 1);
    if (!strstr(out, "error: t.pb: bundle: clusters[0]") || !strstr(out, "truncated"))
        fail_msg("got %s", out);
    free(out);
    out = load(&f.b, 5, NULL, &rc, &n);
    if (!strstr(out, "listeners[0]") || !strstr(out, "truncated: declares"))
        fail_msg("got %s", out);
    free(out);
}

static void test_trailing_garbage(void **state)
{
    struct fixture f;
    fixture_init(&f);
    int rc;
    size_t n;
    char *out = load(&f.b, 0, "garbage!", &rc, &n);
    if (!strstr(out, "(top level): byte ") || !strstr(out, "trailing garbage"))
        fail_msg("got %s", out);
    assert_int_not_equal(rc, 0);
    free(out);
    out = load(&f.b, 0, "\xff\xff", &rc, &n);
    if (!strstr(out, "truncated field tag"))
        fail_msg("got %s", out);
    free(out);
}

static void test_wrong_wire_type(void **state)
{
    /* field 2 (clusters, a message) sent as a varint */
    static const uint8_t bytes[] = {0x10, 0x01};
    struct md_errlist el;
    md_errlist_init(&el, "w.pb");
    struct md_snapshot *snap = NULL;
    assert_int_not_equal(md_bundle_load_mem(bytes, sizeof(bytes), &el, &snap), 0);
    assert_string_equal(el.lines[0], "error: w.pb: bundle: clusters[0]: byte 0: wire type varint, "
                                     "the schema says length-delimited");
    md_errlist_fini(&el);
}

static void test_default_bundle_valid(void **state)
{
    struct md_errlist el;
    md_errlist_init(&el, "default");
    struct md_snapshot *snap = NULL;
    assert_int_equal(md_bundle_load_mem(md_default_bundle, md_default_bundle_len, &el, &snap), 0);
    assert_int_equal(snap->n_listeners, 1);
    assert_string_equal(snap->listeners[0].label, "0.0.0.0:15006");
    assert_string_equal(snap->clusters[0].endpoints[0].label, "127.0.0.1:8080");
    assert_string_equal(snap->admin_label, "127.0.0.1:15000");
    assert_dump_has(snap, (const char *const[]){"name: \"inbound\""}, 1);
    md_snapshot_unref(snap);
    md_errlist_fini(&el);
}

static void test_missing_file(void **state)
{
    struct md_errlist el;
    md_errlist_init(&el, "/nonexistent.pb");
    struct md_snapshot *snap = NULL;
    assert_true(md_bundle_load_file("/nonexistent.pb", &el, &snap) < 0);
    assert_string_equal(el.lines[0],
                        "error: /nonexistent.pb: bundle: cannot open: No such file or directory");
    md_errlist_fini(&el);
}

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

static void hfix_init(struct hfix *h)
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

#define RC "route_config \"rc\" (route_configs[0]): "
#define WEB "listener \"web\" (listeners[1]): "
#define R(v, r) RC "virtual_hosts[" #v "].routes[" #r "]."

static struct md_snapshot *load_snapshot(const Mesh__V1__Bundle *b)
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

static void test_http_valid_snapshot(void **state)
{
    struct hfix h;
    hfix_init(&h);
    struct md_snapshot *s = load_snapshot(&h.f.b);

    const struct md_snap_listener *l = &s->listeners[1];
    assert_int_equal(s->listeners[0].handler, MD_HANDLER_TCP_PROXY);
    assert_int_equal(l->handler, MD_HANDLER_HTTP);
    assert_int_equal(l->http.codec, MD_HTTP_CODEC_H2C);
    assert_int_equal(l->http.route_config, 0);
    assert_int_equal(l->http.h2.max_concurrent_streams, MD_DEFAULT_H2_MAX_CONCURRENT_STREAMS);
    assert_int_equal(l->http.h2.initial_stream_window, MD_DEFAULT_H2_STREAM_WINDOW);
    assert_int_equal(l->http.h2.initial_connection_window, MD_DEFAULT_H2_CONNECTION_WINDOW);
    assert_int_equal(l->http.h2.max_header_list_size, MD_DEFAULT_H2_MAX_HEADER_LIST);
    assert_int_equal(l->http.stream_idle_timeout_ms, MD_DEFAULT_STREAM_IDLE_TIMEOUT_MS);
    assert_int_equal(l->http.idle_timeout_ms, MD_DEFAULT_HTTP_IDLE_TIMEOUT_MS);
    assert_int_equal(l->http.request_headers_timeout_ms, MD_DEFAULT_REQUEST_HEADERS_TIMEOUT_MS);

    const struct md_snap_cluster *c = &s->clusters[0];
    assert_int_equal(c->protocol, MD_CLUSTER_HTTP2);
    assert_int_equal(c->h2.max_concurrent_streams, MD_DEFAULT_H2_MAX_CONCURRENT_STREAMS);
    assert_int_equal(c->h2.initial_connection_window, MD_DEFAULT_H2_CONNECTION_WINDOW);
    assert_int_equal(c->max_connections_per_endpoint, MD_DEFAULT_POOL_MAX_CONNECTIONS);
    assert_int_equal(c->pool_idle_timeout_ms, MD_DEFAULT_POOL_IDLE_TIMEOUT_MS);
    assert_int_equal(c->keepalive_interval_ms, MD_DEFAULT_KEEPALIVE_INTERVAL_MS);

    assert_int_equal(s->n_route_configs, 1);
    const struct md_snap_route_config *rc = &s->route_configs[0];
    assert_string_equal(rc->name, "rc");
    assert_int_equal(rc->n_vhosts, 2);
    const struct md_snap_vhost *vh = &rc->vhosts[0];
    assert_string_equal(vh->name, "api");
    assert_int_equal(vh->n_domains, 3);
    assert_int_equal(vh->domains[0].kind, MD_DOMAIN_EXACT);
    assert_string_equal(vh->domains[0].text, "api.example.com");
    assert_int_equal(vh->domains[0].len, 15);
    assert_int_equal(vh->domains[1].kind, MD_DOMAIN_SUFFIX);
    assert_string_equal(vh->domains[1].text, ".example.com");
    assert_int_equal(vh->domains[1].len, 12);
    assert_int_equal(vh->domains[2].kind, MD_DOMAIN_PREFIX);
    assert_string_equal(vh->domains[2].text, "api.");
    assert_int_equal(rc->vhosts[1].domains[0].kind, MD_DOMAIN_ANY);
    assert_int_equal(rc->vhosts[1].domains[0].len, 0);

    assert_int_equal(vh->n_routes, 4);
    const struct md_snap_route *r = &vh->routes[0];
    assert_string_equal(r->name, "api/routes[0]");
    assert_int_equal(r->kind, MD_PATH_MATCH_GRPC);
    assert_string_equal(r->path, "/test.v1.Echo/Unary");
    assert_int_equal(r->path_len, 19);
    assert_false(r->grpc_any_method);
    assert_int_equal(r->n_clusters, 1);
    assert_int_equal(r->clusters[0].cluster, 0);
    assert_int_equal(r->total_weight, 1);
    assert_int_equal(r->timeout_ms, 5000);
    assert_null(r->prefix_rewrite);
    assert_int_equal(r->n_req_add + r->n_req_remove + r->n_resp_add + r->n_resp_remove, 0);

    r = &vh->routes[1];
    assert_string_equal(r->name, "api/routes[1]");
    assert_int_equal(r->kind, MD_PATH_MATCH_PREFIX);
    assert_string_equal(r->path, "/v1/");
    assert_int_equal(r->n_headers, 2);
    assert_string_equal(r->headers[0].name, "x-env");
    assert_int_equal(r->headers[0].kind, MD_HDR_MATCH_EXACT);
    assert_string_equal(r->headers[0].value, "canary");
    assert_int_equal(r->headers[0].value_len, 6);
    assert_int_equal(r->headers[1].kind, MD_HDR_MATCH_ABSENT);
    assert_null(r->headers[1].value);
    assert_int_equal(r->n_clusters, 2);
    assert_int_equal(r->clusters[0].cluster, 0);
    assert_int_equal(r->clusters[0].weight, 80);
    assert_int_equal(r->clusters[1].cluster, 1);
    assert_int_equal(r->clusters[1].weight, 20);
    assert_int_equal(r->total_weight, 100);
    assert_int_equal(r->timeout_ms, 0);
    assert_string_equal(r->prefix_rewrite, "/");
    assert_int_equal(r->prefix_rewrite_len, 1);
    assert_int_equal(r->n_req_add, 1);
    assert_string_equal(r->req_add[0].name, "x-route");
    assert_int_equal(r->req_add[0].name_len, 7);
    assert_string_equal(r->req_add[0].value, "v1 \"canary\"");
    assert_int_equal(r->n_req_remove, 1);
    assert_string_equal(r->req_remove[0], "x-debug");
    assert_string_equal(r->resp_add[0].name, "x-served-by");
    assert_string_equal(r->resp_remove[0], "server");

    r = &vh->routes[2];
    assert_string_equal(r->name, "health");
    assert_int_equal(r->kind, MD_PATH_MATCH_EXACT);
    assert_string_equal(r->path, "/health");
    assert_int_equal(r->clusters[0].cluster, 1);

    r = &vh->routes[3];
    assert_int_equal(r->kind, MD_PATH_MATCH_GRPC);
    assert_string_equal(r->path, "/test.v1.Echo/");
    assert_true(r->grpc_any_method);

    static const char *const want[] = {
        "  http {\n    codec: H2C\n    route_config: \"rc\"\n",
        "    stream_idle_timeout_ms: 300000\n",
        "  protocol: HTTP2\n  pool {\n",
        "    max_connections_per_endpoint: 8\n",
        "route_config {\n  name: \"rc\"\n",
        "    domain: \"*.example.com\"\n",
        "    domain: \"api.*\"\n",
        "    domain: \"*\"\n",
        "        grpc: \"/test.v1.Echo/Unary\"\n",
        "        grpc: \"/test.v1.Echo/\"  # every method\n",
        "        header { name: \"x-env\" exact: \"canary\" }\n",
        "        header { name: \"x-internal\" present: false }\n",
        "        weighted_cluster { name: \"app\" weight: 80 }\n",
        "        request_header_to_add { key: \"x-route\" value: \"v1 \\\"canary\\\"\" }\n",
        "        response_header_to_remove: \"server\"\n",
        "        prefix_rewrite: \"/\"\n",
        "        timeout_ms: 5000\n",
        "      name: \"health\"\n",
    };
    assert_dump_has(s, want, sizeof(want) / sizeof(want[0]));
    md_snapshot_unref(s);
}

static void test_http_settings_carried(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.hcm.http2 = &h.lh2;
    h.lh2.max_concurrent_streams = 10;
    h.lh2.initial_stream_window = 65536;
    h.lh2.initial_connection_window = 65536;
    h.lh2.max_header_list_size = 1024;
    h.hcm.stream_idle_timeout_ms = 1000;
    h.hcm.idle_timeout_ms = 2000;
    h.hcm.request_headers_timeout_ms = 500;
    h.f.c.pool = &h.pool;
    h.ch2.max_concurrent_streams = 7;
    h.pool.max_connections_per_endpoint = 2;
    h.pool.idle_timeout_ms = 3000;
    h.pool.keepalive_interval_ms = 4000;
    struct md_snapshot *s = load_snapshot(&h.f.b);
    const struct md_snap_http *ht = &s->listeners[1].http;
    assert_int_equal(ht->h2.max_concurrent_streams, 10);
    assert_int_equal(ht->h2.initial_stream_window, 65536);
    assert_int_equal(ht->h2.initial_connection_window, 65536);
    assert_int_equal(ht->h2.max_header_list_size, 1024);
    assert_int_equal(ht->stream_idle_timeout_ms, 1000);
    assert_int_equal(ht->idle_timeout_ms, 2000);
    assert_int_equal(ht->request_headers_timeout_ms, 500);
    const struct md_snap_cluster *c = &s->clusters[0];
    assert_int_equal(c->h2.max_concurrent_streams, 7);
    assert_int_equal(c->h2.initial_stream_window, MD_DEFAULT_H2_STREAM_WINDOW);
    assert_int_equal(c->max_connections_per_endpoint, 2);
    assert_int_equal(c->pool_idle_timeout_ms, 3000);
    assert_int_equal(c->keepalive_interval_ms, 4000);
    assert_int_equal(s->clusters[1].max_connections_per_endpoint, MD_DEFAULT_POOL_MAX_CONNECTIONS);
    md_snapshot_unref(s);
}

/* Every allocation of the build fails once in turn: each failure must come
 * back as MD_ENOMEM with nothing leaked (the ASan build checks). */
static void test_http_snapshot_enomem(void **state)
{
    struct hfix h;
    hfix_init(&h);
    struct md_errlist el;
    md_errlist_init(&el, "t.pb");
    assert_int_equal(md_validate_bundle(&h.f.b, &el), 0);
    md_errlist_fini(&el);
    long points = 0;
    for (;; points++) {
        alloc_fail_at = points;
        alloc_count = 0;
        struct md_snapshot *s = NULL;
        int rc = md_snapshot_build(&h.f.b, &s);
        if (rc == 0) {
            md_snapshot_unref(s);
            break;
        }
        assert_int_equal(rc, MD_ENOMEM);
        assert_null(s);
    }
    alloc_fail_at = -1;
    assert_true(points > 40); /* every route part allocates */
}

static void test_http_listener_route_config(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.hcm.route_config = "";
    expect_error(&h.f.b, "error: t.pb: " WEB "http.route_config: required");
    h.hcm.route_config = "nope";
    expect_error(&h.f.b, WEB "http.route_config: unknown route_config \"nope\"");
    h.hcm.route_config = "rc";
    h.hcm.codec = 5;
    expect_error(&h.f.b, WEB "http.codec: unknown enum value 5 (known: H2C, HTTP1, AUTO)");
}

static void test_http_listener_h2_ranges(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.hcm.http2 = &h.lh2;
    h.lh2.max_concurrent_streams = 10001;
    expect_error(&h.f.b, WEB "http.http2.max_concurrent_streams: 10001 out of range: 0 for the "
                             "default, or 1-10000");
    h.lh2.max_concurrent_streams = 0;
    h.lh2.initial_stream_window = 1000;
    expect_error(&h.f.b, WEB "http.http2.initial_stream_window: 1000 bytes out of range: 0 for "
                             "the default, or 65536-16777216");
    h.lh2.initial_stream_window = 0;
    h.lh2.initial_connection_window = 128u << 20;
    expect_error(&h.f.b, WEB "http.http2.initial_connection_window: 134217728 bytes out of range: "
                             "0 for the default, or 65536-67108864");
    h.lh2.initial_connection_window = 0;
    h.lh2.max_header_list_size = 512;
    expect_error(&h.f.b, WEB "http.http2.max_header_list_size: 512 bytes out of range: 0 for the "
                             "default, or 1024-1048576");
    h.lh2.max_header_list_size = 0;
    h.lh2.initial_stream_window = 1u << 20;
    h.lh2.initial_connection_window = 512u << 10;
    expect_error(&h.f.b, WEB "http.http2.initial_connection_window: 524288 bytes is less than the "
                             "stream window (1048576 bytes)");
    h.lh2.initial_stream_window = 0;
    h.lh2.initial_connection_window = 128u << 10;
    expect_error(&h.f.b, WEB "http.http2.initial_connection_window: 131072 bytes is less than the "
                             "stream window (262144 bytes, the default)");
}

static void test_http_listener_timeouts(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.hcm.stream_idle_timeout_ms = 90000000;
    expect_error(&h.f.b, WEB "http.stream_idle_timeout_ms: 90000000 ms out of range: 0 for the "
                             "default, or 1-86400000");
    h.hcm.stream_idle_timeout_ms = 0;
    h.hcm.idle_timeout_ms = 86400001;
    expect_error(&h.f.b, WEB "http.idle_timeout_ms: 86400001 ms out of range");
    h.hcm.idle_timeout_ms = 0;
    h.hcm.request_headers_timeout_ms = 300001;
    expect_error(&h.f.b, WEB "http.request_headers_timeout_ms: 300001 ms out of range: 0 for the "
                             "default, or 1-300000");
}

static void test_http_listener_detection(void **state)
{
    struct hfix h;
    hfix_init(&h);
    Mesh__V1__TcpProxy tp = MESH__V1__TCP_PROXY__INIT;
    tp.cluster = "app";
    h.hcm.tcp_fallback = &tp;
    expect_error(&h.f.b, WEB "http.tcp_fallback: only for codec AUTO");
    h.hcm.codec = MESH__V1__HTTP_CONNECTION_MANAGER__CODEC__AUTO;
    tp.cluster = "nope";
    expect_error(&h.f.b, WEB "http.tcp_fallback.cluster: unknown cluster \"nope\"");
    tp.cluster = "app";
    h.hcm.detect_timeout_ms = 10001;
    expect_error(&h.f.b, WEB "http.detect_timeout_ms: 10001 ms out of range: 0 for the default, "
                             "or 1-10000");
    h.hcm.tcp_fallback = NULL;
    h.hcm.detect_timeout_ms = 50;
    expect_error(&h.f.b, WEB "http.detect_timeout_ms: only for codec AUTO with a tcp_fallback");

    h.hcm.tcp_fallback = &tp;
    struct md_snapshot *snap = NULL;
    assert_int_equal(md_snapshot_build(&h.f.b, &snap), 0);
    const struct md_snap_listener *l = &snap->listeners[1]; /* web */
    assert_true(l->http.tcp_fallback);
    assert_int_equal(l->http.detect_timeout_ms, 50);
    assert_int_equal(l->tcp.buffer_limit, MD_DEFAULT_BUFFER_LIMIT);
    md_snapshot_unref(snap);
}

static void test_route_upgrades(void **state)
{
    struct hfix h;
    hfix_init(&h);
    char *types[] = {"WebSocket", "h2c", "x y", "websocket", ""};
    h.a[1].upgrade_types = types;
    h.a[1].n_upgrade_types = 5;
    expect_error(&h.f.b, R(0, 1) "route.upgrade_types[1]: \"h2c\" cannot be tunnelled");
    expect_error(&h.f.b, R(0, 1) "route.upgrade_types[2]: \"x y\": character \\x20 is not "
                                 "allowed in a protocol token");
    expect_error(&h.f.b, R(0, 1) "route.upgrade_types[3]: \"websocket\" repeats upgrade_types[0]");
    expect_error(&h.f.b, R(0, 1) "route.upgrade_types[4]: empty");
    h.a[1].n_upgrade_types = 1;
    h.a[1].refuse_upgrades = true;
    expect_error(&h.f.b, R(0, 1) "route.upgrade_types: must be empty when refuse_upgrades is set");
    h.a[1].n_upgrade_types = 0;

    struct md_snapshot *snap = NULL;
    h.a[2].upgrade_types = types;
    h.a[2].n_upgrade_types = 1;
    assert_int_equal(md_snapshot_build(&h.f.b, &snap), 0);
    const struct md_snap_vhost *vh = &snap->route_configs[0].vhosts[0];
    assert_int_equal(vh->routes[0].n_upgrades, 1); /* the default */
    assert_string_equal(vh->routes[0].upgrades[0], "websocket");
    assert_true(vh->routes[1].refuse_upgrades);
    assert_int_equal(vh->routes[1].n_upgrades, 0);
    assert_string_equal(vh->routes[2].upgrades[0], "websocket"); /* lower-cased */
    md_snapshot_unref(snap);
}

static void test_route_resilience(void **state)
{
    struct hfix h;
    hfix_init(&h);
    Mesh__V1__RetryPolicy rp = MESH__V1__RETRY_POLICY__INIT;
    h.a[1].retry_policy = &rp;
    expect_error(&h.f.b, R(0, 1) "route.retry_policy: retry_on or grpc_retry_on is required");
    char *on[] = {"5xx", "sometimes"}, *grpc_on[] = {"unavailable", "busy"};
    rp.retry_on = on;
    rp.n_retry_on = 2;
    rp.grpc_retry_on = grpc_on;
    rp.n_grpc_retry_on = 2;
    rp.num_retries = 11;
    expect_error(&h.f.b, R(0, 1) "route.retry_policy.retry_on[1]: \"sometimes\": one of 5xx");
    expect_error(&h.f.b, R(0, 1) "route.retry_policy.grpc_retry_on[1]: \"busy\" is not a gRPC "
                                 "status name");
    expect_error(&h.f.b, R(0, 1) "route.retry_policy.num_retries: 11, at most 10");
    rp.n_retry_on = rp.n_grpc_retry_on = 1;
    rp.num_retries = 0;
    Mesh__V1__RateLimit rl = MESH__V1__RATE_LIMIT__INIT;
    h.a[1].rate_limit = &rl;
    expect_error(&h.f.b, R(0, 1) "route.rate_limit.per_second: 0: 1 to 1000000 is required");
    rl.per_second = 100;
    Mesh__V1__FaultInjection fi = MESH__V1__FAULT_INJECTION__INIT;
    fi.abort_percent = 10;
    h.a[1].fault = &fi;
    expect_error(&h.f.b, R(0, 1) "route.fault.abort_percent: needs abort_http_status or "
                                 "abort_grpc_status");
    fi.abort_grpc_status = 14;
    h.a[1].fallback_cluster = "nope";
    expect_error(&h.f.b, R(0, 1) "route.fallback_cluster: unknown cluster \"nope\"");
    h.a[1].fallback_cluster = "";

    struct md_snapshot *snap = NULL;
    assert_int_equal(md_snapshot_build(&h.f.b, &snap), 0);
    const struct md_snap_route *r = &snap->route_configs[0].vhosts[0].routes[1];
    assert_non_null(r->retry);
    assert_int_equal(r->retry->num_retries, 2); /* the default */
    assert_int_equal(r->retry->on, MD_RETRY_ON_5XX);
    assert_int_equal(r->retry->grpc_on, 1u << 14);
    assert_int_equal(r->retry->buffer_limit, 64 * 1024);
    assert_int_equal(r->rate_limit->burst, 100);
    assert_int_equal(snap->n_rate_limits, 1);
    assert_ptr_equal(snap->rate_limits[0], r->rate_limit);
    assert_int_equal(r->fault->abort_grpc_status, 14);
    assert_int_equal(snap->clusters[0].breakers.max_requests, 1024);
    md_snapshot_unref(snap);
}

static void test_cluster_http_settings(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.f.c.protocol = 3;
    expect_error(&h.f.b, "cluster \"app\" (clusters[0]): protocol: unknown enum value 3 (known: "
                         "HTTP2, HTTP1)");
    h.f.c.protocol = 0;
    h.f.c.pool = &h.pool;
    h.pool.max_connections_per_endpoint = 2000;
    expect_error(&h.f.b, "cluster \"app\" (clusters[0]): pool.max_connections_per_endpoint: "
                         "2000 out of range: 0 for the default, or 1-1024");
    h.pool.max_connections_per_endpoint = 0;
    h.ch2.max_concurrent_streams = 20000;
    expect_error(&h.f.b, "cluster \"app\" (clusters[0]): pool.http2.max_concurrent_streams: "
                         "20000 out of range");
    h.ch2.max_concurrent_streams = 0;
    h.ch2.initial_connection_window = 65536;
    expect_error(&h.f.b, "pool.http2.initial_connection_window: 65536 bytes is less than "
                         "the stream window");
    h.ch2.initial_connection_window = 0;
    h.pool.idle_timeout_ms = 90000000;
    expect_error(&h.f.b, "pool.idle_timeout_ms: 90000000 ms out of range: 0 for the "
                         "default, or 1-86400000");
    h.pool.idle_timeout_ms = 0;
    h.pool.keepalive_interval_ms = 90000000;
    expect_error(&h.f.b, "pool.keepalive_interval_ms: 90000000 ms out of range");
    h.pool.keepalive_interval_ms = 10;
    expect_error(&h.f.b, "pool.keepalive_interval_ms: 10 ms out of range: 0 for the "
                         "default, or 1000-86400000");
}

static void test_route_config_names(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.rc.name = "";
    expect_error(&h.f.b, "error: t.pb: route_configs[0]: name: required");
    h.rc.name = "r c";
    expect_error(&h.f.b, "route_config \"r c\" (route_configs[0]): name: \"r c\" must match");
    h.rc.name = "rc";
    h.rc2.name = "rc";
    h.f.b.n_route_configs = 2;
    expect_error(&h.f.b, "route_config \"rc\" (route_configs[1]): name: duplicate of "
                         "route_configs[0]");
}

static void test_route_config_too_many(void **state)
{
    struct hfix h;
    hfix_init(&h);
    Mesh__V1__RouteConfiguration **many = calloc(4097, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < 4097; i++)
        many[i] = &h.rc;
    h.f.b.route_configs = many;
    h.f.b.n_route_configs = 4097;
    expect_error(&h.f.b, "error: t.pb: bundle: route_configs: 4097 defined, at most 4096");
    free(many);
}

static void test_virtual_hosts_too_many(void **state)
{
    struct hfix h;
    hfix_init(&h);
    Mesh__V1__VirtualHost **many = calloc(4097, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < 4097; i++)
        many[i] = &h.vh2;
    h.rc.virtual_hosts = many;
    h.rc.n_virtual_hosts = 4097;
    expect_error(&h.f.b, RC "virtual_hosts: 4097 defined, at most 4096");
    free(many);
}

static void test_virtual_hosts(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.rc.n_virtual_hosts = 0;
    expect_error(&h.f.b, RC "virtual_hosts: at least one virtual host is required");
    h.rc.n_virtual_hosts = 2;
    h.vh.name = "";
    expect_error(&h.f.b, RC "virtual_hosts[0].name: required");
    h.vh.name = "a/b";
    expect_error(&h.f.b, RC "virtual_hosts[0].name: \"a/b\" must match [a-zA-Z0-9_.-]{1,64}");
    h.vh.name = "fallback";
    expect_error(&h.f.b, RC "virtual_hosts[1].name: duplicate of virtual_hosts[0]");
    h.vh.name = "api";
    h.vh.n_domains = 0;
    expect_error(&h.f.b, RC "virtual_hosts[0].domains: at least one domain is required");
    h.vh.n_domains = 3;
    h.vh2.n_routes = 0;
    expect_error(&h.f.b, RC "virtual_hosts[1].routes: at least one route is required");
}

static void test_domain_syntax(void **state)
{
    struct hfix h;
    hfix_init(&h);
    static const struct {
        const char *domain, *want;
    } cases[] = {
        {"", "empty"},
        {"a*.example.com", "\"a*.example.com\": '*' only as \"*\", a leading \"*.\" or a trailing "
                           "\".*\""},
        {"*.*", "\"*.*\": '*' only as"},
        {"api.*.com", "\"api.*.com\": '*' only as"},
        {"*.", "\"*.\": nothing beside the wildcard"},
        {"api.example.com:8080",
         "\"api.example.com:8080\": a port never matches (it is removed from :authority)"},
        {"api example.com", "\"api example.com\": character \\x20 is not allowed in a domain"},
        {"api/x", "\"api/x\": character '/' is not allowed in a domain"},
        {"[::1", "\"[::1\": an IPv6 literal is \"[addr]\", no wildcard"},
        {"[::1]:80", "\"[::1]:80\": a port never matches"},
        {"[::g]", "\"[::g]\": character 'g' is not allowed in a domain"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[256];
        h.domains[1] = (char *)cases[i].domain;
        snprintf(want, sizeof(want), RC "virtual_hosts[0].domains[1]: %s", cases[i].want);
        expect_error(&h.f.b, want);
    }
    h.domains[1] = "[::1]";
    int rc;
    size_t n;
    char *out = load(&h.f.b, 0, NULL, &rc, &n);
    assert_string_equal(out, "");
    free(out);
}

static void test_domain_duplicates(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.domains2[0] = "API.example.com";
    expect_error(&h.f.b, RC "virtual_hosts[1].domains[0]: \"API.example.com\" already in "
                            "virtual_hosts[0].domains[0] (a domain may appear in one virtual host "
                            "only)");
    h.domains2[0] = "*";
    h.domains[2] = "api.example.com";
    expect_error(&h.f.b,
                 RC "virtual_hosts[0].domains[2]: \"api.example.com\" duplicate of domains[0]");
}

static void test_route_name(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.r[2].name = "bad name";
    expect_error(&h.f.b, R(0, 2) "name: \"bad name\" must match [a-zA-Z0-9_.-]{0,64}");
}

static void test_route_match_path(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.r[0].match = NULL;
    expect_error(&h.f.b, R(0, 0) "match: required");
    h.r[0].match = &h.m[0];
    h.m[2].path_specifier_case = MESH__V1__ROUTE_MATCH__PATH_SPECIFIER__NOT_SET;
    expect_error(&h.f.b, R(0, 2) "match: a path specifier is required: prefix, path or grpc");
    h.m[2].path_specifier_case = MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PATH;
    h.m[2].path = "health";
    expect_error(&h.f.b, R(0, 2) "match.path: \"health\" must start with '/'");
    h.m[2].path = "/a b";
    expect_error(&h.f.b, R(0, 2) "match.path: \"/a b\": character \\x20 is not allowed in a path");
    h.m[2].path = "/health";
    h.m[1].prefix = "";
    expect_error(&h.f.b, R(0, 1) "match.prefix: \"\" must start with '/'");
    h.m[1].prefix = "/v1?x";
    expect_error(&h.f.b, R(0, 1) "match.prefix: \"/v1?x\": character '?' is not allowed in a path");
}

static void test_route_match_grpc(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.g.service = "";
    expect_error(&h.f.b, R(0, 0) "match.grpc.service: required");
    static const char *const bad[] = {"test..Echo", "test/Echo",  ".Echo",
                                      "Echo.",      "1test.Echo", "test.v1.Echo "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[256];
        h.g.service = (char *)bad[i];
        snprintf(want, sizeof(want),
                 R(0, 0) "match.grpc.service: \"%s\" is not a dotted identifier (e.g. "
                         "\"test.v1.Echo\")",
                 bad[i]);
        expect_error(&h.f.b, want);
    }
    h.g.service = "Echo";
    h.g.method = "Un-ary";
    expect_error(&h.f.b,
                 R(0, 0) "match.grpc.method: \"Un-ary\" is not an identifier (e.g. \"Unary\")");
    h.g.method = "a.b";
    expect_error(&h.f.b, R(0, 0) "match.grpc.method: \"a.b\" is not an identifier");
}

static void test_route_match_headers(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.hm[0].name = "";
    expect_error(&h.f.b, R(0, 1) "match.headers[0].name: required");
    h.hm[0].name = "X-Env";
    expect_error(&h.f.b,
                 R(0, 1) "match.headers[0].name: \"X-Env\" must be lower case (HTTP/2 header "
                         "names are)");
    h.hm[0].name = ":path";
    expect_error(&h.f.b, R(0, 1) "match.headers[0].name: \":path\": pseudo-headers cannot be "
                                 "matched here");
    h.hm[0].name = "x env";
    expect_error(&h.f.b, R(0, 1) "match.headers[0].name: \"x env\": character \\x20 is not "
                                 "allowed in a header name");
    h.hm[0].name = "x-env";
    h.hm[1].match_case = MESH__V1__HEADER_MATCHER__MATCH__NOT_SET;
    expect_error(&h.f.b, R(0, 1) "match.headers[1]: exact or present is required");
    h.hm[1].match_case = MESH__V1__HEADER_MATCHER__MATCH_PRESENT;
    h.hm[0].exact = "a\r\nb";
    expect_error(&h.f.b, R(0, 1) "match.headers[0].exact: contains CR or LF: it could never match");
}

static void test_route_action_cluster(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.r[0].route = NULL;
    expect_error(&h.f.b, R(0, 0) "route: required");
    h.r[0].route = &h.a[0];
    h.a[0].cluster_specifier_case = MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER__NOT_SET;
    expect_error(&h.f.b, R(0, 0) "route: cluster or weighted_clusters is required");
    h.a[0].cluster_specifier_case = MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    h.a[0].cluster = "";
    expect_error(&h.f.b, R(0, 0) "route.cluster: required");
    h.a[0].cluster = "nope";
    expect_error(&h.f.b, R(0, 0) "route.cluster: unknown cluster \"nope\"");
    h.a[0].cluster = "app";
    h.a[0].timeout_ms = 86400001;
    expect_error(&h.f.b, R(0, 0) "route.timeout_ms: 86400001 ms out of range: 0 for the default, "
                                 "or 1-86400000");
}

static void test_route_action_weighted(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.wc.n_clusters = 0;
    expect_error(&h.f.b, R(0, 1) "route.weighted_clusters.clusters: at least one is required");
    h.wc.n_clusters = 2;
    h.cw[1].name = "nope";
    expect_error(&h.f.b,
                 R(0, 1) "route.weighted_clusters.clusters[1].name: unknown cluster \"nope\"");
    h.cw[1].name = "";
    expect_error(&h.f.b, R(0, 1) "route.weighted_clusters.clusters[1].name: required");
    h.cw[1].name = "other";
    h.cw[0].weight = 0;
    h.cw[1].weight = 0;
    expect_error(&h.f.b, R(0, 1) "route.weighted_clusters: weights add up to 0: at least one "
                                 "must be above 0");
    h.cw[0].weight = 999999;
    h.cw[1].weight = 2;
    expect_error(&h.f.b, R(0, 1) "route.weighted_clusters: weights add up to 1000001, at most "
                                 "1000000");
    h.cw[0].weight = UINT32_MAX; /* the sum must not wrap around */
    expect_error(&h.f.b, R(0, 1) "route.weighted_clusters: weights add up to 4294967297");
}

static void test_route_prefix_rewrite(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.a[2].prefix_rewrite = "/x";
    expect_error(&h.f.b, R(0, 2) "route.prefix_rewrite: only allowed with a prefix match");
    h.a[2].prefix_rewrite = "";
    h.a[1].prefix_rewrite = "v2/";
    expect_error(&h.f.b, R(0, 1) "route.prefix_rewrite: \"v2/\" must start with '/'");
}

static void test_route_header_edits(void **state)
{
    struct hfix h;
    hfix_init(&h);
    static const struct {
        const char *key, *want;
    } keys[] = {
        {"", "required"},
        {"X-Route", "\"X-Route\" must be lower case (HTTP/2 header names are)"},
        {":authority", "\":authority\": pseudo-headers cannot be set here"},
        {"x route", "\"x route\": character \\x20 is not allowed in a header name"},
        {"x:y", "\"x:y\": character ':' is not allowed in a header name"},
        {"connection", "\"connection\" is a hop-by-hop header (RFC 9113 §8.2.2)"},
        {"keep-alive", "\"keep-alive\" is a hop-by-hop header"},
        {"proxy-connection", "\"proxy-connection\" is a hop-by-hop header"},
        {"transfer-encoding", "\"transfer-encoding\" is a hop-by-hop header"},
        {"upgrade", "\"upgrade\" is a hop-by-hop header"},
        {"te", "\"te\" is a hop-by-hop header (RFC 9113 §8.2.2): the proxy manages it"},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char want[256];
        h.hv[0].key = (char *)keys[i].key;
        snprintf(want, sizeof(want), R(0, 1) "route.request_headers_to_add[0].key: %s",
                 keys[i].want);
        expect_error(&h.f.b, want);
    }
    h.hv[0].key = "x-route";
    h.hv[0].value = "a\nb";
    expect_error(&h.f.b, R(0, 1) "route.request_headers_to_add[0].value: contains CR or LF");
    h.hv[0].value = "a\rb";
    expect_error(&h.f.b, R(0, 1) "route.request_headers_to_add[0].value: contains CR or LF");
    h.hv[0].value = "ok";
    h.hv[1].key = "Server";
    expect_error(&h.f.b,
                 R(0, 1) "route.response_headers_to_add[0].key: \"Server\" must be lower case");
    h.hv[1].key = "server";
    h.hv[1].value = "x\r\n";
    expect_error(&h.f.b, R(0, 1) "route.response_headers_to_add[0].value: contains CR or LF");
    h.hv[1].value = "meshd";

    h.req_remove[0] = "Transfer-Encoding";
    expect_error(&h.f.b, R(0, 1) "route.request_headers_to_remove[0]: \"Transfer-Encoding\" must "
                                 "be lower case");
    h.req_remove[0] = "upgrade";
    expect_error(&h.f.b, R(0, 1) "route.request_headers_to_remove[0]: \"upgrade\" is a "
                                 "hop-by-hop header");
    h.req_remove[0] = ":path";
    expect_error(&h.f.b, R(0, 1) "route.request_headers_to_remove[0]: \":path\": pseudo-headers "
                                 "cannot be removed here");
    h.req_remove[0] = "x-debug";
    h.resp_remove[0] = "";
    expect_error(&h.f.b, R(0, 1) "route.response_headers_to_remove[0]: required");
}

static void test_http_all_errors_reported(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.hcm.route_config = "nope";
    h.domains[0] = "a b";
    h.g.service = "";
    h.a[2].cluster = "nope";
    int rc;
    size_t n;
    char *out = load(&h.f.b, 0, NULL, &rc, &n);
    assert_int_equal(n, 4);
    free(out);
}

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

static void rfix_init(struct rfix *r)
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

#define LRBAC WEB "http.rbac."
#define RRBAC R(0, 0) "rbac."

static void test_rbac_snapshot(void **state)
{
    struct rfix r;
    rfix_init(&r);
    struct md_snapshot *s = load_snapshot(&r.h.f.b);
    const struct md_snap_rbac *l = s->listeners[1].http.rbac;
    assert_null(s->listeners[0].http.rbac);
    assert_non_null(l);
    assert_int_equal(l->scope, MD_RBAC_SCOPE_LISTENER);
    assert_string_equal(l->owner, "web");
    assert_int_equal(l->action, MD_RBAC_ALLOW);
    assert_int_equal(l->n_policies, 2);
    const struct md_snap_rbac_policy *p = &l->policies[0];
    assert_string_equal(p->name, "grpc-echo");
    assert_int_equal(p->n_principals, 6);
    assert_int_equal(p->principals[0].kind, MD_RBAC_ID_EXACT);
    assert_string_equal(p->principals[0].text, "spiffe://mesh.test/ns/shop/sa/web");
    assert_int_equal(p->principals[1].kind, MD_RBAC_ID_PREFIX);
    assert_int_equal(p->principals[2].kind, MD_RBAC_ID_TRUST_DOMAIN);
    assert_string_equal(p->principals[2].text, "spiffe://partner.test");
    assert_int_equal(p->principals[2].len, strlen("spiffe://partner.test"));
    assert_int_equal(p->principals[3].kind, MD_RBAC_ID_AUTHENTICATED);
    assert_int_equal(p->principals[4].kind, MD_RBAC_ID_UNAUTHENTICATED);
    assert_int_equal(p->principals[5].kind, MD_RBAC_ID_ANY);
    assert_string_equal(p->permissions[0].grpc, "/test.v1.Echo/Unary");
    assert_false(p->permissions[0].grpc_any_method);
    assert_null(p->permissions[0].path_prefix);
    assert_null(p->permissions[1].grpc);
    assert_string_equal(p->permissions[1].path_prefix, "/admin/");
    assert_int_equal(p->permissions[1].n_headers, 1);
    assert_string_equal(p->permissions[1].headers[0].value, "ops");
    assert_int_equal(l->policies[1].n_principals, 0);
    assert_int_equal(l->policies[1].n_permissions, 0);

    const struct md_snap_rbac *rr = s->route_configs[0].vhosts[0].routes[0].rbac;
    assert_non_null(rr);
    assert_null(s->route_configs[0].vhosts[0].routes[1].rbac);
    assert_int_equal(rr->scope, MD_RBAC_SCOPE_ROUTE);
    assert_string_equal(rr->owner, "api/routes[0]");
    assert_int_equal(rr->action, MD_RBAC_DENY);

    /* stats slots: listener policies, its "none", then the route's */
    assert_int_equal(s->n_rbac_stats, 5);
    assert_int_equal(l->policies[0].stat, 0);
    assert_int_equal(l->policies[1].stat, 1);
    assert_int_equal(l->stat_none, 2);
    assert_int_equal(rr->policies[0].stat, 3);
    assert_int_equal(rr->stat_none, 4);
    assert_string_equal(s->rbac_stats[1].scope, "listener");
    assert_string_equal(s->rbac_stats[1].owner, "web");
    assert_string_equal(s->rbac_stats[1].policy, "open");
    assert_string_equal(s->rbac_stats[2].policy, "");
    assert_string_equal(s->rbac_stats[3].scope, "route");
    assert_string_equal(s->rbac_stats[3].owner, "api/routes[0]");
    assert_string_equal(s->rbac_stats[3].policy, "deny-web");

    static const char *const want[] = {
        "    rbac {\n      action: ALLOW\n      policy {\n        name: \"grpc-echo\"\n",
        "          spiffe_id: \"spiffe://mesh.test/ns/shop/sa/web\"\n",
        "          trust_domain: \"partner.test\"\n",
        "          unauthenticated: true\n",
        "          grpc: \"/test.v1.Echo/Unary\"\n",
        "          path_prefix: \"/admin/\"\n          header { name: \"x-role\" exact: \"ops\" "
        "}\n",
        "        name: \"open\"\n        # any peer\n        # any request\n",
        "      rbac {\n        action: DENY\n",
    };
    assert_dump_has(s, want, sizeof(want) / sizeof(want[0]));
    md_snapshot_unref(s);
}

/* Routes need not have unique names: Rbacs with the same labels share
 * slots (one Prometheus series per label set), others keep their own. */
static void test_rbac_stats_shared_labels(void **state)
{
    struct rfix r;
    rfix_init(&r);
    r.h.r[0].name = "same";
    r.h.r[2].name = "same";
    r.h.r[2].rbac = &r.rr;
    r.h.r[3].rbac = &r.rr; /* unnamed: "api/routes[3]" */
    struct md_snapshot *s = load_snapshot(&r.h.f.b);
    const struct md_snap_route *rt = s->route_configs[0].vhosts[0].routes;
    assert_int_equal(s->n_rbac_stats, 3 + 2 + 2);
    assert_int_equal(rt[0].rbac->policies[0].stat, 3);
    assert_int_equal(rt[0].rbac->stat_none, 4);
    assert_int_equal(rt[2].rbac->policies[0].stat, 3);
    assert_int_equal(rt[2].rbac->stat_none, 4);
    assert_int_equal(rt[3].rbac->policies[0].stat, 5);
    assert_int_equal(rt[3].rbac->stat_none, 6);
    assert_string_equal(s->rbac_stats[4].owner, "same");
    assert_string_equal(s->rbac_stats[4].policy, "");
    assert_string_equal(s->rbac_stats[5].owner, "api/routes[3]");
    assert_string_equal(s->rbac_stats[5].policy, "deny-web");
    md_snapshot_unref(s);
}

static void test_rbac_snapshot_enomem(void **state)
{
    struct rfix r;
    rfix_init(&r);
    long points = 0;
    for (;; points++) {
        alloc_fail_at = points;
        alloc_count = 0;
        struct md_snapshot *s = NULL;
        int rc = md_snapshot_build(&r.h.f.b, &s);
        if (rc == 0) {
            md_snapshot_unref(s);
            break;
        }
        assert_int_equal(rc, MD_ENOMEM);
        assert_null(s);
    }
    alloc_fail_at = -1;
    assert_true(points > 60);
}

static void test_rbac_action_and_names(void **state)
{
    struct rfix r;
    rfix_init(&r);
    r.lr.action = 7;
    expect_error(&r.h.f.b,
                 "error: t.pb: " LRBAC "action: unknown enum value 7 (known: ALLOW, DENY)");
    r.lr.action = 0;
    r.p[1].name = "";
    expect_error(&r.h.f.b, LRBAC "policies[1].name: required");
    r.p[1].name = "a b";
    expect_error(&r.h.f.b, LRBAC "policies[1].name: \"a b\" must match [a-zA-Z0-9_.-]{1,64}");
    r.p[1].name = "grpc-echo";
    expect_error(&r.h.f.b, LRBAC "policies[1].name: duplicate of policies[0]");
    /* unique within one Rbac only: the route's may reuse a listener's name */
    r.p[1].name = "open";
    r.p[2].name = "open";
    int rc;
    size_t n;
    free(load(&r.h.f.b, 0, NULL, &rc, &n));
    assert_int_equal(rc, 0);
}

static void test_rbac_principals(void **state)
{
    struct rfix r;
    rfix_init(&r);
    r.pr[3].identity_case = MESH__V1__PRINCIPAL__IDENTITY__NOT_SET;
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[3]: one of spiffe_id, spiffe_id_prefix, "
                                 "trust_domain, authenticated, unauthenticated or any is required");
    rfix_init(&r);
    r.pr[0].spiffe_id = "spiffe://Mesh.test/x";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[0].spiffe_id: \"spiffe://Mesh.test/x\" is "
                                 "not a SPIFFE ID: trust domain has a character other than");
    /* the route's policy shares the principal: reported at its own path too */
    expect_error(&r.h.f.b, RRBAC "policies[0].principals[0].spiffe_id: \"spiffe://Mesh.test/x\"");
    r.pr[0].spiffe_id = "spiffe://mesh.test/a//b";
    expect_error(&r.h.f.b, "is not a SPIFFE ID: empty path segment");
    r.pr[0].spiffe_id = "";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[0].spiffe_id: \"\" is not a SPIFFE ID: "
                                 "does not start with spiffe://");
    rfix_init(&r);
    r.pr[1].spiffe_id_prefix = "mesh.test/ns/";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[1].spiffe_id_prefix: \"mesh.test/ns/\" "
                                 "must start with \"spiffe://\"");
    rfix_init(&r);
    r.pr[2].trust_domain = "";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[2].trust_domain: \"\" is not a trust "
                                 "domain: empty trust domain");
    r.pr[2].trust_domain = "Partner.test";
    expect_error(&r.h.f.b,
                 LRBAC "policies[0].principals[2].trust_domain: \"Partner.test\" is not a "
                       "trust domain: trust domain has a character other than");
    r.pr[2].trust_domain = "spiffe://partner.test";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[2].trust_domain: "
                                 "\"spiffe://partner.test\": a trust domain is the name alone");
    rfix_init(&r);
    r.pr[3].authenticated = false;
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[3].authenticated: authenticated must be "
                                 "true when set (false matches no peer)");
    rfix_init(&r);
    r.pr[4].unauthenticated = false;
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[4].unauthenticated: unauthenticated must "
                                 "be true when set");
    rfix_init(&r);
    r.pr[5].any = false;
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[5].any: any must be true when set");
}

static void test_rbac_permissions(void **state)
{
    struct rfix r;
    rfix_init(&r);
    r.g.service = "";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[0].grpc.service: required");
    r.g.service = "test v1";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[0].grpc.service: \"test v1\" is not a "
                                 "dotted identifier");
    r.g.service = "test.v1.Echo";
    r.g.method = "Un-ary";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[0].grpc.method: \"Un-ary\" is not an "
                                 "identifier");
    rfix_init(&r);
    r.pm[1].path_prefix = "admin/";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].path_prefix: \"admin/\" must start "
                                 "with '/'");
    r.pm[1].path_prefix = "/admin?x";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].path_prefix: \"/admin?x\": character "
                                 "'?' is not allowed in a path");
    /* header matchers: the routes' rules, at the permission's path */
    rfix_init(&r);
    r.hm.name = "X-Role";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].headers[0].name: \"X-Role\" must be "
                                 "lower case");
    r.hm.name = ":authority";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].headers[0].name: \":authority\": "
                                 "pseudo-headers cannot be matched here");
    r.hm.name = "x-role";
    r.hm.match_case = MESH__V1__HEADER_MATCHER__MATCH__NOT_SET;
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].headers[0]: exact or present is "
                                 "required");
    r.hm.match_case = MESH__V1__HEADER_MATCHER__MATCH_EXACT;
    r.hm.exact = "a\nb";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].headers[0].exact: contains CR or LF");
    /* on a route: the same checks at the route's path */
    rfix_init(&r);
    r.p[2].n_permissions = 2;
    r.p[2].permissions = r.pms;
    r.pm[1].path_prefix = "x";
    expect_error(&r.h.f.b, RRBAC "policies[0].permissions[1].path_prefix: \"x\" must start with "
                                 "'/'");
}

static void test_rbac_empty_is_valid(void **state)
{
    /* no policies: ALLOW refuses everything, DENY passes everything; both
     * are meaningful configurations */
    struct rfix r;
    rfix_init(&r);
    r.lr.n_policies = 0;
    r.rr.n_policies = 0;
    struct md_snapshot *s = load_snapshot(&r.h.f.b);
    assert_int_equal(s->n_rbac_stats, 2);
    assert_int_equal(s->listeners[1].http.rbac->stat_none, 0);
    assert_int_equal(s->route_configs[0].vhosts[0].routes[0].rbac->stat_none, 1);
    md_snapshot_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_unknown_cluster),
        cmocka_unit_test(test_missing_cluster_ref),
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_duplicate_bind),
        cmocka_unit_test(test_port_range),
        cmocka_unit_test(test_bad_address),
        cmocka_unit_test(test_empty_static_cluster),
        cmocka_unit_test(test_duplicate_endpoint),
        cmocka_unit_test(test_unknown_enum),
        cmocka_unit_test(test_discovery),
        cmocka_unit_test(test_lb_and_health),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_handler_required),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_no_listeners),
        cmocka_unit_test(test_admin),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_wrong_wire_type),
        cmocka_unit_test(test_default_bundle_valid),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_http_valid_snapshot),
        cmocka_unit_test(test_http_settings_carried),
        cmocka_unit_test(test_http_snapshot_enomem),
        cmocka_unit_test(test_http_listener_route_config),
        cmocka_unit_test(test_http_listener_h2_ranges),
        cmocka_unit_test(test_http_listener_timeouts),
        cmocka_unit_test(test_cluster_http_settings),
        cmocka_unit_test(test_route_config_names),
        cmocka_unit_test(test_route_config_too_many),
        cmocka_unit_test(test_virtual_hosts_too_many),
        cmocka_unit_test(test_virtual_hosts),
        cmocka_unit_test(test_domain_syntax),
        cmocka_unit_test(test_domain_duplicates),
        cmocka_unit_test(test_route_name),
        cmocka_unit_test(test_route_match_path),
        cmocka_unit_test(test_route_match_grpc),
        cmocka_unit_test(test_route_match_headers),
        cmocka_unit_test(test_route_action_cluster),
        cmocka_unit_test(test_route_action_weighted),
        cmocka_unit_test(test_route_prefix_rewrite),
        cmocka_unit_test(test_route_header_edits),
        cmocka_unit_test(test_route_upgrades),
        cmocka_unit_test(test_route_resilience),
        cmocka_unit_test(test_http_listener_detection),
        cmocka_unit_test(test_http_all_errors_reported),
        cmocka_unit_test(test_rbac_snapshot),
        cmocka_unit_test(test_rbac_stats_shared_labels),
        cmocka_unit_test(test_rbac_snapshot_enomem),
        cmocka_unit_test(test_rbac_action_and_names),
        cmocka_unit_test(test_rbac_principals),
        cmocka_unit_test(test_rbac_permissions),
        cmocka_unit_test(test_rbac_empty_is_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
