/* SPDX-License-Identifier: Apache-2.0 */
/* A header as the codecs hand it over: bytes that live in the stream's
 * arena (or the codec's buffers) for the duration of the stream. */
#ifndef MESHD_HTTP_HDRS_H
#define MESHD_HTTP_HDRS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct md_hdr {
    const char *name; /* lower case (HTTP/2); pseudo-headers start with ':' */
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Is |h| named |name| (lower case)? */
static inline bool md_hdr_is(const struct md_hdr *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && memcmp(h->name, name, n) == 0;
}

/* The first field named |name| in |hdrs| (n entries), or NULL. Inline:
 * callers name a constant, whose length and comparison then fold. */
static inline const struct md_hdr *md_hdrs_find(const struct md_hdr *hdrs, size_t n,
                                                const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (hdrs[i].name_len == len && memcmp(hdrs[i].name, name, len) == 0)
            return &hdrs[i];
    return NULL;
}

/* Is |name|/|len| a connection-specific field (RFC 9113 §8.2.2; RFC 9110
 * §7.6.1): connection, keep-alive, proxy-connection, transfer-encoding,
 * upgrade? TE is the caller's to judge (HTTP/2 allows "te: trailers"). */
bool md_hdr_name_is_connection_specific(const char *name, size_t len);

/* A header value that is a decimal number of 1 to 9 digits (a status, a
 * count of ms), or -1 for anything else. */
long md_hdr_decimal(const char *v, size_t len);

/* The decimal value (md_hdr_decimal) of the field |name| in |hdrs|, or -1
 * when it is absent or not a number. */
static inline long md_hdrs_decimal(const struct md_hdr *hdrs, size_t n, const char *name)
{
    const struct md_hdr *h = md_hdrs_find(hdrs, n, name);
    return h ? md_hdr_decimal(h->value, h->value_len) : -1;
}

#endif
