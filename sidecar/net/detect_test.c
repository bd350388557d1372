/* SPDX-License-Identifier: Apache-2.0 */
#include "net/detect.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static enum md_detect_kind kind(const char *s, size_t n)
{
    return md_detect_classify((const uint8_t *)s, n);
}

#define K(lit) kind(lit, sizeof(lit) - 1)

static void test_preface_and_its_prefixes(void **state)
{
    static const char p[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for (size_t n = 1; n < sizeof(p) - 1; n++)
        assert_int_equal(kind(p, n), MD_DETECT_MORE);
    assert_int_equal(kind(p, sizeof(p) - 1), MD_DETECT_H2);
    /* "PRI " that goes on differently is an HTTP/1 request line (llhttp's to judge) */
    assert_int_equal(K("PRI /x HTTP/1.1\r\n"), MD_DETECT_HTTP1);
}

static void test_method_tokens(void **state)
{
    assert_int_equal(K("GET / HTTP/1.1\r\n"), MD_DETECT_HTTP1);
    assert_int_equal(K("M-SEARCH * HTTP/1.1"), MD_DETECT_HTTP1);
    assert_int_equal(K("UPDATEREDIRECTREF /"), MD_DETECT_HTTP1);
    assert_int_equal(K("G"), MD_DETECT_MORE);
    assert_int_equal(K("POS"), MD_DETECT_MORE);
    /* lower case, a leading space, CRLF before a space, or too long: not HTTP */
    assert_int_equal(K("get / HTTP/1.1"), MD_DETECT_OTHER);
    assert_int_equal(K(" GET /"), MD_DETECT_OTHER);
    assert_int_equal(K("PING\r\n"), MD_DETECT_OTHER);
    assert_int_equal(K("AAAAAAAAAAAAAAAAAAAAAAAA"), MD_DETECT_OTHER);
}

static void test_tls_and_other_bytes(void **state)
{
    assert_int_equal(K("\x16\x03\x01\x02\x00\x01"), MD_DETECT_TLS);
    assert_int_equal(K("\x16"), MD_DETECT_MORE);
    assert_int_equal(K("\x16\x00"), MD_DETECT_OTHER);
    assert_int_equal(K("\x00\x01hello"), MD_DETECT_OTHER);
    assert_int_equal(K("SSH-2.0-OpenSSH"), MD_DETECT_OTHER);
    assert_int_equal(kind("", 0), MD_DETECT_MORE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preface_and_its_prefixes),
        cmocka_unit_test(test_method_tokens),
        cmocka_unit_test(test_tls_and_other_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
