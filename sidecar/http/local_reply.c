/* SPDX-License-Identifier: Apache-2.0 */
#include "http/local_reply.h"

#include "core/err.h"

#include <stdio.h>
#include <string.h>

/* grpc-message is percent-encoded: bytes outside 0x20-0x7E, and '%'. */
static size_t pct_encode(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < cap; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '%') {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
    return o;
}

static int add(struct md_stream *s, const char *name, const char *value)
{
    return md_stream_add_header(s, &s->resp, name, strlen(name), value, strlen(value));
}

static int add_status(struct md_stream *s, int grpc_status, const char *detail)
{
    char code[16], msg[512];
    snprintf(code, sizeof(code), "%d", grpc_status);
    pct_encode(detail, msg, sizeof(msg));
    int rc = add(s, "grpc-status", code);
    return rc < 0 ? rc : add(s, "grpc-message", msg);
}

int md_local_reply_build(struct md_stream *s, int http_status, int grpc_status, const char *detail)
{
    struct md_half *h = &s->resp;
    md_bq_clear(&h->body);
    h->n_hdrs = h->n_trailers = 0;
    h->headers_done = false;
    char status[8];
    snprintf(status, sizeof(status), "%d", s->grpc ? 200 : http_status);
    int rc = add(s, ":status", status);
    if (rc == 0 && s->overflowed) /* which circuit breaker refused it */
        rc = add(s, "x-meshd-overflowed", s->overflowed);
    if (s->grpc) {
        /* Trailers-only: one HEADERS frame with END_STREAM. */
        if (rc == 0)
            rc = add(s, "content-type", "application/grpc");
        if (rc == 0)
            rc = add_status(s, grpc_status, detail);
        h->headers_end = true;
    } else {
        char body[512], len[16];
        int n = snprintf(body, sizeof(body), "%s\n", detail);
        snprintf(len, sizeof(len), "%d", n);
        if (rc == 0)
            rc = add(s, "content-type", "text/plain; charset=utf-8");
        if (rc == 0)
            rc = add(s, "content-length", len);
        if (rc == 0)
            rc = md_bq_append(&h->body, body, (size_t)n);
        if (rc == 0)
            h->body_bytes += (uint64_t)n;
        h->headers_end = false;
    }
    h->headers_done = true;
    h->end = true;
    return rc;
}

int md_local_reply_add_header(struct md_stream *s, const char *name, const char *value)
{
    /* md_stream_add_header writes to the head only while it is open */
    s->resp.headers_done = false;
    int rc = add(s, name, value);
    s->resp.headers_done = true;
    return rc;
}

int md_local_reply_trailers(struct md_stream *s, int grpc_status, const char *detail)
{
    struct md_half *h = &s->resp;
    h->n_trailers = 0;
    h->headers_done = true; /* md_stream_add_header now writes trailers */
    return add_status(s, grpc_status, detail);
}
