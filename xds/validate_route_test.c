/* SPDX-License-Identifier: Apache-2.0 */
/* Route configuration checks (validate_route.c): virtual hosts, domains,
 * matches, actions, header edits and upgrades. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_config_names),    cmocka_unit_test(test_virtual_hosts_too_many),
        cmocka_unit_test(test_virtual_hosts),         cmocka_unit_test(test_domain_syntax),
        cmocka_unit_test(test_domain_duplicates),     cmocka_unit_test(test_route_name),
        cmocka_unit_test(test_route_match_path),      cmocka_unit_test(test_route_match_grpc),
        cmocka_unit_test(test_route_match_headers),   cmocka_unit_test(test_route_action_cluster),
        cmocka_unit_test(test_route_action_weighted), cmocka_unit_test(test_route_prefix_rewrite),
        cmocka_unit_test(test_route_header_edits),    cmocka_unit_test(test_route_upgrades),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
