/* SPDX-License-Identifier: Apache-2.0 */
#include "http/hdrs.h"

bool md_hdr_name_is_connection_specific(const char *name, size_t len)
{
    /* Every field of every request asks: decide by length first. */
    switch (len) {
    case 7: return memcmp(name, "upgrade", 7) == 0;
    case 10: return memcmp(name, "connection", 10) == 0 || memcmp(name, "keep-alive", 10) == 0;
    case 16: return memcmp(name, "proxy-connection", 16) == 0;
    case 17: return memcmp(name, "transfer-encoding", 17) == 0;
    default: return false;
    }
}

long md_hdr_decimal(const char *v, size_t len)
{
    if (len == 0 || len > 9)
        return -1;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}
