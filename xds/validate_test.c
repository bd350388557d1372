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
#include <stdlib.h>
#include <string.h>

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
        &f.b,
        "cluster \"app\" (clusters[0]): lb_policy: unknown enum value 7 (known: ROUND_ROBIN)");
    f.c.lb_policy = 0;
    f.c.type = 3;
    expect_error(&f.b, "cluster \"app\" (clusters[0]): type: unknown enum value 3");
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
    char *dump;
    size_t len;
    assert_int_equal(md_snapshot_dump(snap, &dump, &len), 0);
    assert_non_null(strstr(dump, "name: \"inbound\""));
    free(dump);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
