/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h2_rules.h"

#include "http/hdrs.h"

#include <string.h>

enum {
    R_RESPONSE = 1u << 0,
    R_REGULAR = 1u << 1, /* a regular field seen: no pseudo-header may follow */
    R_METHOD = 1u << 2,
    R_SCHEME = 1u << 3,
    R_PATH = 1u << 4,
    R_AUTHORITY = 1u << 5,
    R_PROTOCOL = 1u << 6,
    R_HOST = 1u << 7,
    R_STATUS = 1u << 8,
    R_CONTENT_LENGTH = 1u << 9,
    R_HTTP_SCHEME = 1u << 10, /* http or https: :path is origin-form or "*" */
    R_PATH_ORIGIN = 1u << 11, /* :path starts with "/" */
    R_PATH_STAR = 1u << 12,   /* :path is "*" */
    R_HEAD = 1u << 13,        /* the request's method, kept for its response */
    R_CONNECT = 1u << 14,
    R_OPTIONS = 1u << 15,
    R_FINAL_EXPECTED = 1u << 16, /* after a 1xx */
    /* What one header block says; a response's next block starts afresh. */
    R_BLOCK = R_REGULAR | R_STATUS | R_CONTENT_LENGTH,
};

/* Byte classes. NAME: a lower-case token character (RFC 9110 §5.6.2), what
 * an HTTP/2 field name is made of; UPPER: an upper-case letter (a malformed
 * name, not a bad one); TOKEN: any token character (methods, :protocol);
 * VALUE: allowed in a field value (HTAB, visible ASCII, SP, obs-text: as
 * nghttp2, other controls are refused as well as NUL, CR and LF); PATH: a
 * :path byte (no controls, no SP); AUTH: an :authority byte (RFC 3986
 * unreserved, sub-delims, ":", "@", "[", "]", "%"); SCHEME: a URI scheme
 * byte. */
enum { C_NAME = 1, C_UPPER = 2, C_TOKEN = 4, C_VALUE = 8, C_PATH = 16, C_AUTH = 32, C_SCHEME = 64 };

static uint8_t cls[256];

__attribute__((constructor)) static void classes_init(void)
{
    for (int c = 0; c < 256; c++) {
        uint8_t k = 0;
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        bool tok = alnum || (c && strchr("!#$%&'*+-.^_`|~", c));
        if (tok)
            k |= C_TOKEN | ((c >= 'A' && c <= 'Z') ? C_UPPER : C_NAME);
        if (c == '\t' || (c >= 0x20 && c != 0x7f))
            k |= C_VALUE;
        if (c > 0x20 && c != 0x7f)
            k |= C_PATH;
        if (alnum || (c && strchr("-._~!$&'()*+,;=:@[]%", c)))
            k |= C_AUTH;
        if (alnum || c == '+' || c == '-' || c == '.')
            k |= C_SCHEME;
        cls[c] = k;
    }
}

/* Do all |n| bytes of |s| have class |k|? */
static bool all_of(const uint8_t *s, size_t n, uint8_t k)
{
    uint8_t acc = k;
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        acc &= cls[s[i]] & cls[s[i + 1]] & cls[s[i + 2]] & cls[s[i + 3]];
    for (; i < n; i++)
        acc &= cls[s[i]];
    return acc == k;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* A field value (or a :path, |path|) with every byte allowed: eight bytes
 * at a time, as the common case has no control byte at all. */
static bool value_ok(const uint8_t *v, size_t n, bool path)
{
    uint8_t k = path ? C_PATH : C_VALUE;
    uint64_t below = (path ? 0x21 : 0x20) * ONES;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, v + i, 8);
        uint64_t del = w ^ (0x7f * ONES);
        /* A byte below 0x20 (0x21 for a path) or 0x7f: look byte by byte
         * (a tab is allowed in a value). */
        if ((((w - below) & ~w) | ((del - ONES) & ~del)) & HIGHS && !all_of(v + i, 8, k))
            return false;
    }
    return all_of(v + i, n - i, k);
}

/* Is |v| "trailers" in any case? (OR 0x20 lower-cases a letter, and maps
 * nothing else onto one.) */
static bool is_trailers(const uint8_t *v, size_t n)
{
    uint64_t w, t;
    if (n != 8)
        return false;
    memcpy(&w, v, 8);
    memcpy(&t, "trailers", 8);
    return (w | 0x20 * ONES) == t;
}

/* A constant length lets the compiler compare in a few instructions. */
#define IS(s, n, lit) ((n) == sizeof(lit) - 1 && memcmp((s), (lit), sizeof(lit) - 1) == 0)

static enum md_h2_field bad(struct md_h2_rules *r, const char *why)
{
    r->why = why;
    return MD_H2_FIELD_MALFORMED;
}

/* A pseudo-header field may appear once, with a value. */
static enum md_h2_field once(struct md_h2_rules *r, uint32_t flag, size_t value_len)
{
    if (r->flags & flag)
        return bad(r, "pseudo-header field repeated");
    if (value_len == 0)
        return bad(r, "pseudo-header field empty");
    r->flags |= flag;
    return MD_H2_FIELD_TAKE;
}

