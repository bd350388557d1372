/* SPDX-License-Identifier: Apache-2.0 */
/* Cluster checks (validate_cluster.c): endpoints, discovery, LB policy,
 * health checks, protocol and pool. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_static_cluster), cmocka_unit_test(test_duplicate_endpoint),
        cmocka_unit_test(test_unknown_enum),         cmocka_unit_test(test_discovery),
        cmocka_unit_test(test_lb_and_health),        cmocka_unit_test(test_cluster_http_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
