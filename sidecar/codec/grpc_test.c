/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/grpc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static void test_timeout_parse(void **state)
{
    double s;
    assert_true(md_grpc_timeout_parse("100m", 4, &s));
    assert_float_equal(s, 0.1, 1e-12);
    assert_true(md_grpc_timeout_parse("2S", 2, &s));
    assert_float_equal(s, 2, 1e-12);
    assert_true(md_grpc_timeout_parse("1H", 2, &s));
    assert_float_equal(s, 3600, 1e-9);
    assert_true(md_grpc_timeout_parse("99999999n", 9, &s));
    assert_false(md_grpc_timeout_parse("123456789m", 10, &s)); /* 9 digits */
    assert_false(md_grpc_timeout_parse("m", 1, &s));
    assert_false(md_grpc_timeout_parse("10x", 3, &s));
    assert_false(md_grpc_timeout_parse("-1S", 3, &s));
}

static void test_timeout_format_roundtrip(void **state)
{
    char buf[16];
    double in[] = {0.0000001, 0.25, 1.5, 42, 5000, 360000, 1e9};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        size_t n = md_grpc_timeout_format(in[i], buf);
        assert_int_equal(n, strlen(buf));
        assert_true(n <= 10);
        double back;
        assert_true(md_grpc_timeout_parse(buf, n, &back));
        assert_true(back <= in[i] * (1 + 1e-12)); /* never more than given */
        assert_true(back >= in[i] * 0.9999);      /* and barely less */
    }
    md_grpc_timeout_format(0.25, buf);
    assert_string_equal(buf, "250000u");
    md_grpc_timeout_format(0.9, buf); /* 899999.999...u in floating point */
    assert_string_equal(buf, "900000u");
    md_grpc_timeout_format(1.0000004, buf);
    assert_string_equal(buf, "1000000u");
}

static void test_content_type(void **state)
{
    assert_true(md_grpc_is_content_type("application/grpc", 16));
    assert_true(md_grpc_is_content_type("application/grpc+proto", 22));
    assert_true(md_grpc_is_content_type("application/grpc;charset=utf-8", 30));
    assert_false(md_grpc_is_content_type("application/grpcx", 17));
    assert_false(md_grpc_is_content_type("application/json", 16));
}

static void test_field1(void **state)
{
    /* HealthCheckResponse{status: SERVING}, with an unknown field first */
    const uint8_t serving[] = {0, 0, 0, 0, 4, 0x10, 7, 0x08, 1};
    uint64_t v = 99;
    assert_int_equal(md_grpc_field1(serving, sizeof(serving), 0, &v, NULL, NULL), 1);
    assert_int_equal(v, 1);
    const uint8_t empty[] = {0, 0, 0, 0, 0};
    assert_int_equal(md_grpc_field1(empty, sizeof(empty), 0, &v, NULL, NULL), 0);
    /* HealthCheckRequest{service: "ab"} twice: the last one wins */
    const uint8_t svc[] = {0, 0, 0, 0, 8, 0x0a, 2, 'x', 'y', 0x0a, 2, 'a', 'b'};
    const uint8_t *p = NULL;
    size_t len = 0;
    assert_int_equal(md_grpc_field1(svc, sizeof(svc), 2, NULL, &p, &len), 1);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "ab", 2);
    const uint8_t wrong_type[] = {0, 0, 0, 0, 2, 0x08, 1};
    assert_int_equal(md_grpc_field1(wrong_type, sizeof(wrong_type), 2, NULL, &p, &len), -1);
    const uint8_t compressed[] = {1, 0, 0, 0, 2, 0x08, 1};
    assert_int_equal(md_grpc_field1(compressed, sizeof(compressed), 0, &v, NULL, NULL), -1);
    const uint8_t short_len[] = {0, 0, 0, 0, 3, 0x08, 1};
    assert_int_equal(md_grpc_field1(short_len, sizeof(short_len), 0, &v, NULL, NULL), -1);
    const uint8_t overrun[] = {0, 0, 0, 0, 3, 0x0a, 9, 'a'};
    assert_int_equal(md_grpc_field1(overrun, sizeof(overrun), 2, NULL, &p, &len), -1);
    const uint8_t bad_varint[] = {0, 0, 0, 0, 2, 0x08, 0x80};
    assert_int_equal(md_grpc_field1(bad_varint, sizeof(bad_varint), 0, &v, NULL, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timeout_parse),
        cmocka_unit_test(test_timeout_format_roundtrip),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_field1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
