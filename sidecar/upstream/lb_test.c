/* SPDX-License-Identifier: Apache-2.0 */
/* Balancers over hand-made endpoint sets: each policy's spread, smooth
 * weights, least request, priority levels and panic, and how few keys the
 * consistent-hash tables move when an endpoint leaves. */
#include "upstream/lb.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_EPS 16

static struct md_snap_cluster cluster(enum md_lb_policy lb)
{
    return (struct md_snap_cluster){
        .name = "c", .lb = lb, .ring_points = 256, .panic_threshold = 50};
}

/* Endpoints 10.0.0.1:80 .. 10.0.0.n:80 with the given weights (NULL: 1)
 * and priorities (NULL: 0). */
static struct md_epset *make_set(const struct md_snap_cluster *cl, size_t n, const uint32_t *w,
                                 const uint32_t *prio)
{
    struct md_snap_endpoint eps[MAX_EPS];
    for (size_t i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.0.0.%zu", i + 1);
        assert_int_equal(md_addr_parse(ip, 80, &eps[i].addr), 0);
        md_addr_format((struct sockaddr *)&eps[i].addr.ss, eps[i].label);
        eps[i].weight = w ? w[i] : 1;
        eps[i].priority = prio ? prio[i] : 0;
    }
    struct md_epset *set = md_epset_new(cl, eps, n);
    assert_non_null(set);
    return set;
}

/* Which endpoint (1-based, by its last address byte) a pick chose. */
static int ep_no(const struct md_ep *ep)
{
    assert_non_null(ep);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&ep->addr.ss;
    return (int)(ntohl(sin->sin_addr.s_addr) & 0xff);
}

static void count_picks(struct md_lb *lb, const struct md_snap_cluster *cl, int n, int *hits)
{
    struct md_lb_ctx ctx = {0};
    for (int i = 0; i < n; i++)
        hits[ep_no(md_lb_pick(lb, cl, &ctx))]++;
}

static void test_round_robin_even(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_ROUND_ROBIN);
    struct md_epset *set = make_set(&cl, 3, NULL, NULL);
    struct md_lb lb;
    md_lb_init(&lb, 7);
    assert_int_equal(md_lb_set(&lb, set), 0);
    int hits[MAX_EPS + 1] = {0};
    count_picks(&lb, &cl, 300, hits);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(hits[i], 100);
    md_lb_fini(&lb);
    md_epset_unref(set);
}

/* Picks keep their candidates between calls: a health change, an ejection
 * and the end of an ejection must each show at the very next pick. */
static void test_kept_candidates_follow_changes(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_ROUND_ROBIN);
    cl.panic_threshold = 0;
    struct md_epset *set = make_set(&cl, 3, NULL, NULL);
    struct md_clock clock = {.now_ns = 1000 * 1000000ull};
    set->clock = &clock;
    struct md_lb lb;
    md_lb_init(&lb, 7);
    assert_int_equal(md_lb_set(&lb, set), 0);
    int hits[MAX_EPS + 1] = {0};
    count_picks(&lb, &cl, 30, hits);
    assert_int_equal(hits[1], 10);

    md_ep_set_healthy(&set->eps[0], false);
    memset(hits, 0, sizeof(hits));
    count_picks(&lb, &cl, 30, hits);
    assert_int_equal(hits[1], 0);
    assert_int_equal(hits[2] + hits[3], 30);

    md_ep_set_healthy(&set->eps[0], true);
    /* Ejected for 50 ms, as outlier.c does it. */
    __atomic_store_n(&set->eps[1].ejected_until, md_clock_ms(&clock) + 50, __ATOMIC_RELAXED);
    md_ep_changed(&set->eps[1]);
    memset(hits, 0, sizeof(hits));
    count_picks(&lb, &cl, 30, hits);
    assert_int_equal(hits[2], 0);
    assert_int_equal(hits[1], 15);

    md_clock_advance(&clock, 60 * 1000000ull); /* the ejection runs out; nothing tells the balancer */
    memset(hits, 0, sizeof(hits));
    count_picks(&lb, &cl, 30, hits);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(hits[i], 10);
    md_lb_fini(&lb);
    md_epset_unref(set);
}

