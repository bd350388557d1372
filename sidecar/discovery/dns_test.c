/* SPDX-License-Identifier: Apache-2.0 */
/* The TTL walk over SRV answers: the shortest TTL of the records asked for,
 * RFC 2181's top-bit rule, and answers cut short or lying about sizes; when
 * to resolve again (jittered). */
#include "discovery/dns.h"

#include <arpa/nameser.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

/* Header (1 question, 2 answers), "_x._tcp.t" SRV IN, then two SRV records
 * (name: a pointer to the question) with TTLs 30 and 5. */
static const uint8_t answer[] = {
    0x12, 0x34, 0x81, 0x80, 0, 1, 0,  2,    0,    0,    0,    0,    2,    '_',  'x', 4,  '_', 't',
    'c',  'p',  1,    't',  0, 0, 33, 0,    1,    0xc0, 0x0c, 0,    33,   0,    1,   0,  0,   0,
    30,   0,    9,    0,    1, 0, 1,  0x1f, 0x90, 1,    'a',  0,    0xc0, 0x0c, 0,   33, 0,   1,
    0,    0,    0,    5,    0, 9, 0,  1,    0,    1,    0x1f, 0x91, 1,    'b',  0,
};

static void test_shortest_ttl(void **state)
{
    assert_int_equal(md_dns_answer_min_ttl(answer, sizeof(answer), T_SRV), 5);
    assert_int_equal(md_dns_answer_min_ttl(answer, sizeof(answer), T_A), UINT32_MAX);
}

static void test_cut_short(void **state)
{
    /* the second record is cut: only the first one's TTL is known */
    assert_int_equal(md_dns_answer_min_ttl(answer, sizeof(answer) - 12, T_SRV), 30);
    for (int n = 0; n < 39; n++) /* cut before the first record's TTL: none */
        assert_int_equal(md_dns_answer_min_ttl(answer, n, T_SRV), UINT32_MAX);
}

static void test_top_bit_and_lying_length(void **state)
{
    uint8_t a[sizeof(answer)];
    memcpy(a, answer, sizeof(a));
    a[33] = 0x80; /* first TTL 0x8000001e: RFC 2181 §8 makes it 0 */
    assert_int_equal(md_dns_answer_min_ttl(a, sizeof(a), T_SRV), 0);
    memcpy(a, answer, sizeof(a));
    a[37] = 0xff; /* first RDLENGTH 0x00ff: past the end */
    assert_int_equal(md_dns_answer_min_ttl(a, sizeof(a), T_SRV), 30);
}

static void test_refresh_jitter(void **state)
{
    struct md_snap_dns cfg = {.min_refresh_ms = 1000, .max_refresh_ms = 300000};
    uint32_t lo = UINT32_MAX, hi = 0;
    for (uint64_t r = 0; r < 20000; r += 7) {
        uint32_t ms = md_dns_refresh_ms(&cfg, false, 60, r * 0x9e3779b97f4a7c15ull);
        lo = ms < lo ? ms : lo;
        hi = ms > hi ? ms : hi;
        /* before the TTL runs out, never after; not all at the same moment */
        assert_true(ms <= 60000 && ms >= 60000 - 60000 / 8);
        uint32_t retry = md_dns_refresh_ms(&cfg, true, 60, r * 0x9e3779b97f4a7c15ull);
        assert_true(retry >= 1000 && retry <= 1000 + 1000 / 8);
        /* clamped first, then jittered, never under min_refresh_ms */
        assert_true(md_dns_refresh_ms(&cfg, false, 0, r) == 1000);
        uint32_t capped = md_dns_refresh_ms(&cfg, false, 86400, r * 0x9e3779b97f4a7c15ull);
        assert_true(capped <= 300000 && capped >= 300000 - 300000 / 8);
    }
    assert_true(hi - lo > 6000); /* spread over most of the eighth */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shortest_ttl),
        cmocka_unit_test(test_cut_short),
        cmocka_unit_test(test_top_bit_and_lying_length),
        cmocka_unit_test(test_refresh_jitter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
