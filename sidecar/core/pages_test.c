/* SPDX-License-Identifier: Apache-2.0 */
#include "core/pages.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <unistd.h>

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static void test_sizes_zero_and_reuse(void **state)
{
    struct md_pages p;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    assert_int_equal(md_pages_init(&p, 64 * pg), 0);
    uint8_t *a = md_pages_alloc(&p, 1);
    uint8_t *b = md_pages_alloc(&p, 16394); /* nghttp2's frame buffer: 5 pages */
    assert_non_null(a);
    assert_non_null(b);
    assert_true(md_pages_owns(&p, a) && md_pages_owns(&p, b));
    assert_int_equal(md_pages_size(&p, a), pg);
    assert_int_equal(md_pages_size(&p, b), 5 * pg);
    assert_int_equal((uintptr_t)b % pg, 0);
    assert_true(all_zero(b, 5 * pg));
    memset(b, 0xab, 5 * pg);
    md_pages_free(&p, b);
    uint8_t *c = md_pages_alloc(&p, 5 * pg);
    assert_ptr_equal(c, b); /* the freed slot is reused, zeroed again */
    assert_true(all_zero(c, 5 * pg));
    int local;
    assert_false(md_pages_owns(&p, &local));
    assert_null(md_pages_alloc(&p, (MD_PAGES_MAX_PAGES + 1) * pg)); /* too big: caller's heap */
    md_pages_free(&p, a);
    md_pages_free(&p, c);
    md_pages_fini(&p);
}

static void test_stretch_runs_out(void **state)
{
    struct md_pages p;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    assert_int_equal(md_pages_init(&p, 4 * pg), 0);
    void *v[4];
    for (int i = 0; i < 4; i++)
        assert_non_null(v[i] = md_pages_alloc(&p, pg));
    assert_null(md_pages_alloc(&p, pg));         /* the 1-page stretch is used up */
    assert_non_null(md_pages_alloc(&p, 2 * pg)); /* other sizes have their own */
    md_pages_free(&p, v[2]);
    assert_ptr_equal(md_pages_alloc(&p, 10), v[2]);
    md_pages_fini(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_zero_and_reuse),
        cmocka_unit_test(test_stretch_runs_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