static enum md_h2_field request_pseudo(struct md_h2_rules *r, const uint8_t *n, size_t nl,
                                       const uint8_t *v, size_t vl)
{
    enum md_h2_field f;
    if (IS(n, nl, ":method")) {
        if ((f = once(r, R_METHOD, vl)) != MD_H2_FIELD_TAKE)
            return f;
        if (!all_of(v, vl, C_TOKEN))
            return bad(r, ":method not a token");
        if (IS(v, vl, "CONNECT"))
            r->flags |= R_CONNECT;
        else if (IS(v, vl, "HEAD"))
            r->flags |= R_HEAD;
        else if (IS(v, vl, "OPTIONS"))
            r->flags |= R_OPTIONS;
    } else if (IS(n, nl, ":path")) {
        if ((f = once(r, R_PATH, vl)) != MD_H2_FIELD_TAKE)
            return f;
        if (!value_ok(v, vl, true))
            return bad(r, ":path with a control character or space");
        if (v[0] == '/')
            r->flags |= R_PATH_ORIGIN;
        else if (vl == 1 && v[0] == '*')
            r->flags |= R_PATH_STAR;
    } else if (IS(n, nl, ":scheme")) {
        if ((f = once(r, R_SCHEME, vl)) != MD_H2_FIELD_TAKE)
            return f;
        /* RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
        if (!all_of(v, vl, C_SCHEME) || !((v[0] | 0x20) >= 'a' && (v[0] | 0x20) <= 'z'))
            return bad(r, ":scheme not a URI scheme");
        if (IS(v, vl, "http") || IS(v, vl, "https"))
            r->flags |= R_HTTP_SCHEME;
    } else if (IS(n, nl, ":authority")) {
        if ((f = once(r, R_AUTHORITY, vl)) != MD_H2_FIELD_TAKE)
            return f;
        if (!all_of(v, vl, C_AUTH))
            return bad(r, ":authority with a byte no authority has");
    } else if (IS(n, nl, ":protocol")) { /* RFC 8441: we send SETTINGS_ENABLE_CONNECT_PROTOCOL */
        if ((f = once(r, R_PROTOCOL, vl)) != MD_H2_FIELD_TAKE)
            return f;
        if (!all_of(v, vl, C_TOKEN))
            return bad(r, ":protocol not a token");
    } else {
        return bad(r, "unknown pseudo-header field");
    }
    return MD_H2_FIELD_TAKE;
}

static enum md_h2_field response_pseudo(struct md_h2_rules *r, const uint8_t *n, size_t nl,
                                        const uint8_t *v, size_t vl)
{
    if (!IS(n, nl, ":status"))
        return bad(r, "pseudo-header field other than :status in a response");
    enum md_h2_field f = once(r, R_STATUS, vl);
    if (f != MD_H2_FIELD_TAKE)
        return f;
    long status = vl == 3 && v[0] != '0' ? md_hdr_decimal((const char *)v, vl) : -1;
    if (status < 0)
        return bad(r, ":status not three digits");
    r->status = (int)status;
    return MD_H2_FIELD_TAKE;
}

static enum md_h2_field content_length(struct md_h2_rules *r, const uint8_t *v, size_t vl,
                                       bool trailer)
{
    if (trailer)
        return MD_H2_FIELD_DROP; /* trailers cannot frame the body they follow */
    if (r->flags & R_CONTENT_LENGTH)
        return bad(r, "content-length repeated");
    int64_t n = 0;
    for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9' || n > (INT64_MAX - 9) / 10)
            return bad(r, "content-length not a decimal number");
        n = n * 10 + (v[i] - '0');
    }
    if (vl == 0)
        return bad(r, "content-length not a decimal number");
    r->flags |= R_CONTENT_LENGTH;
    r->content_length = n;
    return MD_H2_FIELD_TAKE;
}

enum md_h2_field md_h2_rules_field(struct md_h2_rules *r, const uint8_t *name, size_t name_len,
                                   const uint8_t *value, size_t value_len, bool trailer)
{
    if (r->why)
        return MD_H2_FIELD_MALFORMED;
    if (name_len && name[0] == ':') {
        if (trailer)
            return bad(r, "pseudo-header field in trailers");
        if (r->flags & R_REGULAR)
            return bad(r, "pseudo-header field after a regular field");
        return r->flags & R_RESPONSE ? response_pseudo(r, name, name_len, value, value_len)
                                     : request_pseudo(r, name, name_len, value, value_len);
    }
    r->flags |= R_REGULAR;
    if (!all_of(name, name_len, C_NAME) || name_len == 0) { /* RFC 9113 §8.2.1 */
        for (size_t i = 0; i < name_len; i++)
            if (cls[name[i]] & C_UPPER)
                return bad(r, "upper-case field name");
        return bad(r, "field name not a token");
    }
    if (value_len && !value_ok(value, value_len, false))
        return bad(r, "field value with a control character");
    if (value_len && (value[0] == ' ' || value[0] == '\t' || value[value_len - 1] == ' ' ||
                      value[value_len - 1] == '\t'))
        return bad(r, "field value with leading or trailing whitespace");
    switch (name_len) { /* the fields with rules of their own, by length first */
    case 2:
        if (IS(name, name_len, "te") && !is_trailers(value, value_len))
            return bad(r, "te other than \"trailers\"");
        break;
    case 7:
    case 10:
    case 16:
    case 17:
        if (md_hdr_name_is_connection_specific((const char *)name, name_len))
            return bad(r, "connection-specific field");
        break;
    case 4:
        if (IS(name, name_len, "host") && !(r->flags & R_RESPONSE) && !trailer) {
            if (r->flags & R_HOST)
                return bad(r, "host repeated");
            if (value_len == 0 || !all_of(value, value_len, C_AUTH))
                return bad(r, "host with a byte no authority has");
            r->flags |= R_HOST;
        }
        break;
    case 14:
        if (IS(name, name_len, "content-length"))
            return content_length(r, value, value_len, trailer);
        break;
    }
    return MD_H2_FIELD_TAKE;
}

