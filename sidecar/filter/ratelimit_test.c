/* SPDX-License-Identifier: Apache-2.0 */
/* Shared token buckets: a burst then the steady rate, retry waits, two
 * threads on one bucket never admitting more than burst + rate × elapsed,
 * keys independent of each other and of the shared bucket, the LRU bound,
 * long keys, and which key a request gives (header, SPIFFE ID). */
#include "filter/ratelimit.h"

#include "core/clock.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#define SEC 1000000000ull
#define MS 1000000ull
#define T0 (1000 * SEC) /* any monotonic start */

static bool ok(struct md_ratelimit *rl, const char *key, uint64_t now)
{
    return md_ratelimit_take(rl, key, key ? strlen(key) : 0, now) == 0;
}

static void burst_then_rate(void **state)
{
    (void)state;
    struct md_snap_rate_limit cfg = {.per_second = 10, .burst = 5, .max_keys = 10};
    struct md_ratelimit *rl = md_ratelimit_new(&cfg);
    assert_non_null(rl);
    for (int i = 0; i < 5; i++)
        assert_true(ok(rl, NULL, T0));
    /* empty: the next token is one interval (100 ms) away */
    assert_int_equal(md_ratelimit_take(rl, NULL, 0, T0), 100 * MS);
    assert_int_equal(md_ratelimit_take(rl, NULL, 0, T0 + 40 * MS), 60 * MS);
    assert_true(ok(rl, NULL, T0 + 100 * MS));
    assert_false(ok(rl, NULL, T0 + 100 * MS));
    /* one try a millisecond for 10 s: the rate, not the tries, decides */
    int admitted = 0;
    for (uint64_t t = T0 + 101 * MS; t < T0 + 10101 * MS; t += MS)
        admitted += ok(rl, NULL, t);
    assert_int_equal(admitted, 100);
    /* idle long enough: full again, never more than burst */
    int again = 0;
    for (int i = 0; i < 20; i++)
        again += ok(rl, NULL, T0 + 60 * SEC);
    assert_int_equal(again, 5);
    md_ratelimit_free(rl);
}

static void default_burst_of_one(void **state)
{
    (void)state;
    struct md_snap_rate_limit cfg = {.per_second = 3, .burst = 1, .max_keys = 1};
    struct md_ratelimit *rl = md_ratelimit_new(&cfg);
    assert_true(ok(rl, NULL, T0));
    uint64_t wait = md_ratelimit_take(rl, NULL, 0, T0);
    assert_true(wait > 333 * MS && wait <= 334 * MS);
    assert_true(ok(rl, NULL, T0 + wait));
    md_ratelimit_free(rl);
}

/* The threads' clock: every try moves it on by one microsecond, so time
 * passes as they work, and the same for every run however they are
 * scheduled. */
static struct md_clock hammer_clock;

struct hammer {
    struct md_ratelimit *rl;
    const char *key;
    uint64_t until;
    long admitted, tries;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    size_t len = h->key ? strlen(h->key) : 0;
    for (uint64_t now = md_clock_advance(&hammer_clock, 1000); now < h->until;
         now = md_clock_advance(&hammer_clock, 1000)) {
        h->tries++;
        h->admitted += md_ratelimit_take(h->rl, h->key, len, now) == 0;
    }
    return NULL;
}

