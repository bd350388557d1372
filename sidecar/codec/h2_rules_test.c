/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h2_rules.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

struct f {
    const char *name, *value;
};

#define GET_PSEUDO                                                                                 \
    {":method", "GET"}, {":scheme", "http"}, {":path", "/a"},                                      \
    {                                                                                              \
        ":authority", "svc"                                                                        \
    }

static enum md_h2_field field(struct md_h2_rules *r, const char *n, const char *v, bool trailer)
{
    return md_h2_rules_field(r, (const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v),
                             trailer);
}

/* Feeds one header block; returns the first answer other than TAKE (or
 * TAKE), and whether the block ended well in *ok. */
static enum md_h2_field block(struct md_h2_rules *r, const struct f *fs, size_t n, bool trailer,
                              bool end_stream, bool *ok, bool *informational)
{
    enum md_h2_field worst = MD_H2_FIELD_TAKE;
    for (size_t i = 0; i < n; i++) {
        enum md_h2_field x = field(r, fs[i].name, fs[i].value, trailer);
        if (x > worst)
            worst = x;
    }
    bool info;
    *ok = md_h2_rules_block(r, trailer, end_stream, informational ? informational : &info);
    return worst;
}

/* A request made of |fs| (one block, END_STREAM): NULL if it is well
 * formed, else the rule it breaks. */
static const char *request(const struct f *fs, size_t n)
{
    struct md_h2_rules r;
    md_h2_rules_request_init(&r);
    bool ok;
    block(&r, fs, n, false, true, &ok, NULL);
    return ok ? NULL : r.why;
}
#define REQUEST(...)                                                                               \
    request((const struct f[]){__VA_ARGS__},                                                       \
            sizeof((const struct f[]){__VA_ARGS__}) / sizeof(struct f))

