/* SPDX-License-Identifier: Apache-2.0 */
/* Listener checks (validate_listener.c): bind address, handler, tcp_proxy
 * and http settings. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void test_handler_required(void **state)
{
    struct fixture f;
    fixture_init(&f);
    f.l.handler_case = MESH__V1__LISTENER__HANDLER__NOT_SET;
    f.l.tcp_proxy = NULL;
    expect_error(&f.b, "listener \"in\" (listeners[0]): handler: none set");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_cluster),
        cmocka_unit_test(test_missing_cluster_ref),
        cmocka_unit_test(test_duplicate_bind),
        cmocka_unit_test(test_bad_address),
        cmocka_unit_test(test_handler_required),
        cmocka_unit_test(test_admin),
        cmocka_unit_test(test_http_listener_route_config),
        cmocka_unit_test(test_http_listener_h2_ranges),
        cmocka_unit_test(test_http_listener_timeouts),
        cmocka_unit_test(test_http_listener_detection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
