/* SPDX-License-Identifier: Apache-2.0 */
#include "core/log.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static void test_escape_keeps_plain_text(void **state)
{
    char buf[64];
    assert_string_equal(md_log_escape(buf, sizeof(buf), "/svc/Method?x=1", 15), "/svc/Method?x=1");
}

static void test_escape_quotes_controls_and_high_bytes(void **state)
{
    char buf[64];
    const char in[] = "a\"b\\c\nd\x7f\xc3";
    assert_string_equal(md_log_escape(buf, sizeof(buf), in, sizeof(in) - 1),
                        "a\\x22b\\x5cc\\x0ad\\x7f\\xc3");
}

static void test_escape_truncates(void **state)
{
    char buf[12];
    md_log_escape(buf, sizeof(buf), "abcdefghijklmnop", 16);
    assert_string_equal(buf, "abcdefgh...");
    assert_true(strlen(buf) < sizeof(buf));
    md_log_escape(buf, sizeof(buf), "\n\n\n\n\n", 5);
    assert_string_equal(buf, "\\x0a\\x0a...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_keeps_plain_text),
        cmocka_unit_test(test_escape_quotes_controls_and_high_bytes),
        cmocka_unit_test(test_escape_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