static void test_well_formed_requests(void **state)
{
    assert_null(REQUEST(GET_PSEUDO, {"content-type", "application/grpc"}, {"te", "trailers"}));
    assert_null(REQUEST(GET_PSEUDO, {"te", "Trailers"}));
    assert_null(REQUEST({":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {"host", "h"}));
    assert_null(
        REQUEST({":method", "OPTIONS"}, {":scheme", "http"}, {":path", "*"}, {":authority", "h"}));
    assert_null(REQUEST({":method", "CONNECT"}, {":authority", "h:443"}));
    assert_null(REQUEST({":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "http"},
                        {":path", "/ws"}, {":authority", "h"}));
    assert_null(REQUEST({":method", "GET"}, {":scheme", "foo+bar"}, {":path", "urn:x"},
                        {":authority", "h"}));
    assert_null(REQUEST(GET_PSEUDO, {"content-length", "0"}));
}

static void test_malformed_requests(void **state)
{
    assert_string_equal(REQUEST(GET_PSEUDO, {"X-Upper", "1"}), "upper-case field name");
    const char *conn[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                          "upgrade"};
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(REQUEST(GET_PSEUDO, {conn[i], "x"}), "connection-specific field");
    assert_string_equal(REQUEST(GET_PSEUDO, {"te", "gzip"}), "te other than \"trailers\"");
    assert_non_null(REQUEST({":scheme", "http"}, {":path", "/"}, {":authority", "h"}));
    assert_non_null(REQUEST({":method", "GET"}, {":path", "/"}, {":authority", "h"}));
    assert_non_null(REQUEST({":method", "GET"}, {":scheme", "http"}, {":authority", "h"}));
    assert_string_equal(REQUEST({":method", "GET"}, {":scheme", "http"}, {":path", "/"}),
                        "request without :authority or host");
    assert_string_equal(REQUEST(GET_PSEUDO, {":path", "/b"}), "pseudo-header field repeated");
    assert_string_equal(REQUEST(GET_PSEUDO, {":foo", "x"}), "unknown pseudo-header field");
    assert_string_equal(REQUEST({":method", "GET"}, {"a", "b"}, {":path", "/"}),
                        "pseudo-header field after a regular field");
    assert_string_equal(REQUEST(GET_PSEUDO, {"host", "a"}, {"host", "b"}), "host repeated");
    assert_string_equal(REQUEST(GET_PSEUDO, {"content-length", "x1"}),
                        "content-length not a decimal number");
    assert_string_equal(REQUEST(GET_PSEUDO, {"content-length", ""}),
                        "content-length not a decimal number");
    assert_string_equal(REQUEST(GET_PSEUDO, {"content-length", "99999999999999999999"}),
                        "content-length not a decimal number");
    assert_string_equal(REQUEST(GET_PSEUDO, {"content-length", "1"}, {"content-length", "1"}),
                        "content-length repeated");
    assert_string_equal(REQUEST(GET_PSEUDO, {"content-length", "5"}),
                        "body length differs from content-length");
    assert_non_null(
        REQUEST({":method", "GET"}, {":scheme", "http"}, {":path", "a"}, {":authority", "h"}));
    assert_non_null(
        REQUEST({":method", "GET"}, {":scheme", "http"}, {":path", "*"}, {":authority", "h"}));
    assert_string_equal(REQUEST({":method", "CONNECT"}, {":path", "/"}, {":authority", "h"}),
                        "CONNECT with :scheme or :path");
    assert_string_equal(REQUEST({":path", "/"}, {":method", "CONNECT"}, {":authority", "h"}),
                        "CONNECT with :scheme or :path"); /* in either order */
    assert_string_equal(REQUEST({":method", "CONNECT"}), "CONNECT without :authority");
    assert_string_equal(REQUEST(GET_PSEUDO, {":protocol", "websocket"}),
                        ":protocol on a request other than CONNECT");
    assert_string_equal(
        REQUEST({":method", "GET"}, {":scheme", "http"}, {":path", ""}, {":authority", "h"}),
        "pseudo-header field empty");
    assert_string_equal(
        REQUEST({":method", "GET"}, {":scheme", "http"}, {":path", "/a b"}, {":authority", "h"}),
        ":path with a control character or space");
    assert_string_equal(REQUEST({":method", "GET"}, {":scheme", "http"},
                                {":path", "/0123456789abcdef/\x7fz"}, {":authority", "h"}),
                        ":path with a control character or space");
    assert_string_equal(REQUEST({":method", "GET"}, {":scheme", "http"},
                                {":path", "/0123456789\tabcdef"}, {":authority", "h"}),
                        ":path with a control character or space");
    assert_null(REQUEST({":method", "GET"}, {":scheme", "http"},
                        {":path", "/0123456789abcdef/\x80?q=~"}, {":authority", "h"}));
    assert_string_equal(
        REQUEST({":method", "G T"}, {":scheme", "http"}, {":path", "/"}, {":authority", "h"}),
        ":method not a token");
    assert_string_equal(
        REQUEST({":method", "GET"}, {":scheme", "1http"}, {":path", "/"}, {":authority", "h"}),
        ":scheme not a URI scheme");
    assert_string_equal(
        REQUEST({":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "a b"}),
        ":authority with a byte no authority has");
}

/* One regular field |len| bytes of |value| long, in fresh request rules:
 * NULL if taken, else the rule it breaks. */
static const char *one_field(const char *name, const char *value, size_t len)
{
    struct md_h2_rules r;
    md_h2_rules_request_init(&r);
    enum md_h2_field f = md_h2_rules_field(&r, (const uint8_t *)name, strlen(name),
                                           (const uint8_t *)value, len, false);
    assert_true((f == MD_H2_FIELD_TAKE) == (r.why == NULL));
    return r.why;
}
#define ONE(n, v) one_field(n, v, sizeof(v) - 1)

static void test_bad_bytes_in_fields(void **state)
{
    assert_string_equal(ONE("x-ctl", "a\x01z"), "field value with a control character");
    assert_string_equal(ONE("x-del", "a\x7f"), "field value with a control character");
    assert_string_equal(ONE("x-nul", "a\0b"), "field value with a control character");
    assert_string_equal(ONE("x-lead", " a"), "field value with leading or trailing whitespace");
    assert_string_equal(ONE("x-trail", "a\t"), "field value with leading or trailing whitespace");
    assert_string_equal(ONE("x(y", "1"), "field name not a token");
    assert_string_equal(ONE("x y", "1"), "field name not a token");
    assert_string_equal(ONE("x:y", "1"), "field name not a token");
    assert_string_equal(ONE("", "1"), "field name not a token");
    assert_string_equal(ONE("host", "a b"), "host with a byte no authority has");
    assert_null(ONE("x-ok", "a \t\x80\xff z"));
    assert_null(ONE("x-empty", ""));
    /* Long values are looked at eight bytes at a time: a bad byte anywhere. */
    char v[40];
    for (size_t at = 0; at < 39; at++) {
        const char bad_bytes[] = {'\0', '\x01', '\n', '\r', '\x1f', '\x7f'};
        for (size_t b = 0; b < sizeof(bad_bytes); b++) {
            memset(v, 'a', 39);
            v[at] = bad_bytes[b];
            assert_string_equal(one_field("x-long", v, 39), "field value with a control character");
        }
        v[at] = '\t';
        if (at == 0 || at == 38)
            assert_non_null(one_field("x-long", v, 39));
        else
            assert_null(one_field("x-long", v, 39));
        v[at] = (char)0x80;
        assert_null(one_field("x-long", v, 39));
    }
    /* Once malformed, a message stays so. */
    struct md_h2_rules r;
    md_h2_rules_request_init(&r);
    assert_int_equal(field(&r, "x-ctl", "\x01", false), MD_H2_FIELD_MALFORMED);
    assert_int_equal(field(&r, "x-ok", "1", false), MD_H2_FIELD_MALFORMED);
}

static void test_request_body_and_trailers(void **state)
{
    struct md_h2_rules r;
    bool ok;
    md_h2_rules_request_init(&r);
    block(&r, (const struct f[]){GET_PSEUDO, {"content-length", "5"}}, 5, false, false, &ok, NULL);
    assert_true(ok);
    assert_true(md_h2_rules_data(&r, 3));
    assert_false(md_h2_rules_data_end(&r)); /* 3 of 5 */
    assert_string_equal(r.why, "body length differs from content-length");

    md_h2_rules_request_init(&r);
    block(&r, (const struct f[]){GET_PSEUDO, {"content-length", "2"}}, 5, false, false, &ok, NULL);
    assert_false(md_h2_rules_data(&r, 5));
    assert_string_equal(r.why, "more DATA than content-length");

    md_h2_rules_request_init(&r);
    block(&r, (const struct f[]){GET_PSEUDO}, 4, false, false, &ok, NULL);
    assert_true(md_h2_rules_data(&r, 100));
    assert_int_equal(block(&r, (const struct f[]){{"grpc-x", "1"}, {"content-length", "9"}}, 2,
                           true, true, &ok, NULL),
                     MD_H2_FIELD_DROP); /* trailers do not frame the body */
    assert_true(ok);

    md_h2_rules_request_init(&r);
    block(&r, (const struct f[]){GET_PSEUDO}, 4, false, false, &ok, NULL);
    assert_int_equal(field(&r, ":path", "/", true), MD_H2_FIELD_MALFORMED);
    assert_string_equal(r.why, "pseudo-header field in trailers");

    md_h2_rules_request_init(&r);
    block(&r, (const struct f[]){GET_PSEUDO}, 4, false, false, &ok, NULL);
    block(&r, (const struct f[]){{"a", "b"}}, 1, true, false, &ok, NULL);
    assert_false(ok);
    assert_string_equal(r.why, "trailers without END_STREAM");
}

/* A response block to a |method| request: NULL if it is well formed. */
static const char *response(const char *method, const struct f *fs, size_t n, bool end_stream)
{
    struct md_h2_rules r;
    md_h2_rules_response_init(&r, method, strlen(method));
    bool ok, info;
    block(&r, fs, n, false, end_stream, &ok, &info);
    return ok ? NULL : r.why;
}
#define RESPONSE(m, end, ...)                                                                      \
    response(m, (const struct f[]){__VA_ARGS__},                                                   \
             sizeof((const struct f[]){__VA_ARGS__}) / sizeof(struct f), end)

static void test_responses(void **state)
{
    assert_null(RESPONSE("GET", true, {":status", "200"}, {"content-type", "text/plain"}));
    assert_string_equal(RESPONSE("GET", true, {"a", "b"}), "response without :status");
    assert_string_equal(RESPONSE("GET", true, {":status", "20"}), ":status not three digits");
    assert_string_equal(RESPONSE("GET", true, {":status", "abc"}), ":status not three digits");
    assert_string_equal(RESPONSE("GET", true, {":status", "099"}), ":status not three digits");
    assert_string_equal(RESPONSE("GET", true, {":status", "200"}, {":status", "200"}),
                        "pseudo-header field repeated");
    assert_string_equal(RESPONSE("GET", true, {"a", "b"}, {":status", "200"}),
                        "pseudo-header field after a regular field");
    assert_string_equal(RESPONSE("GET", true, {":status", "200"}, {":path", "/"}),
                        "pseudo-header field other than :status in a response");
    assert_string_equal(RESPONSE("GET", true, {":status", "200"}, {"connection", "close"}),
                        "connection-specific field");
    assert_string_equal(RESPONSE("GET", true, {":status", "200"}, {"Server", "x"}),
                        "upper-case field name");
    assert_string_equal(RESPONSE("GET", true, {":status", "101"}), "101 in HTTP/2");
    assert_string_equal(RESPONSE("GET", true, {":status", "103"}),
                        "informational response ended the stream");
    assert_string_equal(RESPONSE("GET", true, {":status", "200"}, {"content-length", "3"}),
                        "body length differs from content-length");
    /* No body where none can be, whatever content-length says. */
    assert_null(RESPONSE("HEAD", true, {":status", "200"}, {"content-length", "10"}));
    assert_null(RESPONSE("GET", true, {":status", "304"}, {"content-length", "10"}));
}

static void test_response_flow(void **state)
{
    struct md_h2_rules r;
    bool ok, info;
    md_h2_rules_response_init(&r, "GET", 3);
    block(&r, (const struct f[]){{":status", "103"}, {"link", "</a>"}}, 2, false, false, &ok,
          &info);
    assert_true(ok && info);
    assert_true(r.status == 103);
    assert_false(md_h2_rules_data(&r, 1)); /* DATA before the final response */

    md_h2_rules_response_init(&r, "GET", 3);
    block(&r, (const struct f[]){{":status", "100"}}, 1, false, false, &ok, &info);
    assert_true(ok && info);
    block(&r, (const struct f[]){{":status", "200"}, {"content-length", "4"}}, 2, false, false, &ok,
          &info);
    assert_true(ok && !info);
    assert_true(md_h2_rules_data(&r, 4));
    assert_true(md_h2_rules_data_end(&r));

    md_h2_rules_response_init(&r, "GET", 3);
    block(&r, (const struct f[]){{":status", "204"}}, 1, false, false, &ok, &info);
    assert_false(md_h2_rules_data(&r, 1));

    md_h2_rules_response_init(&r, "CONNECT", 7);
    block(&r, (const struct f[]){{":status", "200"}, {"content-length", "0"}}, 2, false, false, &ok,
          &info);
    assert_true(md_h2_rules_data(&r, 1000)); /* a tunnel: no length */

    md_h2_rules_response_init(&r, "GET", 3);
    block(&r, (const struct f[]){{":status", "100"}}, 1, false, false, &ok, &info);
    block(&r, (const struct f[]){{"a", "b"}}, 1, false, true, &ok, &info);
    assert_false(ok); /* the block after a 1xx needs its own :status */
    assert_string_equal(r.why, "response without :status");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_well_formed_requests),
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_bad_bytes_in_fields),
        cmocka_unit_test(test_request_body_and_trailers),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_response_flow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
