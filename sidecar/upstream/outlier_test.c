/* SPDX-License-Identifier: Apache-2.0 */
/* Outlier detection's arithmetic and decisions over hand-made endpoint
 * sets: ejection times, the max-percent rule, runs of errors reported as a
 * worker would, success-rate ejection and returns in the control thread's
 * sweep, the balancer skipping an ejected endpoint; circuit breaker slots. */
#include "upstream/outlier.h"

#include "loop/worker.h"
#include "upstream/clusters.h"
#include "upstream/lb.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

static struct md_snap_outlier outlier(void)
{
    return (struct md_snap_outlier){
        .consecutive_errors = 3,
        .consecutive_grpc_failures = 2,
        .grpc_failures = 1u << 14 | 1u << 13,
        .success_rate_min_requests = 10,
        .interval_ms = 1000,
        .base_ejection_ms = 1000,
        .max_ejection_ms = 2500,
        .max_ejection_percent = 10,
    };
}

static struct md_epset *make_set(const struct md_snap_cluster *cl, size_t n)
{
    struct md_snap_endpoint eps[8];
    memset(eps, 0, sizeof(eps));
    for (size_t i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.0.%zu", i + 1);
        assert_int_equal(md_addr_parse(ip, 80, &eps[i].addr), 0);
        md_addr_format((struct sockaddr *)&eps[i].addr.ss, eps[i].label);
        eps[i].weight = 1;
    }
    struct md_epset *set = md_epset_new(cl, eps, n);
    assert_non_null(set);
    return set;
}

static void test_ejection_time(void **state)
{
    struct md_snap_outlier o = outlier();
    assert_int_equal(md_outlier_ejection_ms(&o, 1), 1000);
    assert_int_equal(md_outlier_ejection_ms(&o, 2), 2000);
    assert_int_equal(md_outlier_ejection_ms(&o, 3), 2500); /* capped */
    assert_int_equal(md_outlier_ejection_ms(&o, 100000), 2500);
}

static void test_max_percent(void **state)
{
    /* one is always allowed when none is ejected (Envoy) */
    assert_true(md_outlier_may_eject(10, 3, 0));
    assert_false(md_outlier_may_eject(10, 3, 1));
    /* 50 % of 3 is 1 (rounded down) */
    assert_false(md_outlier_may_eject(50, 3, 1));
    /* 50 % of 4 is 2 */
    assert_true(md_outlier_may_eject(50, 4, 1));
    assert_false(md_outlier_may_eject(50, 4, 2));
    /* 100 %: all of them, but not more */
    assert_true(md_outlier_may_eject(100, 3, 2));
    assert_false(md_outlier_may_eject(100, 3, 3));
    /* 20 % of 10 is 2 */
    assert_true(md_outlier_may_eject(20, 10, 1));
    assert_false(md_outlier_may_eject(20, 10, 2));
    assert_false(md_outlier_may_eject(0, 10, 0));
    assert_false(md_outlier_may_eject(10, 0, 0));
}

static void test_classify(void **state)
{
    struct md_snap_outlier o = outlier();
    assert_int_equal(md_outlier_classify(&o, 200, -1), MD_OUTLIER_SUCCESS);
    assert_int_equal(md_outlier_classify(&o, 404, -1), MD_OUTLIER_SUCCESS);
    assert_int_equal(md_outlier_classify(&o, 503, -1), MD_OUTLIER_ERROR);
    assert_int_equal(md_outlier_classify(&o, 200, 14), MD_OUTLIER_GRPC_FAILURE);
    assert_int_equal(md_outlier_classify(&o, 200, 5), MD_OUTLIER_SUCCESS); /* NOT_FOUND */
    assert_int_equal(md_outlier_classify(&o, 200, 0), MD_OUTLIER_SUCCESS);
    assert_int_equal(md_outlier_classify(&o, 502, 2), MD_OUTLIER_ERROR);
}

/* A worker as md_outlier_report sees one: its balancer's set and the
 * cluster's shared block. */
struct fixture {
    struct md_snap_outlier o;
    struct md_snap_cluster cl;
    struct md_snapshot snap;
    struct md_epset *set;
    struct md_lb lb;
    struct md_breakers *brk;
    struct md_worker w;
    struct md_clock clock; /* the set's: the tests move time, nothing waits */
};