/* TCP sessions held to an endpoint go on counting in the next set. */
static void test_sessions_carried_to_a_new_set(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_LEAST_REQUEST);
    struct md_epset *two = make_set(&cl, 2, NULL, NULL), *three = make_set(&cl, 3, NULL, NULL);
    struct md_lb lb;
    md_lb_init(&lb, 7);
    assert_int_equal(md_lb_set(&lb, two), 0);
    md_lb_hold(&lb, &two->eps[1].addr);
    md_lb_hold(&lb, &two->eps[1].addr);
    assert_int_equal(md_lb_sessions(&lb, &two->eps[1]), 2);
    assert_int_equal(md_lb_set(&lb, three), 0);
    struct md_ep *same = md_epset_find(three, &two->eps[1].addr);
    assert_int_equal(md_lb_sessions(&lb, same), 2);
    md_lb_release(&lb, &two->eps[1].addr);
    assert_int_equal(md_lb_sessions(&lb, same), 1);
    md_lb_fini(&lb);
    md_epset_unref(two);
    md_epset_unref(three);
}

/* md_epset_find by key: every address of a large set, none other. */
static void test_find_by_address(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_ROUND_ROBIN);
    enum { N = 600 };
    static struct md_snap_endpoint eps[N];
    for (size_t i = 0; i < N; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.1.%zu.%zu", i / 200, i % 200 + 1);
        assert_int_equal(md_addr_parse(ip, (int)(80 + i % 3), &eps[i].addr), 0);
        eps[i].weight = 1;
        eps[i].priority = (uint32_t)(i % 4);
    }
    struct md_epset *set = md_epset_new(&cl, eps, N);
    assert_non_null(set);
    for (size_t i = 0; i < N; i++) {
        struct md_ep *ep = md_epset_find(set, &eps[i].addr);
        assert_non_null(ep);
        assert_true(md_addr_equal(&ep->addr, &eps[i].addr));
    }
    struct md_addr other;
    assert_int_equal(md_addr_parse("10.1.0.1", 81, &other), 0);
    assert_null(md_epset_find(set, &other));
    assert_int_equal(md_addr_parse("10.9.0.1", 80, &other), 0);
    assert_null(md_epset_find(set, &other));
    md_epset_unref(set);
}

static void test_smooth_weighted_no_bursts(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_WEIGHTED_ROUND_ROBIN);
    uint32_t w[] = {5, 1, 1};
    struct md_epset *set = make_set(&cl, 3, w, NULL);
    struct md_lb lb;
    md_lb_init(&lb, 1);
    md_lb_set(&lb, set);
    struct md_lb_ctx ctx = {0};
    int hits[MAX_EPS + 1] = {0};
    for (int k = 1; k <= 700; k++) {
        hits[ep_no(md_lb_pick(&lb, &cl, &ctx))]++;
        /* smooth: after any number of picks each endpoint is within one
         * pick of its share (a plain weighted round robin, a a a a a b c,
         * is 1.4 ahead after five) */
        for (int e = 1; e <= 3; e++)
            if (fabs(hits[e] - k * w[e - 1] / 7.0) >= 1.0)
                fail_msg("after %d picks endpoint %d has %d", k, e, hits[e]);
    }
    assert_int_equal(hits[1], 500);
    assert_int_equal(hits[2], 100);
    assert_int_equal(hits[3], 100);
    md_lb_fini(&lb);
    md_epset_unref(set);
}

static void test_random_follows_weights(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_RANDOM);
    uint32_t w[] = {3, 1};
    struct md_epset *set = make_set(&cl, 2, w, NULL);
    struct md_lb lb;
    md_lb_init(&lb, 99);
    md_lb_set(&lb, set);
    int hits[MAX_EPS + 1] = {0};
    count_picks(&lb, &cl, 40000, hits);
    assert_true(hits[1] > 29000 && hits[1] < 31000); /* 75 % +- 2.5 % */
    md_lb_fini(&lb);
    md_epset_unref(set);
}

static size_t fake_load(void *arg, const struct md_ep *ep)
{
    return ep_no(ep) == 2 ? 10 : 0; /* endpoint 2 is slow: requests pile up there */
}

