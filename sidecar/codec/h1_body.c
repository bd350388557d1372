/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h1_body.h"

#include "core/err.h"

#include <string.h>

ssize_t md_h1_body_pull(struct md_stream *s, struct md_half *h, struct md_outbuf *o, size_t max,
                        enum md_h1_framing framing)
{
    size_t n = h->body.len < max ? h->body.len : max;
    if (n == 0)
        return 0;
    size_t head = o->len;
    if (framing == MD_H1_CHUNKED && md_outbuf_printf(o, "%zx\r\n", n) < 0)
        return MD_ENOMEM;
    uint8_t *p = md_outbuf_reserve(o, n + 2);
    if (!p) {
        o->len = head;
        return MD_ENOMEM;
    }
    md_stream_take(s, h, p, n);
    if (framing == MD_H1_DISCARD)
        return (ssize_t)n; /* the bytes stay past o->len: not sent */
    o->len += n;
    if (framing == MD_H1_CHUNKED) {
        memcpy(o->data + o->len, "\r\n", 2);
        o->len += 2;
    }
    return (ssize_t)n;
}

static bool frames_or_routes(const struct md_hdr *h)
{
    return (h->name_len && h->name[0] == ':') ||
           md_hdr_name_is_connection_specific(h->name, h->name_len) ||
           md_hdr_is(h, "content-length") || md_hdr_is(h, "host") || md_hdr_is(h, "te");
}

int md_h1_last_chunk(struct md_outbuf *o, const struct md_hdr *trailers, size_t n)
{
    int rc = md_outbuf_append(o, "0\r\n", 3);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct md_hdr *t = &trailers[i];
        if (!frames_or_routes(t))
            rc = md_outbuf_printf(o, "%.*s: %.*s\r\n", (int)t->name_len, t->name, (int)t->value_len,
                                  t->value);
    }
    return rc == 0 ? md_outbuf_append(o, "\r\n", 2) : rc;
}
