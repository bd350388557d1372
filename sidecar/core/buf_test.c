/* SPDX-License-Identifier: Apache-2.0 */
#include "core/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static void test_bounded(void **state)
{
    struct md_buf b;
    assert_int_equal(md_buf_init(&b, 8), 0);
    assert_int_equal(md_buf_append(&b, "0123456789", 10), 8);
    assert_true(md_buf_full(&b));
    size_t room;
    md_buf_reserve(&b, &room);
    assert_int_equal(room, 0);
    assert_int_equal(md_buf_append(&b, "x", 1), 0);
    assert_memory_equal(md_buf_head(&b), "01234567", 8);
    md_buf_fini(&b);
}

static void test_consume_and_compact(void **state)
{
    struct md_buf b;
    assert_int_equal(md_buf_init(&b, 8), 0);
    md_buf_append(&b, "abcdefgh", 8);
    md_buf_consume(&b, 5);
    assert_int_equal(md_buf_len(&b), 3);
    /* tail at the end: reserve compacts the 3 pending bytes to the front */
    size_t room;
    uint8_t *p = md_buf_reserve(&b, &room);
    assert_int_equal(room, 5);
    memcpy(p, "12345", 5);
    md_buf_commit(&b, 5);
    assert_true(md_buf_full(&b));
    assert_memory_equal(md_buf_head(&b), "fgh12345", 8);
    md_buf_consume(&b, 8);
    assert_int_equal(md_buf_len(&b), 0);
    md_buf_reserve(&b, &room);
    assert_int_equal(room, 8); /* empty: back to the start */
    md_buf_fini(&b);
}

static void test_partial_room_without_compaction(void **state)
{
    struct md_buf b;
    assert_int_equal(md_buf_init(&b, 8), 0);
    md_buf_append(&b, "abcd", 4);
    md_buf_consume(&b, 2);
    size_t room;
    md_buf_reserve(&b, &room);
    assert_int_equal(room, 4);                           /* not compacted while the tail has room */
    assert_int_equal(md_buf_append(&b, "efghij", 6), 6); /* 4 fit, then compaction for 2 */
    assert_memory_equal(md_buf_head(&b), "cdefghij", 8);
    md_buf_fini(&b);
}

static void test_stream_through_small_buffer(void **state)
{
    /* 1 MiB through a 7-byte buffer in uneven steps comes out unchanged. */
    struct md_buf b;
    assert_int_equal(md_buf_init(&b, 7), 0);
    size_t in = 0, out = 0, total = 1 << 20;
    uint8_t expect = 0;
    while (out < total) {
        uint8_t chunk[5];
        size_t n = 0;
        while (n < sizeof(chunk) && in + n < total) {
            chunk[n] = (uint8_t)((in + n) * 31);
            n++;
        }
        in += md_buf_append(&b, chunk, n);
        size_t take = md_buf_len(&b) < 3 ? md_buf_len(&b) : 3;
        for (size_t i = 0; i < take; i++) {
            expect = (uint8_t)((out + i) * 31);
            assert_int_equal(md_buf_head(&b)[i], expect);
        }
        md_buf_consume(&b, take);
        out += take;
    }
    md_buf_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_consume_and_compact),
        cmocka_unit_test(test_partial_room_without_compaction),
        cmocka_unit_test(test_stream_through_small_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
