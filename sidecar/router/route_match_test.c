/* SPDX-License-Identifier: Apache-2.0 */
/* Route selection over hand-built snapshot route tables: virtual host
 * precedence, route order, path/gRPC/header/SNI matching, weighted picks. */
#include "router/route_match.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define DOMAIN(k, t)                                                                               \
    {                                                                                              \
        .kind = (k), .text = (t), .len = sizeof(t) - 1                                             \
    }

static const struct md_snap_vhost *vhost_for(const struct md_snap_route_config *rc, const char *a)
{
    return md_route_match_vhost(rc, a, a ? strlen(a) : 0);
}

/* One virtual host per kind of domain, in an order that is not precedence. */
static struct md_snap_domain d_any[] = {DOMAIN(MD_DOMAIN_ANY, "")};
static struct md_snap_domain d_prefix[] = {DOMAIN(MD_DOMAIN_PREFIX, "api.")};
static struct md_snap_domain d_prefix_long[] = {DOMAIN(MD_DOMAIN_PREFIX, "api.internal.")};
static struct md_snap_domain d_suffix[] = {DOMAIN(MD_DOMAIN_SUFFIX, ".example.com")};
static struct md_snap_domain d_suffix_long[] = {DOMAIN(MD_DOMAIN_SUFFIX, ".api.example.com")};
static struct md_snap_domain d_exact[] = {DOMAIN(MD_DOMAIN_EXACT, "other.org"),
                                          DOMAIN(MD_DOMAIN_EXACT, "api.example.com"),
                                          DOMAIN(MD_DOMAIN_EXACT, "[::1]")};

static struct md_snap_vhost vhosts[] = {
    {.name = "any", .n_domains = N_ELEMS(d_any), .domains = d_any},
    {.name = "prefix", .n_domains = N_ELEMS(d_prefix), .domains = d_prefix},
    {.name = "suffix", .n_domains = N_ELEMS(d_suffix), .domains = d_suffix},
    {.name = "prefix_long", .n_domains = N_ELEMS(d_prefix_long), .domains = d_prefix_long},
    {.name = "suffix_long", .n_domains = N_ELEMS(d_suffix_long), .domains = d_suffix_long},
    {.name = "exact", .n_domains = N_ELEMS(d_exact), .domains = d_exact},
};
static const struct md_snap_route_config rc_all = {
    .name = "rc", .n_vhosts = N_ELEMS(vhosts), .vhosts = vhosts};

static void expect_vhost(const struct md_snap_route_config *rc, const char *authority,
                         const char *want)
{
    const struct md_snap_vhost *vh = vhost_for(rc, authority);
    const char *a = authority ? authority : "(null)";
    if (!want && vh)
        fail_msg("authority %s: expected no virtual host, got %s", a, vh->name);
    if (want && !vh)
        fail_msg("authority %s: expected %s, got none", a, want);
    if (want && strcmp(vh->name, want) != 0)
        fail_msg("authority %s: expected %s, got %s", a, want, vh->name);
}

static void test_vhost_exact_beats_everything(void **state)
{
    /* also matches ".example.com" and "api." */
    expect_vhost(&rc_all, "api.example.com", "exact");
    expect_vhost(&rc_all, "other.org", "exact");
}

static void test_vhost_port_and_case(void **state)
{
    expect_vhost(&rc_all, "API.Example.COM:8443", "exact");
    expect_vhost(&rc_all, "api.example.com:", "exact");
    expect_vhost(&rc_all, "[::1]:8080", "exact");
    expect_vhost(&rc_all, "[::1]", "exact");
    expect_vhost(&rc_all, "WWW.EXAMPLE.COM:80", "suffix");
}

static void test_vhost_longest_suffix(void **state)
{
    expect_vhost(&rc_all, "www.example.com", "suffix");
    expect_vhost(&rc_all, "x.api.example.com", "suffix_long");
    /* suffix beats prefix: both "api." and ".example.com" hold */
    expect_vhost(&rc_all, "api.foo.example.com", "suffix");
    /* "*.example.com" needs a label in front of it */
    expect_vhost(&rc_all, "example.com", "any");
}

