/* SPDX-License-Identifier: Apache-2.0 */
/* Rapid reset across connections: an address's burst then its steady rate,
 * addresses independent of each other, the listener's bucket over all
 * addresses, the calm fast path coming back once buckets refill, and a
 * table that stays bounded under many addresses. */
#include "filter/reset_flood.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>

#define SEC 1000000000ull
#define MS 1000000ull
#define T0 (1000 * SEC)

static bool admit(struct md_reset_flood *f, size_t l, const char *ip, uint64_t now)
{
    return md_reset_flood_calm(f) || md_reset_flood_admit_slow(f, l, ip, now);
}

static void address_burst_then_rate(void **state)
{
    (void)state;
    struct md_reset_flood f;
    assert_int_equal(md_reset_flood_init(&f, 1, 42), 0);
    for (unsigned i = 0; i < MD_RESET_FLOOD_ADDR_BURST; i++)
        assert_int_equal(md_reset_flood_note(&f, 0, "10.0.0.1", T0), MD_RESET_FLOOD_OK);
    assert_true(md_reset_flood_calm(&f));
    assert_true(admit(&f, 0, "10.0.0.1", T0));
    /* the bucket is dry: said once, not again for a while */
    assert_int_equal(md_reset_flood_note(&f, 0, "10.0.0.1", T0), MD_RESET_FLOOD_DRY_NEWS);
    assert_int_equal(md_reset_flood_note(&f, 0, "10.0.0.1", T0 + MS), MD_RESET_FLOOD_DRY);
    assert_false(md_reset_flood_calm(&f));
    assert_false(admit(&f, 0, "10.0.0.1", T0));
    assert_true(admit(&f, 0, "10.0.0.2", T0)); /* another address goes on */
    assert_false(admit(&f, 0, "10.0.0.1", T0 + 9 * MS));
    assert_true(admit(&f, 0, "10.0.0.1", T0 + 10 * MS)); /* one token a 10 ms */
    /* a steady reset every millisecond for a second: the rate decides */
    unsigned taken = 0;
    for (uint64_t t = T0 + 11 * MS; t < T0 + 1011 * MS; t += MS)
        if (admit(&f, 0, "10.0.0.1", t))
            taken += md_reset_flood_note(&f, 0, "10.0.0.1", t) == MD_RESET_FLOOD_OK;
    assert_in_range(taken, MD_RESET_FLOOD_ADDR_PER_S - 1, MD_RESET_FLOOD_ADDR_PER_S + 1);
    /* quiet long enough to refill: the fast path is back */
    uint64_t later = T0 + 1011 * MS + (MD_RESET_FLOOD_ADDR_BURST / MD_RESET_FLOOD_ADDR_PER_S) * SEC;
    assert_true(admit(&f, 0, "10.0.0.1", later));
    assert_true(md_reset_flood_calm(&f));
    md_reset_flood_fini(&f);
}

static void listener_bucket(void **state)
{
    (void)state;
    struct md_reset_flood f;
    assert_int_equal(md_reset_flood_init(&f, 2, 7), 0);
    /* many addresses, each within its own burst, drain the listener's */
    char ip[32];
    unsigned i = 0;
    for (; i < MD_RESET_FLOOD_LISTENER_BURST; i++) {
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", i >> 16 & 255, i >> 8 & 255, i & 255);
        assert_int_equal(md_reset_flood_note(&f, 1, ip, T0), MD_RESET_FLOOD_OK);
    }
    assert_int_equal(md_reset_flood_note(&f, 1, "192.0.2.1", T0), MD_RESET_FLOOD_DRY_NEWS);
    assert_false(admit(&f, 1, "192.0.2.9", T0)); /* a new address on that listener */
    assert_true(admit(&f, 0, "192.0.2.9", T0));  /* the other listener goes on */
    assert_true(admit(&f, 1, "192.0.2.9", T0 + SEC / MD_RESET_FLOOD_LISTENER_PER_S));
    md_reset_flood_fini(&f);
}

static void unknown_listener_and_no_address(void **state)
{
    (void)state;
    struct md_reset_flood f;
    assert_int_equal(md_reset_flood_init(&f, 0, 1), 0);
    for (unsigned i = 0; i < MD_RESET_FLOOD_ADDR_BURST; i++)
        assert_int_equal(md_reset_flood_note(&f, 5, NULL, T0), MD_RESET_FLOOD_OK);
    assert_true(md_reset_flood_calm(&f));
    assert_true(admit(&f, 5, NULL, T0));
    md_reset_flood_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(address_burst_then_rate),
        cmocka_unit_test(listener_bucket),
        cmocka_unit_test(unknown_listener_and_no_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