/* Two threads on one bucket for 300 ms: at most burst + rate × elapsed. */
static void two_threads(const char *key)
{
    struct md_snap_rate_limit cfg = {
        .per_second = 2000, .burst = 100, .max_keys = 4, .header = key ? "x-k" : NULL};
    struct md_ratelimit *rl = md_ratelimit_new(&cfg);
    hammer_clock.now_ns = T0;
    uint64_t start = md_clock_ns(&hammer_clock);
    struct hammer h[2] = {{rl, key, start + 300 * MS, 0, 0}, {rl, key, start + 300 * MS, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    double elapsed = (double)(md_clock_ns(&hammer_clock) - start) / SEC;
    long admitted = h[0].admitted + h[1].admitted;
    double bound = 100 + 2000 * elapsed;
    print_message("key=%s tries=%ld admitted=%ld bound=%.1f elapsed=%.3f\n", key ? key : "-",
                  h[0].tries + h[1].tries, admitted, bound, elapsed);
    assert_true(h[0].tries + h[1].tries > 10 * admitted); /* really over the limit */
    assert_true((double)admitted <= bound + 1);
    /* and it refills */
    assert_true(admitted > 100);
    md_ratelimit_free(rl);
}

static void two_threads_shared(void **state)
{
    (void)state;
    two_threads(NULL);
}

static void two_threads_keyed(void **state)
{
    (void)state;
    two_threads("tenant-a");
}

static void keys_independent(void **state)
{
    (void)state;
    struct md_snap_rate_limit cfg = {
        .per_second = 1, .burst = 2, .max_keys = 100, .header = "x-k", .header_len = 3};
    struct md_ratelimit *rl = md_ratelimit_new(&cfg);
    for (int i = 0; i < 2; i++)
        assert_true(ok(rl, "a", T0));
    assert_false(ok(rl, "a", T0));
    for (int i = 0; i < 2; i++)
        assert_true(ok(rl, "b", T0));
    assert_false(ok(rl, "b", T0));
    /* the keyless bucket is one more, apart from the keyed ones */
    for (int i = 0; i < 2; i++)
        assert_true(ok(rl, NULL, T0));
    assert_false(ok(rl, NULL, T0));
    assert_true(md_ratelimit_take(rl, "", 0, T0) == 0); /* an empty value is a key too */
    assert_int_equal(md_ratelimit_keys(rl), 3);
    assert_true(ok(rl, "a", T0 + SEC)); /* refilled at its own rate */
    assert_false(ok(rl, "a", T0 + SEC));
    md_ratelimit_free(rl);
}

static void lru_bound(void **state)
{
    (void)state;
    struct md_snap_rate_limit cfg = {
        .per_second = 1, .burst = 1, .max_keys = 3, .by_spiffe_id = true};
    struct md_ratelimit *rl = md_ratelimit_new(&cfg);
    assert_true(ok(rl, "a", T0));
    assert_true(ok(rl, "b", T0));
    assert_true(ok(rl, "c", T0));
    assert_false(ok(rl, "a", T0)); /* a is now the most recent: LRU b, c, a */
    assert_true(ok(rl, "d", T0));  /* evicts b: c, a, d */
    assert_int_equal(md_ratelimit_keys(rl), 3);
    assert_false(ok(rl, "c", T0)); /* kept, still empty: a, d, c */
    assert_false(ok(rl, "a", T0)); /* d, c, a */
    assert_true(ok(rl, "b", T0));  /* forgotten, so full again; evicts d */
    assert_true(ok(rl, "d", T0));  /* evicted in turn */
    assert_int_equal(md_ratelimit_keys(rl), 3);
    /* many keys: the map never holds more than max_keys */
    char k[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_true(ok(rl, k, T0));
    }
    assert_int_equal(md_ratelimit_keys(rl), 3);
    md_ratelimit_free(rl);
}

static void many_keys_grow(void **state)
{
    (void)state;
    struct md_snap_rate_limit cfg = {.per_second = 1, .burst = 1, .max_keys = 5000, .header = "x"};
    struct md_ratelimit *rl = md_ratelimit_new(&cfg);
    char k[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_true(ok(rl, k, T0));
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        assert_false(ok(rl, k, T0)); /* every one still known */
    }
    assert_int_equal(md_ratelimit_keys(rl), 5000);
    md_ratelimit_free(rl);
}

static void long_keys(void **state)
{
    (void)state;
    struct md_snap_rate_limit cfg = {.per_second = 1, .burst = 1, .max_keys = 10, .header = "x"};
    struct md_ratelimit *rl = md_ratelimit_new(&cfg);
    char a[600], b[600];
    memset(a, 'x', sizeof(a));
    memcpy(b, a, sizeof(b));
    b[590] = 'y'; /* differs past what is stored */
    assert_int_equal(md_ratelimit_take(rl, a, sizeof(a), T0), 0);
    assert_int_equal(md_ratelimit_take(rl, b, sizeof(b), T0), 0);
    assert_int_equal(md_ratelimit_take(rl, a, sizeof(a) - 1, T0), 0); /* a prefix of it */
    assert_true(md_ratelimit_take(rl, a, sizeof(a), T0) > 0);
    assert_true(md_ratelimit_take(rl, b, sizeof(b), T0) > 0);
    assert_int_equal(md_ratelimit_keys(rl), 3);
    md_ratelimit_free(rl);
}

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        .name = (n), .name_len = sizeof(n) - 1, .value = (v), .value_len = sizeof(v) - 1           \
    }

static void request_keys(void **state)
{
    (void)state;
    const struct md_hdr hdrs[] = {HDR(":path", "/"), HDR("X-Tenant", "blue"),
                                  HDR("x-tenant", "red")};
    size_t len;
    struct md_snap_rate_limit by_hdr = {.header = "x-tenant", .header_len = 8};
    const char *k = md_ratelimit_key(&by_hdr, hdrs, 3, "spiffe://t/a", &len);
    assert_int_equal(len, 4);
    assert_memory_equal(k, "blue", 4);
    assert_null(md_ratelimit_key(&by_hdr, hdrs, 1, NULL, &len)); /* no header: shared */
    struct md_snap_rate_limit by_id = {.by_spiffe_id = true};
    k = md_ratelimit_key(&by_id, hdrs, 3, "spiffe://t/a", &len);
    assert_string_equal(k, "spiffe://t/a");
    assert_int_equal(len, 12);
    assert_null(md_ratelimit_key(&by_id, hdrs, 3, NULL, &len)); /* plaintext: shared */
    struct md_snap_rate_limit none = {0};
    assert_null(md_ratelimit_key(&none, hdrs, 3, "spiffe://t/a", &len));

    /* SPIFFE IDs as keys: each peer its own budget, plaintext peers one */
    struct md_snap_rate_limit cfg = {
        .per_second = 1, .burst = 1, .max_keys = 8, .by_spiffe_id = true};
    struct md_ratelimit *rl = md_ratelimit_new(&cfg);
    const char *ids[] = {"spiffe://t/a", "spiffe://t/b", NULL, NULL};
    int admitted = 0;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 4; i++) {
            k = md_ratelimit_key(&cfg, hdrs, 3, ids[i], &len);
            admitted += md_ratelimit_take(rl, k, len, T0) == 0;
        }
    assert_int_equal(admitted, 3); /* a, b, and the plaintext pair's one */
    md_ratelimit_free(rl);
}

