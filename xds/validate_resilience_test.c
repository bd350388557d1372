/* SPDX-License-Identifier: Apache-2.0 */
/* Resilience checks (validate_resilience.c): a route's retry policy, rate
 * limit, fault and fallback cluster, and what the snapshot makes of them. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_route_resilience(void **state)
{
    struct hfix h;
    hfix_init(&h);
    Mesh__V1__RetryPolicy rp = MESH__V1__RETRY_POLICY__INIT;
    h.a[1].retry_policy = &rp;
    expect_error(&h.f.b, R(0, 1) "route.retry_policy: retry_on or grpc_retry_on is required");
    char *on[] = {"5xx", "sometimes"}, *grpc_on[] = {"unavailable", "busy"};
    rp.retry_on = on;
    rp.n_retry_on = 2;
    rp.grpc_retry_on = grpc_on;
    rp.n_grpc_retry_on = 2;
    rp.num_retries = 11;
    expect_error(&h.f.b, R(0, 1) "route.retry_policy.retry_on[1]: \"sometimes\": one of 5xx");
    expect_error(&h.f.b, R(0, 1) "route.retry_policy.grpc_retry_on[1]: \"busy\" is not a gRPC "
                                 "status name");
    expect_error(&h.f.b, R(0, 1) "route.retry_policy.num_retries: 11, at most 10");
    rp.n_retry_on = rp.n_grpc_retry_on = 1;
    rp.num_retries = 0;
    Mesh__V1__RateLimit rl = MESH__V1__RATE_LIMIT__INIT;
    h.a[1].rate_limit = &rl;
    expect_error(&h.f.b, R(0, 1) "route.rate_limit.per_second: 0: 1 to 1000000 is required");
    rl.per_second = 100;
    Mesh__V1__FaultInjection fi = MESH__V1__FAULT_INJECTION__INIT;
    fi.abort_percent = 10;
    h.a[1].fault = &fi;
    expect_error(&h.f.b, R(0, 1) "route.fault.abort_percent: needs abort_http_status or "
                                 "abort_grpc_status");
    fi.abort_grpc_status = 14;
    h.a[1].fallback_cluster = "nope";
    expect_error(&h.f.b, R(0, 1) "route.fallback_cluster: unknown cluster \"nope\"");
    h.a[1].fallback_cluster = "";

    struct md_snapshot *snap = NULL;
    assert_int_equal(md_snapshot_build(&h.f.b, &snap), 0);
    const struct md_snap_route *r = &snap->route_configs[0].vhosts[0].routes[1];
    assert_non_null(r->retry);
    assert_int_equal(r->retry->num_retries, 2); /* the default */
    assert_int_equal(r->retry->on, MD_RETRY_ON_5XX);
    assert_int_equal(r->retry->grpc_on, 1u << 14);
    assert_int_equal(r->retry->buffer_limit, 64 * 1024);
    assert_int_equal(r->rate_limit->burst, 100);
    assert_int_equal(snap->n_rate_limits, 1);
    assert_ptr_equal(snap->rate_limits[0], r->rate_limit);
    assert_int_equal(r->fault->abort_grpc_status, 14);
    assert_int_equal(snap->clusters[0].breakers.max_requests, 1024);
    md_snapshot_unref(snap);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_resilience),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