static void test_vhost_longest_prefix(void **state)
{
    expect_vhost(&rc_all, "api.other.net", "prefix");
    expect_vhost(&rc_all, "api.internal.net", "prefix_long");
    /* "api.*" needs something after "api." */
    expect_vhost(&rc_all, "api.", "any");
}

static void test_vhost_any_and_none(void **state)
{
    expect_vhost(&rc_all, "unknown.net", "any");
    expect_vhost(&rc_all, NULL, "any");
    expect_vhost(&rc_all, "", "any");
    /* without "*" */
    const struct md_snap_route_config rc = {.n_vhosts = N_ELEMS(vhosts) - 1, .vhosts = vhosts + 1};
    expect_vhost(&rc, "unknown.net", NULL);
    expect_vhost(&rc, NULL, NULL);
    expect_vhost(&rc, "example.com", NULL);
    expect_vhost(&rc, "www.example.com", "suffix");
}

/* Routes: built per test around these. */
#define ROUTE(n, k, p)                                                                             \
    {                                                                                              \
        .name = (n), .kind = (k), .path = (p), .path_len = sizeof(p) - 1                           \
    }

static const char *route_for(const struct md_snap_vhost *vh, const char *path, bool grpc,
                             const struct md_hdr *hdrs, size_t n_hdrs)
{
    struct md_route_input in = {
        .authority = "h",
        .authority_len = 1,
        .path = path,
        .path_len = strlen(path),
        .grpc = grpc,
        .hdrs = hdrs,
        .n_hdrs = n_hdrs,
    };
    const struct md_snap_route *r = md_route_match_route(vh, &in);
    return r ? r->name : "(none)";
}

static void test_route_order_first_match_wins(void **state)
{
    struct md_snap_route routes[] = {
        ROUTE("api", MD_PATH_MATCH_PREFIX, "/api/"),
        ROUTE("root", MD_PATH_MATCH_PREFIX, "/"),
        ROUTE("never", MD_PATH_MATCH_PREFIX, "/api/v2/"),
    };
    struct md_snap_vhost vh = {.name = "v", .n_routes = N_ELEMS(routes), .routes = routes};
    assert_string_equal(route_for(&vh, "/api/v2/x", false, NULL, 0), "api");
    assert_string_equal(route_for(&vh, "/other", false, NULL, 0), "root");
    assert_string_equal(route_for(&vh, "/", false, NULL, 0), "root");
    vh.n_routes = 1;
    assert_string_equal(route_for(&vh, "/other", false, NULL, 0), "(none)");
}

static void test_route_prefix_and_exact_ignore_query(void **state)
{
    struct md_snap_route routes[] = {
        ROUTE("health", MD_PATH_MATCH_EXACT, "/health"),
        ROUTE("api", MD_PATH_MATCH_PREFIX, "/api"),
    };
    struct md_snap_vhost vh = {.name = "v", .n_routes = N_ELEMS(routes), .routes = routes};
    assert_string_equal(route_for(&vh, "/health", false, NULL, 0), "health");
    assert_string_equal(route_for(&vh, "/health?verbose=1", false, NULL, 0), "health");
    assert_string_equal(route_for(&vh, "/healthz", false, NULL, 0), "(none)");
    assert_string_equal(route_for(&vh, "/health/", false, NULL, 0), "(none)");
    assert_string_equal(route_for(&vh, "/Health", false, NULL, 0),
                        "(none)"); /* paths: exact case */
    assert_string_equal(route_for(&vh, "/api", false, NULL, 0), "api");
    assert_string_equal(route_for(&vh, "/api?x=1", false, NULL, 0), "api");
    assert_string_equal(route_for(&vh, "/apis/x", false, NULL, 0), "api");
    /* the prefix must lie before the query */
    assert_string_equal(route_for(&vh, "/ap?i", false, NULL, 0), "(none)");
    assert_string_equal(route_for(&vh, "/x?/api", false, NULL, 0), "(none)");
}

