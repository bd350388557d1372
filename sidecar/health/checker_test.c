/* SPDX-License-Identifier: Apache-2.0 */
/* The probes' parsers: the HTTP status line, HealthCheckResponse, and the
 * HealthCheckRequest the gRPC probe sends. */
#include "health/checker.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static int status_of(const char *s)
{
    int code = -7;
    int rc = parse_status_line(s, strlen(s), &code);
    return rc == 1 ? code : rc == 0 ? -100 : -1;
}

static void test_status_line(void **state)
{
    assert_int_equal(status_of("HTTP/1.1 200 OK\r\n"), 200);
    assert_int_equal(status_of("HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"), 503);
    assert_int_equal(status_of("HTTP/1.1 204\r\n"), 204);             /* no reason */
    assert_int_equal(status_of("HTTP/1.1 200 \r\n"), 200);            /* empty reason */
    assert_int_equal(status_of("HTTP/1.1 200 caf\xc3\xa9\r\n"), 200); /* obs-text */
    assert_int_equal(status_of("HTTP/1.1 20"), -100);                 /* more to come */
    assert_int_equal(status_of("HTTP/1.1 200 OK"), -100);
    assert_int_equal(status_of("HTTP/2 200 OK\r\n"), -1);
    assert_int_equal(status_of("HTTP/1.1 2OO OK\r\n"), -1);
    assert_int_equal(status_of("HTTP/1.1 2000 OK\r\n"), -1);
    assert_int_equal(status_of("HTTP/1.1 200 OK\n"), -1); /* bare LF */
    assert_int_equal(status_of("http/1.1 200 OK\r\n"), -1);
    assert_int_equal(status_of("SSH-2.0-OpenSSH"), -1); /* rejected at once */
    assert_int_equal(status_of("HTTP/1.1 200 O\x01K\r\n"), -1);
    char big[HTTP_READ_MAX];
    memset(big, 'a', sizeof(big));
    memcpy(big, "HTTP/1.1 200 ", 13);
    int code;
    assert_int_equal(parse_status_line(big, sizeof(big), &code), -1); /* no end in 4 KiB */
}

static void test_response(void **state)
{
    uint64_t st;
    static const uint8_t serving[] = {0, 0, 0, 0, 2, 0x08, 1};
    assert_int_equal(parse_response(serving, sizeof(serving), &st), 0);
    assert_int_equal(st, 1);
    static const uint8_t empty[] = {0, 0, 0, 0, 0}; /* status absent: UNKNOWN */
    assert_int_equal(parse_response(empty, sizeof(empty), &st), 0);
    assert_int_equal(st, 0);
    /* an unknown string field, then NOT_SERVING, then SERVING: the last wins */
    static const uint8_t many[] = {0, 0, 0, 0, 7, 0x12, 1, 'x', 0x08, 2, 0x08, 1};
    assert_int_equal(parse_response(many, sizeof(many), &st), 0);
    assert_int_equal(st, 1);
    static const uint8_t compressed[] = {1, 0, 0, 0, 2, 0x08, 1};
    assert_int_equal(parse_response(compressed, sizeof(compressed), &st), MD_EPROTO);
    static const uint8_t short_len[] = {0, 0, 0, 0, 3, 0x08, 1};
    assert_int_equal(parse_response(short_len, sizeof(short_len), &st), MD_EPROTO);
    static const uint8_t cut[] = {0, 0, 0, 0, 2, 0x08, 0x81};
    assert_int_equal(parse_response(cut, sizeof(cut), &st), MD_EPROTO);
    static const uint8_t group[] = {0, 0, 0, 0, 2, 0x0b, 1};
    assert_int_equal(parse_response(group, sizeof(group), &st), MD_EPROTO);
    assert_int_equal(parse_response(serving, 4, &st), MD_EPROTO);
}

/* The request the probe sends, for a short and a long service name. */
static void test_request(void **state)
{
    char name[300];
    size_t lens[] = {0, 12, 127, 128, 299};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        memset(name, 's', lens[k]);
        name[lens[k]] = 0;
        struct md_snap_health_check cfg = {.kind = MD_HC_GRPC, .service = name};
        struct hc_cluster hcl = {.cfg = &cfg};
        struct hc_target t = {.hcl = &hcl};
        struct probe p = {.t = &t};
        uint8_t buf[1024];
        uint32_t flags = 0;
        ssize_t n = read_request(NULL, 1, buf, sizeof(buf), &flags, NULL, &p);
        assert_true(n >= 5);
        assert_true(flags & NGHTTP2_DATA_FLAG_EOF);
        size_t len = (size_t)buf[1] << 24 | (size_t)buf[2] << 16 | (size_t)buf[3] << 8 | buf[4];
        assert_int_equal(buf[0], 0);
        assert_int_equal(len, (size_t)n - 5);
        if (!lens[k]) {
            assert_int_equal(n, 5);
            continue;
        }
        const uint8_t *q = NULL;
        size_t slen = 0;
        assert_int_equal(md_grpc_field1(buf, (size_t)n, 2, NULL, &q, &slen), 1);
        assert_int_equal(slen, lens[k]);
        assert_int_equal(buf + n - q, lens[k]); /* the one field, nothing after it */
        assert_memory_equal(q, name, lens[k]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_line),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
