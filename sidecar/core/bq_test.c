/* SPDX-License-Identifier: Apache-2.0 */
#include "core/bq.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

static void test_roundtrip_across_chunks(void **state)
{
    struct md_bq q;
    md_bq_init(&q);
    static unsigned char in[100000], out[100000];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 7);
    /* uneven writes and reads cross chunk boundaries both ways */
    size_t w = 0, r = 0;
    while (r < sizeof(in)) {
        size_t n = w + 5000 < sizeof(in) ? 5000 : sizeof(in) - w;
        if (n) {
            assert_int_equal(md_bq_append(&q, in + w, n), 0);
            w += n;
        }
        r += md_bq_read(&q, out + r, 3333);
        assert_int_equal(q.len, w - r);
    }
    assert_memory_equal(in, out, sizeof(in));
    assert_null(q.head);
    md_bq_fini(&q);
}

static void test_small_first_chunk_then_large(void **state)
{
    /* The first chunk is sized to a small first write; later writes spill
     * into full chunks without losing order. */
    struct md_bq q;
    md_bq_init(&q);
    static unsigned char in[60000], out[60000];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 13 + 1);
    assert_int_equal(md_bq_append(&q, in, 5), 0);
    assert_int_equal(md_bq_append(&q, in + 5, 300), 0);
    assert_int_equal(md_bq_append(&q, in + 305, sizeof(in) - 305), 0);
    assert_int_equal(q.len, sizeof(in));
    assert_int_equal(md_bq_read(&q, out, sizeof(out)), sizeof(out));
    assert_memory_equal(in, out, sizeof(in));
    md_bq_fini(&q);
}

static void test_clear(void **state)
{
    struct md_bq q;
    md_bq_init(&q);
    assert_int_equal(md_bq_append(&q, "abc", 3), 0);
    assert_int_equal(md_bq_append(&q, NULL, 0), 0);
    assert_int_equal(md_bq_clear(&q), 3);
    char c;
    assert_int_equal(md_bq_read(&q, &c, 1), 0);
    md_bq_fini(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_across_chunks),
        cmocka_unit_test(test_small_first_chunk_then_large),
        cmocka_unit_test(test_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