static void test_least_request_avoids_the_loaded(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_LEAST_REQUEST);
    struct md_epset *set = make_set(&cl, 2, NULL, NULL);
    struct md_lb lb;
    md_lb_init(&lb, 5);
    md_lb_set(&lb, set);
    struct md_lb_ctx ctx = {.load = fake_load};
    int hits[MAX_EPS + 1] = {0};
    for (int i = 0; i < 1000; i++)
        hits[ep_no(md_lb_pick(&lb, &cl, &ctx))]++;
    /* with two endpoints both are drawn almost always: the loaded one only
     * when both draws land on it */
    assert_true(hits[2] < 50);
    md_lb_fini(&lb);
    md_epset_unref(set);
}

static void test_priority_failover_and_panic(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_ROUND_ROBIN);
    uint32_t prio[] = {0, 0, 0, 0, 1};
    struct md_epset *set = make_set(&cl, 5, NULL, prio);
    struct md_lb lb;
    md_lb_init(&lb, 3);
    md_lb_set(&lb, set);
    int hits[MAX_EPS + 1] = {0};
    count_picks(&lb, &cl, 400, hits);
    assert_int_equal(hits[5], 0); /* the lower priority waits */
    /* 2 of 4 unhealthy: 50 % healthy is not below the threshold */
    md_ep_set_healthy(&set->eps[0], false);
    md_ep_set_healthy(&set->eps[1], false);
    memset(hits, 0, sizeof(hits));
    count_picks(&lb, &cl, 400, hits);
    assert_int_equal(hits[1] + hits[2] + hits[5], 0);
    assert_int_equal(hits[3], 200);
    /* 3 of 4 unhealthy: panic, the level balances over all of its endpoints */
    md_ep_set_healthy(&set->eps[2], false);
    memset(hits, 0, sizeof(hits));
    count_picks(&lb, &cl, 400, hits);
    for (int i = 1; i <= 4; i++)
        assert_int_equal(hits[i], 100);
    /* none healthy at priority 0: priority 1 takes everything */
    md_ep_set_healthy(&set->eps[3], false);
    memset(hits, 0, sizeof(hits));
    count_picks(&lb, &cl, 400, hits);
    assert_int_equal(hits[5], 400);
    /* none healthy anywhere: the first level, all of it */
    md_ep_set_healthy(&set->eps[4], false);
    memset(hits, 0, sizeof(hits));
    count_picks(&lb, &cl, 400, hits);
    assert_int_equal(hits[5], 0);
    assert_int_equal(hits[1], 100);
    md_lb_fini(&lb);
    md_epset_unref(set);
}

static void test_tried_endpoints_skipped(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_ROUND_ROBIN);
    struct md_epset *set = make_set(&cl, 3, NULL, NULL);
    struct md_lb lb;
    md_lb_init(&lb, 0);
    md_lb_set(&lb, set);
    uint64_t tried[3] = {set->eps[0].key, set->eps[2].key};
    struct md_lb_ctx ctx = {.tried = tried, .n_tried = 2};
    for (int i = 0; i < 10; i++)
        assert_int_equal(ep_no(md_lb_pick(&lb, &cl, &ctx)), 2);
    tried[2] = set->eps[1].key;
    ctx.n_tried = 3;
    assert_null(md_lb_pick(&lb, &cl, &ctx));
    md_lb_fini(&lb);
    md_epset_unref(set);
}

/* Of 10,000 keys, how many reach another endpoint when endpoint |gone| of
 * |n| leaves (its keys must move; the others should stay). */
