/* SPDX-License-Identifier: Apache-2.0 */
/* Bundle-level checks (validate.c): names and their duplicates, counts,
 * shared ranges, and every error reported rather than the first. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void test_names(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.l.name = "";
    expect_error(&f.b, "listeners[0]: name: required");
    f.l.name = "bad name!";
    expect_error(&f.b, "name: \"bad name!\" must match [a-zA-Z0-9_.-]{1,64}");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_port_range),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_no_listeners),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_route_config_too_many),
        cmocka_unit_test(test_http_all_errors_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