static void test_route_grpc(void **state)
{
    struct md_snap_route routes[] = {
        ROUTE("unary", MD_PATH_MATCH_GRPC, "/test.v1.Echo/Unary"),
        ROUTE("echo", MD_PATH_MATCH_GRPC, "/test.v1.Echo/"),
        ROUTE("plain", MD_PATH_MATCH_PREFIX, "/"),
    };
    routes[1].grpc_any_method = true;
    struct md_snap_vhost vh = {.name = "v", .n_routes = N_ELEMS(routes), .routes = routes};
    assert_string_equal(route_for(&vh, "/test.v1.Echo/Unary", true, NULL, 0), "unary");
    assert_string_equal(route_for(&vh, "/test.v1.Echo/Stream", true, NULL, 0), "echo");
    /* not a gRPC request (content-type): gRPC routes do not apply */
    assert_string_equal(route_for(&vh, "/test.v1.Echo/Unary", false, NULL, 0), "plain");
    /* no method, a nested path, another service sharing the prefix */
    assert_string_equal(route_for(&vh, "/test.v1.Echo/", true, NULL, 0), "plain");
    assert_string_equal(route_for(&vh, "/test.v1.Echo/A/B", true, NULL, 0), "plain");
    assert_string_equal(route_for(&vh, "/test.v1.EchoX/Unary", true, NULL, 0), "plain");
    assert_string_equal(route_for(&vh, "/test.v1.Echo/UnaryX", true, NULL, 0), "echo");
}

static void test_route_headers(void **state)
{
    struct md_snap_header_matcher canary[] = {
        {.name = "x-env",
         .name_len = 5,
         .kind = MD_HDR_MATCH_EXACT,
         .value = "canary",
         .value_len = 6},
    };
    struct md_snap_header_matcher debug_not_internal[] = {
        {.name = "x-debug", .name_len = 7, .kind = MD_HDR_MATCH_PRESENT},
        {.name = "x-internal", .name_len = 10, .kind = MD_HDR_MATCH_ABSENT},
    };
    struct md_snap_route routes[] = {
        ROUTE("canary", MD_PATH_MATCH_PREFIX, "/"),
        ROUTE("debug", MD_PATH_MATCH_PREFIX, "/"),
        ROUTE("default", MD_PATH_MATCH_PREFIX, "/"),
    };
    routes[0].headers = canary;
    routes[0].n_headers = N_ELEMS(canary);
    routes[1].headers = debug_not_internal;
    routes[1].n_headers = N_ELEMS(debug_not_internal);
    struct md_snap_vhost vh = {.name = "v", .n_routes = N_ELEMS(routes), .routes = routes};

    struct md_hdr two_envs[] = {{"x-env", 5, "prod", 4}, {"x-env", 5, "canary", 6}};
    assert_string_equal(route_for(&vh, "/", false, two_envs, 2), "canary");
    assert_string_equal(route_for(&vh, "/", false, two_envs, 1), "default"); /* prod only */
    struct md_hdr near[] = {{"x-env", 5, "canary2", 7}, {"x-envx", 6, "canary", 6}};
    assert_string_equal(route_for(&vh, "/", false, near, 2), "default");
    struct md_hdr upper[] = {{"X-Env", 5, "canary", 6}}; /* names compare case-insensitively */
    assert_string_equal(route_for(&vh, "/", false, upper, 1), "canary");
    struct md_hdr value_case[] = {{"x-env", 5, "Canary", 6}}; /* values do not */
    assert_string_equal(route_for(&vh, "/", false, value_case, 1), "default");

    struct md_hdr debug[] = {{"x-debug", 7, "", 0}};
    assert_string_equal(route_for(&vh, "/", false, debug, 1), "debug");
    struct md_hdr debug_internal[] = {{"x-debug", 7, "1", 1}, {"x-internal", 10, "1", 1}};
    assert_string_equal(route_for(&vh, "/", false, debug_internal, 2), "default");
    assert_string_equal(route_for(&vh, "/", false, debug_internal + 1, 1), "default");
    assert_string_equal(route_for(&vh, "/", false, NULL, 0), "default");
}

static const char *route_for_sni(const struct md_snap_vhost *vh, const char *sni)
{
    struct md_route_input in = {.path = "/", .path_len = 1, .sni = sni};
    const struct md_snap_route *r = md_route_match_route(vh, &in);
    return r ? r->name : "(none)";
}

