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

/* A flood of lines: the burst, then the steady rate; what was left out is
 * counted until the next line written reports it. */
static void test_budget_burst_then_rate(void **state)
{
    const uint64_t sec = 1000000000u, t0 = 5000 * sec;
    md_log_set_level(MD_LOG_ERROR); /* the dropped-lines report is not wanted here */
    struct md_log_budget b = {0};
    for (unsigned i = 0; i < MD_LOG_BUDGET_BURST; i++)
        assert_true(md_log_budget_take(&b, "x", t0));
    assert_false(md_log_budget_take(&b, "x", t0));
    assert_false(md_log_budget_take(&b, "x", t0 + sec / MD_LOG_BUDGET_PER_S - 1));
    assert_int_equal(b.dropped, 2);
    assert_true(md_log_budget_take(&b, "x", t0 + sec / MD_LOG_BUDGET_PER_S));
    assert_int_equal(b.dropped, 0);
    unsigned written = 0;
    for (uint64_t t = t0 + sec / MD_LOG_BUDGET_PER_S + 1; t < t0 + 2 * sec; t += sec / 1000)
        written += md_log_budget_take(&b, "x", t);
    assert_in_range(written, 2 * MD_LOG_BUDGET_PER_S - 2, 2 * MD_LOG_BUDGET_PER_S);
    md_log_set_level(MD_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_burst_then_rate),
        cmocka_unit_test(test_escape_keeps_plain_text),
        cmocka_unit_test(test_escape_quotes_controls_and_high_bytes),
        cmocka_unit_test(test_escape_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
