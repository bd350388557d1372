/* SPDX-License-Identifier: Apache-2.0 */
#include "http/stream.h"

#include "core/err.h"
#include "loop/worker.h"

#include <stdlib.h>
#include <string.h>

/* Header bytes one stream may hold in its arena (both directions). */
#define MAX_HEADER_BYTES (1024u * 1024u)

struct md_stream *md_stream_new(struct md_worker *w, const struct md_snap_listener *l, void *ds,
                                const struct md_stream_side_ops *ds_ops)
{
    struct md_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->w = w;
    s->id = ++w->next_session_id;
    md_arena_init(&s->arena);
    md_bq_init(&s->req.body);
    md_bq_init(&s->resp.body);
    s->ds = ds;
    s->ds_ops = ds_ops;
    s->listener = l;
    s->started = s->last_active = ev_now(w->loop);
    return s;
}

static void stream_free(struct md_stream *s)
{
    ev_timer_stop(s->w->loop, &s->timer);
    ev_timer_stop(s->w->loop, &s->retry_timer);
    md_outbuf_fini(&s->kept);
    md_bq_fini(&s->req.body);
    md_bq_fini(&s->resp.body);
    md_arena_fini(&s->arena);
    free(s);
}

static int grow(struct md_stream *s, struct md_hdr **v, size_t *cap, size_t n)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    struct md_hdr *nv = md_arena_alloc(&s->arena, ncap * sizeof(*nv));
    if (!nv)
        return MD_ENOMEM;
    if (n)
        memcpy(nv, *v, n * sizeof(*nv));
    *v = nv;
    *cap = ncap;
    return 0;
}

int md_stream_add_header(struct md_stream *s, struct md_half *h, const char *name, size_t name_len,
                         const char *value, size_t value_len)
{
    if (s->arena.used + name_len + value_len > MAX_HEADER_BYTES)
        return MD_ETOOBIG;
    bool trailer = h->headers_done;
    struct md_hdr **v = trailer ? &h->trailers : &h->hdrs;
    size_t *n = trailer ? &h->n_trailers : &h->n_hdrs;
    size_t *cap = trailer ? &h->cap_trailers : &h->cap_hdrs;
    if (grow(s, v, cap, *n) < 0)
        return MD_ENOMEM;
    char *nm = md_arena_alloc(&s->arena, name_len + value_len + 2); /* both NUL-terminated */
    if (!nm)
        return MD_ENOMEM;
    char *val = nm + name_len + 1;
    memcpy(nm, name, name_len);
    nm[name_len] = 0;
    memcpy(val, value, value_len);
    val[value_len] = 0;
    (*v)[(*n)++] = (struct md_hdr){nm, name_len, val, value_len};
    return 0;
}

void md_stream_notify_headers(struct md_stream *s, bool to_ds)
{
    if (to_ds && s->ds)
        s->ds_ops->headers_ready(s->ds);
    else if (!to_ds && s->us)
        s->us_ops->headers_ready(s->us);
}

void md_stream_notify_data(struct md_stream *s, bool to_ds)
{
    if (to_ds && s->ds)
        s->ds_ops->data_ready(s->ds);
    else if (!to_ds && s->us)
        s->us_ops->data_ready(s->us);
}

int md_stream_body(struct md_stream *s, struct md_half *h, const void *data, size_t len)
{
    s->last_active = ev_now(s->w->loop);
    if (h == &s->req && s->local_reply) {
        /* Answered already: the rest of the request is read and dropped. */
        if (s->ds)
            s->ds_ops->consumed(s->ds, len);
        return 0;
    }
    int rc = md_bq_append(&h->body, data, len);
    if (rc < 0)
        return rc;
    h->body_bytes += len;
    if (h == &s->req && s->keep_limit && !s->keep_lost) {
        if (s->kept.len + len > s->keep_limit || md_outbuf_append(&s->kept, data, len) < 0) {
            s->keep_lost = true; /* too large to send again: no more attempts */
            md_outbuf_fini(&s->kept);
        }
    }
    md_stream_notify_data(s, h == &s->resp);
    return 0;
}

void md_stream_end(struct md_stream *s, struct md_half *h)
{
    h->end = true;
    md_stream_notify_data(s, h == &s->resp);
}

size_t md_stream_take(struct md_stream *s, struct md_half *h, void *dst, size_t len)
{
    size_t n = md_bq_read(&h->body, dst, len);
    if (n == 0)
        return 0;
    h->taken += n;
    s->last_active = ev_now(s->w->loop);
    /* The producer of the request is ds; of the response, us. */
    if (h == &s->req && h->taken > s->req_acked) {
        size_t fresh = (size_t)(h->taken - s->req_acked);
        s->req_acked = h->taken;
        if (s->ds)
            s->ds_ops->consumed(s->ds, fresh);
    } else if (h == &s->resp && s->us) {
        s->us_ops->consumed(s->us, n);
    }
    return n;
}

void md_stream_drop_request_body(struct md_stream *s)
{
    md_bq_clear(&s->req.body);
    size_t unacked = (size_t)(s->req.body_bytes - s->req_acked);
    s->req_acked = s->req.body_bytes;
    if (unacked && s->ds)
        s->ds_ops->consumed(s->ds, unacked);
}

bool md_stream_restart(struct md_stream *s)
{
    if (s->keep_lost)
        return false;
    /* What the client sent and the last attempt had not taken yet is in
     * |kept| too: queue the whole body again. */
    md_bq_clear(&s->req.body);
    if (s->kept.len && md_bq_append(&s->req.body, s->kept.data, s->kept.len) < 0)
        return false;
    s->req.taken = 0;
    struct md_half *r = &s->resp;
    md_bq_clear(&r->body);
    r->n_hdrs = r->n_trailers = 0;
    r->headers_done = r->end = r->headers_end = false;
    r->body_bytes = r->taken = 0;
    s->us_ep = NULL;
    return true;
}

bool md_stream_detach_ds(struct md_stream *s)
{
    s->ds = NULL;
    if (s->us)
        return false;
    stream_free(s);
    return true;
}

bool md_stream_detach_us(struct md_stream *s)
{
    s->us = NULL;
    if (s->ds)
        return false;
    stream_free(s);
    return true;
}

bool md_stream_free_if_orphan(struct md_stream *s)
{
    if (s->ds || s->us)
        return false;
    stream_free(s);
    return true;
}

void md_stream_reset_us(struct md_stream *s, uint32_t h2_error)
{
    void *us = s->us;
    if (!us)
        return;
    s->us = NULL;
    s->us_ops->reset(us, h2_error);
}

void md_stream_reset_ds(struct md_stream *s, uint32_t h2_error)
{
    void *ds = s->ds;
    if (!ds)
        return;
    s->ds = NULL;
    s->ds_ops->reset(ds, h2_error);
}
