/* SPDX-License-Identifier: Apache-2.0 */
#include "core/outbuf.h"

#include "core/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void md_outbuf_fini(struct md_outbuf *o)
{
    free(o->data);
    o->data = NULL;
    o->len = o->cap = 0;
}

uint8_t *md_outbuf_reserve(struct md_outbuf *o, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n)
            cap *= 2;
        uint8_t *d = realloc(o->data, cap);
        if (!d)
            return NULL;
        o->data = d;
        o->cap = cap;
    }
    return o->data + o->len;
}

int md_outbuf_append(struct md_outbuf *o, const void *p, size_t n)
{
    uint8_t *d = md_outbuf_reserve(o, n);
    if (!d)
        return MD_ENOMEM;
    memcpy(d, p, n);
    o->len += n;
    return 0;
}

int md_outbuf_printf(struct md_outbuf *o, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return MD_EINVAL;
    if ((size_t)n < sizeof(small))
        return md_outbuf_append(o, small, (size_t)n);
    char *big = malloc((size_t)n + 1); /* long header lines are rare */
    if (!big)
        return MD_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = md_outbuf_append(o, big, (size_t)n);
    free(big);
    return rc;
}