static void test_route_server_names(void **state)
{
    char *names[] = {"api.mesh.test", "api.internal"};
    struct md_snap_route routes[] = {
        ROUTE("by_sni", MD_PATH_MATCH_PREFIX, "/"),
        ROUTE("rest", MD_PATH_MATCH_PREFIX, "/"),
    };
    routes[0].server_names = names;
    routes[0].n_server_names = N_ELEMS(names);
    struct md_snap_vhost vh = {.name = "v", .n_routes = N_ELEMS(routes), .routes = routes};
    assert_string_equal(route_for_sni(&vh, "api.internal"), "by_sni");
    assert_string_equal(route_for_sni(&vh, "api.mesh.test"), "by_sni");
    assert_string_equal(route_for_sni(&vh, "web.mesh.test"), "rest");
    assert_string_equal(route_for_sni(&vh, NULL), "rest"); /* plaintext, or no SNI */
    vh.n_routes = 1;
    assert_string_equal(route_for_sni(&vh, NULL), "(none)");
}

static void test_pick_single_cluster(void **state)
{
    struct md_snap_weighted_cluster one[] = {{.cluster = 7, .weight = 1}};
    struct md_snap_route r = {.n_clusters = 1, .clusters = one, .total_weight = 1};
    assert_int_equal(md_route_match_pick_cluster(&r, 0), 7);
    assert_int_equal(md_route_match_pick_cluster(&r, UINT32_MAX), 7);
}

static void test_pick_80_20_exact(void **state)
{
    struct md_snap_weighted_cluster wc[] = {{.cluster = 3, .weight = 80},
                                            {.cluster = 5, .weight = 20}};
    struct md_snap_route r = {.n_clusters = 2, .clusters = wc, .total_weight = 100};
    /* N values spread evenly over the uint32 range (each the first of its
     * 2^32/N share) land on the weights exactly. */
    const uint64_t n = 100000;
    size_t hits[8] = {0};
    for (uint64_t i = 0; i < n; i++) {
        uint32_t rnd = (uint32_t)(((i << 32) + n - 1) / n);
        hits[md_route_match_pick_cluster(&r, rnd)]++;
    }
    assert_int_equal(hits[3], 80000);
    assert_int_equal(hits[5], 20000);
    /* every 2^12th value: within one of the ratio */
    size_t h3 = 0, total = 0;
    for (uint64_t rnd = 0; rnd <= UINT32_MAX; rnd += 4096, total++)
        h3 += md_route_match_pick_cluster(&r, (uint32_t)rnd) == 3;
    assert_true(h3 * 100 >= total * 80 - 100 && h3 * 100 <= total * 80 + 100);
    assert_int_equal(md_route_match_pick_cluster(&r, 0), 3);
    assert_int_equal(md_route_match_pick_cluster(&r, UINT32_MAX), 5);
}

static void test_pick_zero_weight_never_chosen(void **state)
{
    struct md_snap_weighted_cluster wc[] = {{.cluster = 0, .weight = 0},
                                            {.cluster = 1, .weight = 1},
                                            {.cluster = 2, .weight = 0},
                                            {.cluster = 3, .weight = 1},
                                            {.cluster = 4, .weight = 0}};
    struct md_snap_route r = {.n_clusters = N_ELEMS(wc), .clusters = wc, .total_weight = 2};
    size_t hits[5] = {0};
    for (uint64_t rnd = 0; rnd <= UINT32_MAX; rnd += 65536)
        hits[md_route_match_pick_cluster(&r, (uint32_t)rnd)]++;
    hits[md_route_match_pick_cluster(&r, UINT32_MAX)]++;
    assert_int_equal(hits[0], 0);
    assert_int_equal(hits[2], 0);
    assert_int_equal(hits[4], 0);
    assert_int_equal(hits[1], 32768);
    assert_int_equal(hits[3], 32769);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vhost_exact_beats_everything),
        cmocka_unit_test(test_vhost_port_and_case),
        cmocka_unit_test(test_vhost_longest_suffix),
        cmocka_unit_test(test_vhost_longest_prefix),
        cmocka_unit_test(test_vhost_any_and_none),
        cmocka_unit_test(test_route_order_first_match_wins),
        cmocka_unit_test(test_route_prefix_and_exact_ignore_query),
        cmocka_unit_test(test_route_grpc),
        cmocka_unit_test(test_route_headers),
        cmocka_unit_test(test_route_server_names),
        cmocka_unit_test(test_pick_single_cluster),
        cmocka_unit_test(test_pick_80_20_exact),
        cmocka_unit_test(test_pick_zero_weight_never_chosen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
