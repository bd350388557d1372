/* SPDX-License-Identifier: Apache-2.0 */
/* Retry decisions over hand-made responses: which answers and ends a
 * policy retries, gRPC pushback, and the backoff's bounds. */
#include "router/retry.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static struct md_half resp(struct md_hdr *h, size_t n, bool trailers_only)
{
    return (struct md_half){
        .hdrs = h, .n_hdrs = n, .headers_done = true, .headers_end = trailers_only};
}

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

static void test_http_conditions(void **state)
{
    uint32_t codes[] = {409};
    struct md_snap_retry rp = {
        .on = MD_RETRY_ON_GATEWAY_ERROR | MD_RETRY_ON_STATUS_CODES, .codes = codes, .n_codes = 1};
    struct md_hdr s503[] = {HDR(":status", "503")}, s500[] = {HDR(":status", "500")},
                  s409[] = {HDR(":status", "409")}, s200[] = {HDR(":status", "200")};
    struct md_half r;
    r = resp(s503, 1, false);
    assert_true(md_retry_on_response(&rp, &r, false));
    r = resp(s500, 1, false);
    assert_false(md_retry_on_response(&rp, &r, false)); /* not a gateway error */
    r = resp(s409, 1, false);
    assert_true(md_retry_on_response(&rp, &r, false));
    rp.on = MD_RETRY_ON_5XX;
    r = resp(s500, 1, false);
    assert_true(md_retry_on_response(&rp, &r, false));
    r = resp(s200, 1, false);
    assert_false(md_retry_on_response(&rp, &r, false));
}

static void test_grpc_only_trailers_only(void **state)
{
    struct md_snap_retry rp = {.grpc_on = 1u << 14};
    struct md_hdr unavailable[] = {HDR(":status", "200"), HDR("grpc-status", "14")};
    struct md_hdr internal[] = {HDR(":status", "200"), HDR("grpc-status", "13")};
    struct md_hdr started[] = {HDR(":status", "200"), HDR("content-type", "application/grpc")};
    struct md_half r = resp(unavailable, 2, true);
    assert_true(md_retry_on_response(&rp, &r, true));
    r = resp(unavailable, 2, false); /* headers of a call that began: never */
    assert_false(md_retry_on_response(&rp, &r, true));
    r = resp(internal, 2, true);
    assert_false(md_retry_on_response(&rp, &r, true));
    r = resp(started, 2, false);
    assert_false(md_retry_on_response(&rp, &r, true));
}

static void test_ends(void **state)
{
    struct md_snap_retry rp = {.on = MD_RETRY_ON_CONNECT_FAILURE};
    assert_true(md_retry_on_end(&rp, MD_RETRY_END_CONNECT_FAILED));
    assert_false(md_retry_on_end(&rp, MD_RETRY_END_RESET));
    rp.on = MD_RETRY_ON_RESET;
    assert_true(md_retry_on_end(&rp, MD_RETRY_END_RESET));
    assert_false(md_retry_on_end(&rp, MD_RETRY_END_CONNECT_FAILED));
    rp.on = MD_RETRY_ON_5XX;
    assert_true(md_retry_on_end(&rp, MD_RETRY_END_RESET));
    assert_true(md_retry_on_end(&rp, MD_RETRY_END_CONNECT_FAILED));
    rp.on = 0;
    rp.grpc_on = 1u << 14;
    assert_false(md_retry_on_end(&rp, MD_RETRY_END_RESET));
    assert_true(md_retry_on_end(&rp, MD_RETRY_END_TIMEOUT));
}

static void test_pushback(void **state)
{
    struct md_hdr none[] = {HDR(":status", "200")};
    struct md_hdr wait[] = {HDR(":status", "200"), HDR("grpc-retry-pushback-ms", "250")};
    struct md_hdr stop[] = {HDR(":status", "200"), HDR("grpc-retry-pushback-ms", "-1")};
    struct md_half r = resp(none, 1, true);
    assert_int_equal(md_retry_pushback_ms(&r), -1);
    r = resp(wait, 2, true);
    assert_int_equal(md_retry_pushback_ms(&r), 250);
    r = resp(stop, 2, true);
    assert_int_equal(md_retry_pushback_ms(&r), -2);
}

static void test_backoff_bounds(void **state)
{
    struct md_snap_retry rp = {.base_interval_ms = 25, .max_interval_ms = 250};
    uint64_t rnd = 0x9e3779b97f4a7c15ull;
    double most[6] = {0};
    for (int i = 0; i < 2000; i++) {
        rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
        for (uint32_t a = 1; a <= 5; a++) {
            double b = md_retry_backoff(&rp, a, rnd);
            assert_true(b >= 0);
            if (b > most[a])
                most[a] = b;
        }
    }
    /* full jitter under a cap that doubles from 25 ms up to 250 ms */
    assert_true(most[1] < 0.025 && most[1] > 0.02);
    assert_true(most[2] < 0.050 && most[2] > 0.04);
    assert_true(most[4] < 0.200 && most[4] > 0.16);
    assert_true(most[5] < 0.250 && most[5] > 0.2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_conditions),
        cmocka_unit_test(test_grpc_only_trailers_only),
        cmocka_unit_test(test_ends),
        cmocka_unit_test(test_pushback),
        cmocka_unit_test(test_backoff_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