void md_h2_rules_request_init(struct md_h2_rules *r)
{
    *r = (struct md_h2_rules){.content_length = -1};
}

void md_h2_rules_response_init(struct md_h2_rules *r, const char *method, size_t method_len)
{
    *r = (struct md_h2_rules){.flags = R_RESPONSE, .content_length = -1};
    if (method && method_len == 4 && memcmp(method, "HEAD", 4) == 0)
        r->flags |= R_HEAD;
    else if (method && method_len == 7 && memcmp(method, "CONNECT", 7) == 0)
        r->flags |= R_CONNECT;
}

static bool fail(struct md_h2_rules *r, const char *why)
{
    if (!r->why)
        r->why = why;
    return false;
}

static bool end_of_stream(struct md_h2_rules *r)
{
    if (r->flags & R_FINAL_EXPECTED)
        return fail(r, "stream ended before the final response");
    if (r->content_length >= 0 && r->received != r->content_length)
        return fail(r, "body length differs from content-length");
    return true;
}

static bool request_block(struct md_h2_rules *r)
{
    uint32_t f = r->flags;
    if ((f & R_CONNECT) && !(f & R_PROTOCOL)) { /* RFC 9113 §8.5 */
        if (!(f & R_AUTHORITY))
            return fail(r, "CONNECT without :authority");
        if (f & (R_SCHEME | R_PATH))
            return fail(r, "CONNECT with :scheme or :path");
        r->content_length = -1;
        return true;
    }
    if ((f & (R_METHOD | R_SCHEME | R_PATH)) != (R_METHOD | R_SCHEME | R_PATH))
        return fail(r, "request without :method, :scheme or :path");
    if (!(f & (R_AUTHORITY | R_HOST)))
        return fail(r, "request without :authority or host");
    if ((f & R_PROTOCOL) && !(f & R_CONNECT))
        return fail(r, ":protocol on a request other than CONNECT");
    if ((f & R_HTTP_SCHEME) && !(f & R_PATH_ORIGIN) && !((f & R_PATH_STAR) && (f & R_OPTIONS)))
        return fail(r, ":path neither origin-form nor \"*\" for OPTIONS");
    return true;
}

static bool response_block(struct md_h2_rules *r, bool end_stream, bool *informational)
{
    if (!(r->flags & R_STATUS))
        return fail(r, "response without :status");
    if (r->status < 200) {
        if (r->status == 101)
            return fail(r, "101 in HTTP/2");
        if (end_stream)
            return fail(r, "informational response ended the stream");
        *informational = true;
        r->flags = (r->flags & ~R_BLOCK) | R_FINAL_EXPECTED;
        r->content_length = -1;
        return true;
    }
    r->flags &= ~R_FINAL_EXPECTED;
    if ((r->flags & R_HEAD) || r->status == 204 || r->status == 304)
        r->content_length = 0; /* no body, whatever content-length says */
    else if ((r->flags & R_CONNECT) && r->status / 100 == 2)
        r->content_length = -1; /* a tunnel */
    return true;
}

bool md_h2_rules_block(struct md_h2_rules *r, bool trailer, bool end_stream, bool *informational)
{
    *informational = false;
    if (r->why)
        return false;
    if (trailer) {
        if (!end_stream)
            return fail(r, "trailers without END_STREAM");
    } else if (!(r->flags & R_RESPONSE) ? !request_block(r)
                                        : !response_block(r, end_stream, informational)) {
        return false;
    }
    return !end_stream || end_of_stream(r);
}

bool md_h2_rules_data(struct md_h2_rules *r, size_t n)
{
    if (r->why)
        return false;
    if (r->flags & R_FINAL_EXPECTED)
        return fail(r, "DATA before the final response");
    r->received += (int64_t)n;
    if (r->content_length >= 0 && r->received > r->content_length)
        return fail(r, "more DATA than content-length");
    return true;
}

bool md_h2_rules_data_end(struct md_h2_rules *r)
{
    return !r->why && end_of_stream(r);
}
