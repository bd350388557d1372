/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/lb_rr.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void test_cycles_in_order(void **state)
{
    uint32_t cur = 0;
    for (int round = 0; round < 3; round++)
        for (long i = 0; i < 4; i++)
            assert_int_equal(md_lb_rr_pick(&cur, 4, NULL, 0), i);
}

static void test_even_spread(void **state)
{
    uint32_t cur = 2, hits[5] = {0};
    for (int i = 0; i < 1000; i++)
        hits[md_lb_rr_pick(&cur, 5, NULL, 0)]++;
    for (int i = 0; i < 5; i++)
        assert_int_equal(hits[i], 200);
}

static void test_skips_tried(void **state)
{
    uint32_t cur = 0;
    uint32_t tried[] = {0, 1};
    assert_int_equal(md_lb_rr_pick(&cur, 3, tried, 2), 2);
    assert_int_equal(cur, 0);
    uint32_t tried2[] = {2};
    cur = 2;
    assert_int_equal(md_lb_rr_pick(&cur, 3, tried2, 1), 0); /* wraps */
}

static void test_all_tried(void **state)
{
    uint32_t cur = 1;
    uint32_t tried[] = {0, 1, 2};
    assert_int_equal(md_lb_rr_pick(&cur, 3, tried, 3), -1);
    assert_int_equal(cur, 1);
    assert_int_equal(md_lb_rr_pick(&cur, 0, NULL, 0), -1);
}

static void test_failover_walks_each_endpoint_once(void **state)
{
    uint32_t cur = 1, tried[4];
    size_t n = 0;
    long ep;
    while ((ep = md_lb_rr_pick(&cur, 4, tried, n)) >= 0)
        tried[n++] = (uint32_t)ep;
    assert_int_equal(n, 4);
    assert_int_equal(tried[0], 1);
    assert_int_equal(tried[3], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cycles_in_order),
        cmocka_unit_test(test_even_spread),
        cmocka_unit_test(test_skips_tried),
        cmocka_unit_test(test_all_tried),
        cmocka_unit_test(test_failover_walks_each_endpoint_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