static void check_disruption(enum md_lb_policy policy, size_t n, size_t gone)
{
    struct md_snap_cluster cl = cluster(policy);
    struct md_epset *all = make_set(&cl, n, NULL, NULL);
    struct md_lb lb_all, lb_less;
    md_lb_init(&lb_all, 1);
    md_lb_init(&lb_less, 1);
    md_lb_set(&lb_all, all);
    /* the same set without |gone| (DNS dropped it) */
    struct md_snap_endpoint eps[MAX_EPS];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == gone)
            continue;
        eps[k].addr = all->eps[i].addr;
        memcpy(eps[k].label, all->eps[i].label, sizeof(eps[k].label));
        eps[k].weight = 1;
        eps[k].priority = 0;
        k++;
    }
    struct md_epset *less = md_epset_new(&cl, eps, k);
    md_lb_set(&lb_less, less);
    int gone_no = ep_no(&all->eps[gone]), moved = 0, owned = 0, spread[MAX_EPS + 1] = {0};
    for (uint64_t key = 0; key < 10000; key++) {
        struct md_lb_ctx ctx = {.has_hash = true, .hash = md_hash64(&key, sizeof(key))};
        int before = ep_no(md_lb_pick(&lb_all, &cl, &ctx));
        int after = ep_no(md_lb_pick(&lb_less, &cl, &ctx));
        assert_int_equal(ep_no(md_lb_pick(&lb_all, &cl, &ctx)), before); /* stable */
        spread[before]++;
        owned += before == gone_no;
        moved += before != after;
        assert_int_not_equal(after, gone_no);
    }
    /* only the departed endpoint's keys moved (Maglev: nearly only) */
    if (policy == MD_LB_RING_HASH ? moved != owned : moved > owned + owned / 10)
        fail_msg("%d keys moved, endpoint %d owned %d", moved, gone_no, owned);
    if (owned < 10000 / (int)n / 2 || owned > 10000 * 2 / (int)n)
        fail_msg("endpoint %d owned %d of 10000 keys with %zu endpoints", gone_no, owned, n);
    for (size_t i = 1; i <= n; i++)
        if (spread[i] < 10000 / (int)n / 2)
            fail_msg("endpoint %zu got only %d of 10000 keys", i, spread[i]);
    /* unhealthy instead of gone: the same keys move, no others */
    md_ep_set_healthy(&all->eps[gone], false);
    int moved_unhealthy = 0;
    for (uint64_t key = 0; key < 10000; key++) {
        struct md_lb_ctx ctx = {.has_hash = true, .hash = md_hash64(&key, sizeof(key))};
        int now = ep_no(md_lb_pick(&lb_all, &cl, &ctx));
        assert_int_not_equal(now, gone_no);
        md_ep_set_healthy(&all->eps[gone], true);
        moved_unhealthy += now != ep_no(md_lb_pick(&lb_all, &cl, &ctx));
        md_ep_set_healthy(&all->eps[gone], false);
    }
    if (policy == MD_LB_RING_HASH ? moved_unhealthy != owned : moved_unhealthy > owned + owned / 10)
        fail_msg("unhealthy: %d keys moved, endpoint %d owned %d", moved_unhealthy, gone_no, owned);
    md_lb_fini(&lb_all);
    md_lb_fini(&lb_less);
    md_epset_unref(all);
    md_epset_unref(less);
}

static void test_ring_hash_minimal_disruption(void **state)
{
    check_disruption(MD_LB_RING_HASH, 5, 2);
    check_disruption(MD_LB_RING_HASH, 10, 7);
}

static void test_maglev_minimal_disruption(void **state)
{
    check_disruption(MD_LB_MAGLEV, 5, 2);
    check_disruption(MD_LB_MAGLEV, 10, 0);
}

static void test_same_set_in_another_order(void **state)
{
    struct md_snap_cluster cl = cluster(MD_LB_MAGLEV);
    struct md_epset *a = make_set(&cl, 4, NULL, NULL);
    struct md_snap_endpoint eps[4];
    for (size_t i = 0; i < 4; i++) {
        eps[3 - i].addr = a->eps[i].addr;
        memcpy(eps[3 - i].label, a->eps[i].label, sizeof(eps[0].label));
        eps[3 - i].weight = 1;
        eps[3 - i].priority = 0;
    }
    struct md_epset *b = md_epset_new(&cl, eps, 4);
    assert_true(md_epset_same(a, b));
    assert_memory_equal(a->levels[0].maglev, b->levels[0].maglev,
                        MD_MAGLEV_SIZE * sizeof(a->levels[0].maglev[0]));
    b->eps[1].weight = 2;
    assert_false(md_epset_same(a, b));
    md_epset_unref(a);
    md_epset_unref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_even),
        cmocka_unit_test(test_kept_candidates_follow_changes),
        cmocka_unit_test(test_find_by_address),
        cmocka_unit_test(test_sessions_carried_to_a_new_set),
        cmocka_unit_test(test_smooth_weighted_no_bursts),
        cmocka_unit_test(test_random_follows_weights),
        cmocka_unit_test(test_least_request_avoids_the_loaded),
        cmocka_unit_test(test_priority_failover_and_panic),
        cmocka_unit_test(test_tried_endpoints_skipped),
        cmocka_unit_test(test_ring_hash_minimal_disruption),
        cmocka_unit_test(test_maglev_minimal_disruption),
        cmocka_unit_test(test_same_set_in_another_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
