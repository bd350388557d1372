/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h2_guard.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* Appends one frame (payload |pl| of |len| bytes) to |b| at |*n|. */
static void frame(uint8_t *b, size_t *n, uint8_t type, uint8_t flags, uint32_t id,
                  const void *pl, uint32_t len)
{
    uint8_t *p = b + *n;
    p[0] = (uint8_t)(len >> 16), p[1] = (uint8_t)(len >> 8), p[2] = (uint8_t)len;
    p[3] = type, p[4] = flags;
    p[5] = (uint8_t)(id >> 24), p[6] = (uint8_t)(id >> 16), p[7] = (uint8_t)(id >> 8);
    p[8] = (uint8_t)id;
    if (len)
        memcpy(p + 9, pl, len);
    *n += 9 + len;
}

static struct md_h2guard started(void)
{
    struct md_h2guard g;
    md_h2guard_init(&g);
    struct md_h2guard_frame f;
    assert_int_equal(md_h2guard_scan(&g, (const uint8_t *)PREFACE, 24, &f), 24);
    assert_int_equal(f.verdict, MD_H2G_OK);
    return g;
}

/* Scans all of |b|, one byte at a time when |split|: the first verdict
 * (start: where its frame's header began, when not split). */
static struct md_h2guard_frame scan(struct md_h2guard *g, const uint8_t *b, size_t n, bool split)
{
    struct md_h2guard_frame first = {MD_H2G_OK, 0, 0, 0}, f;
    size_t at = 0;
    while (at < n) {
        size_t step = split ? 1 : n - at;
        size_t k = md_h2guard_scan(g, b + at, step, &f);
        if (f.verdict != MD_H2G_OK && first.verdict == MD_H2G_OK) {
            first = f;
            first.start += at;
        }
        assert_true(f.verdict != MD_H2G_OK || k == step);
        at += k;
    }
    return first;
}

static uint8_t buf[1 << 20];

static void test_progress_keeps_the_budget(void **state)
{
    for (int split = 0; split < 2; split++) {
        struct md_h2guard g = started();
        size_t n = 0;
        frame(buf, &n, 1, 0x4, 1, "\x82", 1); /* HEADERS, a new stream */
        for (int i = 0; i < 5000; i++) {
            frame(buf, &n, 0, 0, 1, "abc", 3);          /* DATA with payload */
            frame(buf, &n, 8, 0, 0, "\0\0\0\3", 4);     /* WINDOW_UPDATE */
            frame(buf, &n, 8, 0, 1, "\0\0\0\3", 4);     /* and its stream's */
            frame(buf, &n, 6, 0, 0, "12345678", 8);     /* PING: not ours */
        }
        assert_int_equal(scan(&g, buf, n, split).verdict, MD_H2G_OK);
    }
}

static void test_floods_run_out(void **state)
{
    static const struct {
        uint8_t type, flags;
        uint32_t id;
        const char *pl;
        uint32_t len;
    } shapes[] = {
        {0, 0, 1, "", 0},                        /* empty DATA */
        {0, 0x8, 1, "\3\0\0\0", 4},              /* DATA of padding only */
        {8, 0, 0, "\0\0\0\1", 4},                /* WINDOW_UPDATE */
        {2, 0, 3, "\0\0\0\1\17", 5},             /* PRIORITY */
        {0xfa, 0, 0, "grease", 6},               /* unknown type */
    };
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        struct md_h2guard g = started();
        size_t n = 0;
        frame(buf, &n, 1, 0x4, 1, "\x82", 1);
        size_t flood_at = 0;
        for (int i = 0; i < 2 * MD_H2GUARD_BUDGET; i++) {
            if (i == MD_H2GUARD_BUDGET)
                flood_at = n;
            frame(buf, &n, shapes[s].type, shapes[s].flags, shapes[s].id, shapes[s].pl,
                  shapes[s].len);
        }
        struct md_h2guard_frame f = scan(&g, buf, n, false);
        assert_int_equal(f.verdict, MD_H2G_FLOOD);
        assert_int_equal(f.start, flood_at); /* the first frame over the budget */
        g = started();
        assert_int_equal(scan(&g, buf, n, true).verdict, MD_H2G_FLOOD);
    }
}