static void fixture_init(struct fixture *f, size_t n, uint32_t max_percent)
{
    memset(f, 0, sizeof(*f));
    f->o = outlier();
    f->o.max_ejection_percent = max_percent;
    f->cl = (struct md_snap_cluster){.name = "c", .panic_threshold = 50, .outlier = &f->o};
    f->cl.breakers = (struct md_snap_breakers){4, 2, 3, 1};
    f->snap.clusters = &f->cl;
    f->snap.n_clusters = 1;
    f->set = make_set(&f->cl, n);
    f->clock.now_ns = 1000 * 1000000ull;
    f->set->clock = &f->clock;
    md_lb_init(&f->lb, 1);
    assert_int_equal(md_lb_set(&f->lb, f->set), 0);
    assert_non_null(f->brk = md_breakers_new(&f->snap));
    f->w.lbs = &f->lb;
    f->w.breakers = f->brk;
}

static void fixture_fini(struct fixture *f)
{
    md_lb_fini(&f->lb);
    md_epset_unref(f->set);
    md_breakers_free(f->brk);
}

static void report(struct fixture *f, size_t ep, enum md_outlier_result r)
{
    md_outlier_report(&f->w, &f->cl, &f->set->eps[ep].addr, r);
}

static void test_consecutive_errors_eject(void **state)
{
    struct fixture f;
    fixture_init(&f, 4, 50);
    report(&f, 0, MD_OUTLIER_ERROR);
    report(&f, 0, MD_OUTLIER_ERROR);
    report(&f, 0, MD_OUTLIER_SUCCESS); /* a success ends the run */
    report(&f, 0, MD_OUTLIER_ERROR);
    report(&f, 0, MD_OUTLIER_ERROR);
    assert_false(md_ep_ejected(&f.set->eps[0]));
    report(&f, 0, MD_OUTLIER_ERROR);
    assert_true(md_ep_ejected(&f.set->eps[0]));
    assert_false(md_ep_usable(&f.set->eps[0]));
    assert_int_equal(f.set->eps[0].times_ejected, 1);
    assert_int_equal(f.set->eps[0].ejection_ms, 1000);
    assert_int_equal(f.brk->outlier_ejected, 1);
    uint64_t left = f.set->eps[0].ejected_until - md_clock_ms(&f.clock);
    assert_true(left > 900 && left <= 1000);
    /* gRPC failures have their own run: two eject endpoint 1 (50 % of 4 = 2) */
    report(&f, 1, MD_OUTLIER_GRPC_FAILURE);
    report(&f, 1, MD_OUTLIER_ERROR);
    assert_false(md_ep_ejected(&f.set->eps[1]));
    report(&f, 1, MD_OUTLIER_GRPC_FAILURE);
    assert_true(md_ep_ejected(&f.set->eps[1]));
    /* a third would pass 50 %: refused, and it keeps taking traffic */
    for (int i = 0; i < 5; i++)
        report(&f, 2, MD_OUTLIER_ERROR);
    assert_false(md_ep_ejected(&f.set->eps[2]));
    assert_int_equal(f.brk->outlier_ejected, 2);
    /* the balancer picks only the two left */
    struct md_lb_ctx ctx = {0};
    for (int i = 0; i < 40; i++) {
        const struct md_ep *ep = md_lb_pick(&f.lb, &f.cl, &ctx);
        assert_true(ep == &f.set->eps[2] || ep == &f.set->eps[3]);
    }
    fixture_fini(&f);
}

static void test_at_least_one(void **state)
{
    struct fixture f;
    fixture_init(&f, 3, 10); /* 10 % of 3 rounds to 0: one may still go */
    for (int i = 0; i < 3; i++) {
        report(&f, 0, MD_OUTLIER_ERROR);
        report(&f, 1, MD_OUTLIER_ERROR);
    }
    assert_true(md_ep_ejected(&f.set->eps[0]));
    assert_false(md_ep_ejected(&f.set->eps[1]));
    fixture_fini(&f);
}

static void test_eject_directly_and_return(void **state)
{
    struct fixture f;
    fixture_init(&f, 2, 100);
    uint64_t now = md_clock_ms(&f.clock);
    struct md_ep *ep = &f.set->eps[1];
    assert_true(md_outlier_eject(f.brk, &f.cl, f.set, ep, "test", now));
    assert_false(md_outlier_eject(f.brk, &f.cl, f.set, ep, "test", now + 10)); /* already */
    assert_int_equal(ep->ejected_until, now + 1000);
    /* the next ejection lasts longer */
    assert_true(md_outlier_eject(f.brk, &f.cl, f.set, ep, "test", now + 1000));
    assert_int_equal(ep->ejected_until, now + 1000 + 2000);
    assert_int_equal(ep->times_ejected, 2);
    /* someone else deciding: skipped, not waited for */
    f.brk->ejecting = 1;
    assert_false(md_outlier_eject(f.brk, &f.cl, f.set, &f.set->eps[0], "test", now));
    f.brk->ejecting = 0;
    fixture_fini(&f);
}

