/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/grpc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

bool md_grpc_timeout_parse(const char *v, size_t len, double *seconds)
{
    if (len < 2 || len > 9)
        return false;
    double n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        n = n * 10 + (v[i] - '0');
    }
    static const struct {
        char unit;
        double scale;
    } units[] = {{'H', 3600}, {'M', 60}, {'S', 1}, {'m', 1e-3}, {'u', 1e-6}, {'n', 1e-9}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (v[len - 1] == units[i].unit) {
            *seconds = n * units[i].scale;
            return true;
        }
    }
    return false;
}

size_t md_grpc_timeout_format(double seconds, char *buf)
{
    static const struct {
        char unit;
        double per_second;
    } units[] = {{'n', 1e9}, {'u', 1e6}, {'m', 1e3}, {'S', 1}, {'M', 1.0 / 60}, {'H', 1.0 / 3600}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        double v = seconds * units[i].per_second;
        /* Round down (the upstream must never get more time than is left),
         * forgiving the float error of an exact value (0.9 s = 899999.99..u). */
        double n = floor(v);
        if (v - n > 0.999)
            n += 1;
        if (n < 1)
            n = 1;
        if (n <= 99999999)
            return (size_t)snprintf(buf, 11, "%.0f%c", n, units[i].unit);
    }
    return (size_t)snprintf(buf, 11, "99999999H");
}

bool md_grpc_is_content_type(const char *v, size_t len)
{
    static const char ct[] = "application/grpc";
    size_t n = sizeof(ct) - 1;
    return len >= n && strncasecmp(v, ct, n) == 0 && (len == n || v[n] == '+' || v[n] == ';');
}

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

int md_grpc_field1(const uint8_t *b, size_t n, int wire, uint64_t *v, const uint8_t **p,
                   size_t *len)
{
    if (n < 5 || b[0] != 0)
        return -1; /* compressed, or no message */
    size_t mlen = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
    if (mlen != n - 5)
        return -1; /* a unary body is exactly one message */
    const uint8_t *q = b + 5, *end = b + n;
    int found = 0;
    while (q < end) {
        uint64_t tag, x;
        if (!read_varint(&q, end, &tag) || tag >> 3 == 0)
            return -1;
        bool mine = tag >> 3 == 1;
        if (mine && (int)(tag & 7) != wire)
            return -1;
        switch (tag & 7) {
        case 0:
            if (!read_varint(&q, end, &x))
                return -1;
            if (mine)
                *v = x, found = 1;
            break;
        case 1:
        case 5: {
            size_t w = (tag & 7) == 1 ? 8 : 4;
            if ((size_t)(end - q) < w)
                return -1;
            q += w;
            break;
        }
        case 2:
            if (!read_varint(&q, end, &x) || x > (uint64_t)(end - q))
                return -1;
            if (mine)
                *p = q, *len = (size_t)x, found = 1;
            q += x;
            break;
        default: /* groups are not in proto3 */ return -1;
        }
    }
    return found;
}
