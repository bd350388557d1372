/* SPDX-License-Identifier: Apache-2.0 */
/* Wire decoding and loading (bundle.c): valid and broken encodings, the
 * embedded default bundle, a missing file. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_wrong_wire_type),
        cmocka_unit_test(test_default_bundle_valid),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