/* The control thread's sweep: returns, multiplier decay, success rate. */
static void test_sweep(void **state)
{
    struct fixture f;
    fixture_init(&f, 4, 50);
    f.o.success_rate_threshold = 80;
    struct md_clusters cs = {.snap = &f.snap, .cur = &f.set, .breakers = f.brk};
    struct ev_loop *loop = ev_loop_new(0);
    /* The first interval runs from the sweep's creation, at |now| on the
     * set's clock, which stands still until the test moves it. */
    uint64_t now = md_clock_ms(&f.clock);
    struct md_outlier_sweep *sw = md_outlier_sweep_new(loop, &cs, &f.clock);
    assert_non_null(sw);
    struct md_ep *a = &f.set->eps[0], *b = &f.set->eps[1];
    assert_true(md_outlier_eject(f.brk, &f.cl, f.set, a, "test", now));
    md_outlier_sweep_run(sw, now + 999);
    assert_int_equal(a->ejected_until, now + 1000);
    md_outlier_sweep_run(sw, now + 1000); /* returned; a full interval passed */
    assert_int_equal(a->ejected_until, 0);
    assert_int_equal(a->times_ejected, 0); /* decayed at the interval */
    /* b: 7 of 10 succeed (70 % < 80 %), never 3 errors in a row; c: 9 of 10;
     * d: half, but 6 requests are too few */
    for (int i = 0; i < 10; i++) {
        report(&f, 1, i % 3 == 2 ? MD_OUTLIER_ERROR : MD_OUTLIER_SUCCESS);
        report(&f, 2, i < 9 ? MD_OUTLIER_SUCCESS : MD_OUTLIER_ERROR);
        if (i < 6)
            report(&f, 3, i % 2 ? MD_OUTLIER_ERROR : MD_OUTLIER_SUCCESS);
    }
    md_outlier_sweep_run(sw, now + 1500); /* not an interval yet */
    assert_false(md_ep_ejected(b));
    md_outlier_sweep_run(sw, now + 2000);
    assert_true(b->ejected_until > now + 2000);
    assert_int_equal(f.set->eps[2].ejected_until, 0);
    assert_int_equal(f.set->eps[3].ejected_until, 0);
    assert_int_equal(b->sr_total, 0); /* a new interval */
    md_outlier_sweep_free(sw);
    ev_loop_destroy(loop);
    fixture_fini(&f);
}

static void test_breaker_slots(void **state)
{
    struct fixture f;
    fixture_init(&f, 1, 10);
    struct md_breakers *b = f.brk;
    assert_int_equal(md_breakers_remaining(b, MD_BREAKER_REQUESTS), 3);
    for (int i = 0; i < 3; i++)
        assert_true(md_breakers_take(b, MD_BREAKER_REQUESTS));
    assert_false(md_breakers_take(b, MD_BREAKER_REQUESTS));
    assert_int_equal(md_breakers_remaining(b, MD_BREAKER_REQUESTS), 0);
    md_breakers_put(b, MD_BREAKER_REQUESTS);
    assert_true(md_breakers_take(b, MD_BREAKER_REQUESTS));
    for (int i = 0; i < 3; i++)
        md_breakers_put(b, MD_BREAKER_REQUESTS);
    assert_int_equal(md_breakers_remaining(b, MD_BREAKER_REQUESTS), 3);
    assert_true(md_breakers_take(NULL, MD_BREAKER_PENDING)); /* no block: no limit */
    assert_string_equal(md_breakers_name(MD_BREAKER_PENDING), "pending");
    assert_int_equal(md_breakers_remaining(b, MD_BREAKER_CONNECTIONS), 4);
    assert_int_equal(md_breakers_remaining(b, MD_BREAKER_RETRIES), 1);
    fixture_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ejection_time), cmocka_unit_test(test_max_percent),
        cmocka_unit_test(test_classify),      cmocka_unit_test(test_consecutive_errors_eject),
        cmocka_unit_test(test_at_least_one),  cmocka_unit_test(test_eject_directly_and_return),
        cmocka_unit_test(test_sweep),         cmocka_unit_test(test_breaker_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