static void for_a_snapshot(void **state)
{
    (void)state;
    struct md_snap_rate_limit a = {.per_second = 5, .burst = 5, .max_keys = 1, .idx = 0};
    struct md_snap_rate_limit b = {.per_second = 5, .burst = 1, .max_keys = 1, .idx = 1};
    struct md_snap_rate_limit *list[] = {&a, &b};
    struct md_snapshot snap = {.n_rate_limits = 2, .rate_limits = list};
    struct md_ratelimit **all = md_ratelimit_new_all(&snap);
    assert_non_null(all);
    assert_true(ok(all[1], NULL, T0));
    assert_false(ok(all[1], NULL, T0));
    assert_true(ok(all[0], NULL, T0)); /* its own bucket */
    md_ratelimit_free_all(all, 2);
    struct md_snapshot empty = {0};
    all = md_ratelimit_new_all(&empty);
    assert_non_null(all);
    md_ratelimit_free_all(all, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_rate),    cmocka_unit_test(default_burst_of_one),
        cmocka_unit_test(two_threads_shared), cmocka_unit_test(two_threads_keyed),
        cmocka_unit_test(keys_independent),   cmocka_unit_test(lru_bound),
        cmocka_unit_test(many_keys_grow),     cmocka_unit_test(long_keys),
        cmocka_unit_test(request_keys),       cmocka_unit_test(for_a_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