static void test_priority_rules(void **state)
{
    struct md_h2guard g = started();
    size_t n = 0;
    frame(buf, &n, 2, 0, 0, "\0\0\0\1\17", 5);
    assert_int_equal(scan(&g, buf, n, false).verdict, MD_H2G_PRIORITY_ZERO);

    g = started();
    n = 0;
    frame(buf, &n, 2, 0, 5, "\0\0\0\3\17", 5); /* on another stream: fine */
    frame(buf, &n, 2, 0, 5, "\x80\0\0\5\17", 5); /* exclusive, on itself */
    struct md_h2guard_frame f = scan(&g, buf, n, false);
    assert_int_equal(f.verdict, MD_H2G_SELF_DEPENDENT);
    assert_int_equal(f.stream, 5);
    assert_int_equal(f.start, 14);

    g = started(); /* HEADERS on itself: nghttp2's */
    n = 0;
    frame(buf, &n, 1, 0x4 | 0x20 | 0x8, 7, "\1\0\0\0\7\17\x82\0", 8);
    assert_int_equal(scan(&g, buf, n, true).verdict, MD_H2G_OK);
}

static void test_closed_streams(void **state)
{
    for (int split = 0; split < 2; split++) {
        struct md_h2guard g = started();
        size_t n = 0;
        frame(buf, &n, 1, 0x4, 1, "\x82", 1);          /* open 1 */
        frame(buf, &n, 3, 0, 1, "\0\0\0\10", 4);       /* the client resets it */
        frame(buf, &n, 3, 0, 1, "\0\0\0\10", 4);       /* again: allowed */
        frame(buf, &n, 8, 0, 1, "\0\0\0\1", 4);        /* WINDOW_UPDATE: allowed */
        size_t at = n;
        frame(buf, &n, 0, 0, 1, "x", 1);               /* DATA after the reset */
        struct md_h2guard_frame f = scan(&g, buf, n, split);
        assert_int_equal(f.verdict, MD_H2G_AFTER_RESET);
        assert_int_equal(f.stream, 1);
        if (!split)
            assert_int_equal(f.start, at);

        n = 0;
        frame(buf, &n, 1, 0x5, 3, "\x82", 1);          /* 3 ends with its HEADERS */
        frame(buf, &n, 1, 0x4, 5, "\x82", 1);          /* 5 opens */
        frame(buf, &n, 0, 0x1, 5, "ab", 2);            /* and ends with DATA */
        frame(buf, &n, 3, 0, 3, "\0\0\0\10", 4);       /* RST after the end: allowed */
        frame(buf, &n, 1, 0x5, 3, "\x82", 1);          /* HEADERS after the end */
        f = scan(&g, buf, n, split);
        assert_int_equal(f.verdict, MD_H2G_AFTER_END);
        assert_int_equal(f.stream, 3);
        n = 0;
        frame(buf, &n, 0, 0, 5, "x", 1);
        assert_int_equal(scan(&g, buf, n, split).verdict, MD_H2G_AFTER_END);

        /* After our own reset, what the client sends is let through. */
        n = 0;
        frame(buf, &n, 1, 0x4, 7, "\x82", 1);
        assert_int_equal(scan(&g, buf, n, split).verdict, MD_H2G_OK);
        md_h2guard_local_reset(&g, 7);
        n = 0;
        frame(buf, &n, 3, 0, 7, "\0\0\0\10", 4);
        frame(buf, &n, 0, 0x1, 7, "x", 1);
        frame(buf, &n, 1, 0x5, 7, "\x82", 1);
        assert_int_equal(scan(&g, buf, n, split).verdict, MD_H2G_OK);
    }
}

static void test_the_window_forgets_old_streams(void **state)
{
    struct md_h2guard g = started();
    size_t n = 0;
    frame(buf, &n, 1, 0x5, 1, "\x82", 1); /* 1 ends */
    for (uint32_t id = 3; id < 3 + 2 * MD_H2GUARD_WINDOW; id += 2)
        frame(buf, &n, 1, 0x4, id, "\x82", 1);
    frame(buf, &n, 0, 0, 1, "x", 1); /* out of the window: not judged */
    assert_int_equal(scan(&g, buf, n, false).verdict, MD_H2G_OK);
    /* A slot reused by a newer id starts open. */
    n = 0;
    frame(buf, &n, 0, 0x1, 1 + 2 * MD_H2GUARD_WINDOW, "x", 1);
    frame(buf, &n, 1, 0x4, 5 + 2 * MD_H2GUARD_WINDOW, "\x82", 1); /* a jump */
    frame(buf, &n, 0, 0, 3 + 2 * MD_H2GUARD_WINDOW, "x", 1);
    assert_int_equal(scan(&g, buf, n, false).verdict, MD_H2G_OK);
    /* The last stream id there is. */
    n = 0;
    frame(buf, &n, 1, 0x5, 0x7fffffff, "\x82", 1);
    frame(buf, &n, 0, 0, 0x7fffffff, "x", 1);
    assert_int_equal(scan(&g, buf, n, false).verdict, MD_H2G_AFTER_END);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progress_keeps_the_budget),
        cmocka_unit_test(test_floods_run_out),
        cmocka_unit_test(test_priority_rules),
        cmocka_unit_test(test_closed_streams),
        cmocka_unit_test(test_the_window_forgets_old_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
