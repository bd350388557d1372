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
