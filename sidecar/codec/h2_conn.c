/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h2_conn.h"

#include "core/addr.h"
#include "core/err.h"
#include "core/log.h"
#include "http/stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF 16384
#define BATCH 65536
#define FRAME_HDLEN 9 /* RFC 9113 §4.1 */

static void on_readable(struct ev_loop *loop, ev_io *io, int revents);
static void on_writable(struct ev_loop *loop, ev_io *io, int revents);
static void on_more(struct ev_loop *loop, ev_idle *idle, int revents);

static void run_flush(struct md_defer *d);

void md_h2conn_init(struct md_h2conn *c, struct md_worker *w, struct md_sock sock,
                    md_h2conn_cb *on_free)
{
    int fd = sock.fd;
    c->w = w;
    c->sock = sock;
    c->on_free = on_free;
    md_defer_init(&c->flush, run_flush);
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    ev_idle_init(&c->more, on_more);
    /* Top priority: it runs on the next pass even while other events are
     * pending (idle watchers otherwise wait for a quiet loop). */
    ev_set_priority(&c->more, EV_MAXPRI);
    ev_io_start(w->loop, &c->rio);
}

void md_h2conn_close(struct md_h2conn *c, const char *reason, bool reset)
{
    if (!c->closing) {
        c->closing = true;
        c->close_reason = reason;
        c->reset_on_close = reset;
    }
    md_h2conn_want_flush(c);
}

void md_h2conn_fini(struct md_h2conn *c)
{
    md_worker_defer_cancel(&c->flush);
    if (c->sock.fd >= 0) {
        ev_io_stop(c->w->loop, &c->rio);
        ev_io_stop(c->w->loop, &c->wio);
        ev_idle_stop(c->w->loop, &c->more);
        if (c->linger)
            md_linger_close(&c->w->linger, &c->sock, c->reset_on_close);
        else
            md_sock_close(&c->sock, c->reset_on_close);
    }
    if (c->sess) {
        nghttp2_session_del(c->sess);
        c->sess = NULL;
    }
    md_outbuf_fini(&c->out);
}

/* Decrypted bytes OpenSSL holds are invisible to the socket's watcher: they
 * are read on the next loop pass, after the flush of this one. (Feeding the
 * read watcher instead ran it again before the flush, as libev invokes the
 * events fed by a callback first: a client that kept sending over TLS was
 * read on without end, and a GOAWAY nghttp2 had queued never went out.) */
static void read_more_later(struct md_h2conn *c)
{
    if (c->sock.ssl && ev_is_active(&c->rio) && SSL_pending(c->sock.ssl) > 0)
        ev_idle_start(c->w->loop, &c->more);
}

/* Ends the connection with GOAWAY(|code|) for |why|: counted and logged
 * once. nghttp2 reads nothing more. */
static void refuse(struct md_h2conn *c, uint32_t code, const char *why)
{
    nghttp2_session_terminate_session(c->sess, code);
    md_h2conn_count_proto_error(c);
    MD_LOG(MD_LOG_WARN, "h2_protocol_error", "err=\"%s\"", why);
    md_h2conn_close(c, why, false);
}

/* Hands |n| input bytes to nghttp2. Returns false once the connection
 * closes. */
static bool recv_bytes(struct md_h2conn *c, const uint8_t *p, size_t n)
{
    ssize_t used = nghttp2_session_mem_recv(c->sess, p, n);
    if (used >= 0)
        return true;
    /* For floods and some framing errors nghttp2 queues no GOAWAY itself:
     * say why before closing, and count it. */
    refuse(c,
           used == NGHTTP2_ERR_FLOODED || used == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
               ? NGHTTP2_ENHANCE_YOUR_CALM
               : NGHTTP2_PROTOCOL_ERROR,
           nghttp2_strerror((int)used));
    return false;
}

/* RST_STREAM for |id| even where nghttp2 would not send one (an idle
 * stream): written ahead of nghttp2's frames. */
static void reset_stream(struct md_h2conn *c, int32_t id, uint32_t code)
{
    if (id <= nghttp2_session_get_last_proc_stream_id(c->sess)) {
        nghttp2_submit_rst_stream(c->sess, NGHTTP2_FLAG_NONE, id, code);
        return;
    }
    uint8_t f[13] = {0, 0, 4, NGHTTP2_RST_STREAM, 0, (uint8_t)(id >> 24), (uint8_t)(id >> 16),
                     (uint8_t)(id >> 8), (uint8_t)id, (uint8_t)(code >> 24),
                     (uint8_t)(code >> 16), (uint8_t)(code >> 8), (uint8_t)code};
    if (md_outbuf_append(&c->out, f, sizeof(f)) < 0)
        md_h2conn_close(c, "out_of_memory", true);
}

/* Acts on the guard's verdict (h2_guard.h). Returns false once the
 * connection closes. */
static bool judged(struct md_h2conn *c, const struct md_h2guard_frame *f)
{
    switch (f->verdict) {
    case MD_H2G_OK: break;
    case MD_H2G_SELF_DEPENDENT: reset_stream(c, f->stream, NGHTTP2_PROTOCOL_ERROR); break;
    case MD_H2G_AFTER_RESET: reset_stream(c, f->stream, NGHTTP2_STREAM_CLOSED); break;
    case MD_H2G_FLOOD:
        refuse(c, NGHTTP2_ENHANCE_YOUR_CALM, "flood of frames without progress");
        break;
    case MD_H2G_PRIORITY_ZERO: refuse(c, NGHTTP2_PROTOCOL_ERROR, "PRIORITY on stream 0"); break;
    case MD_H2G_AFTER_END:
        refuse(c, NGHTTP2_STREAM_CLOSED, "DATA or HEADERS on a stream the client ended");
        break;
    }
    return !c->closing;
}

/* Input through the guard, when there is one: a frame it judges is acted
 * on once nghttp2 has read the frames before it. */
static bool take(struct md_h2conn *c, const uint8_t *p, size_t n)
{
    if (!c->guard)
        return recv_bytes(c, p, n);
    size_t fed = 0, at = 0;
    while (at < n) {
        struct md_h2guard_frame f;
        size_t base = at;
        at += md_h2guard_scan(c->guard, p + base, n - base, &f);
        if (f.verdict == MD_H2G_OK)
            break;
        size_t start = base + f.start;
        if (start > fed && !recv_bytes(c, p + fed, start - fed))
            return false;
        fed = start > fed ? start : fed;
        if (!judged(c, &f))
            return false;
    }
    return recv_bytes(c, p + fed, n - fed);
}

static void read_batch(struct md_h2conn *c)
{
    uint8_t buf[READ_BUF];
    for (int round = 0; round < 4 && !c->closing; round++) {
        ssize_t n = md_sock_recv(&c->sock, buf, sizeof(buf));
        if (n == -EAGAIN)
            break;
        if (n <= 0) {
            md_h2conn_close(c, n == 0 ? "peer_closed" : md_err_str((int)n), false);
            break;
        }
        md_stats_add(c->rx_stat, n);
        if (!take(c, buf, (size_t)n))
            break;
        if ((size_t)n < sizeof(buf) || !nghttp2_session_want_read(c->sess))
            break;
    }
    if (!c->closing)
        read_more_later(c); /* the rounds ran out with TLS bytes left */
    md_h2conn_want_flush(c);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    read_batch(MD_CONTAINER_OF(io, struct md_h2conn, rio));
}

static void on_more(struct ev_loop *loop, ev_idle *idle, int revents)
{
    struct md_h2conn *c = MD_CONTAINER_OF(idle, struct md_h2conn, more);
    ev_idle_stop(loop, idle);
    if (ev_is_active(&c->rio) && !c->closing) /* not paused meanwhile */
        read_batch(c);
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    struct md_h2conn *c = MD_CONTAINER_OF(io, struct md_h2conn, wio);
    run_flush(&c->flush);
}

/* Writes |o| (the worker's batch or the connection's backlog); what the
 * socket does not take is kept in c->out. Returns 0 or -errno. */
static int write_out(struct md_h2conn *c, struct md_outbuf *o)
{
    int rc = md_sock_flush(&c->sock, o, c->tx_stat);
    if (o != &c->out && o->len) {
        if (md_outbuf_append(&c->out, o->data, o->len) < 0)
            rc = MD_ENOMEM;
        o->len = 0;
    }
    if (c->out.len == 0 && c->out.cap)
        md_outbuf_fini(&c->out); /* a backlog's memory goes once it is written */
    return rc;
}

/* Frames are gathered into one buffer and written in one call per batch:
 * the worker's, unless earlier bytes still wait in ours (order). */
static struct md_outbuf *out_of(struct md_h2conn *c)
{
    return c->out.len ? &c->out : &c->w->h2_batch;
}

/* After |n| bytes went into |o|: a full batch is written. Returns 0, or an
 * nghttp2 error that stops nghttp2_session_send (c->write_rc says why). */
static int gathered(struct md_h2conn *c, struct md_outbuf *o)
{
    if (o->len < BATCH)
        return 0;
    int rc = write_out(c, o);
    if (rc == -EAGAIN)
        c->write_rc = rc; /* the rest waits in c->out; no more frames for now */
    else if (rc < 0)
        return c->write_rc = rc, NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static ssize_t send_cb(nghttp2_session *sess, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct md_h2conn *c = user;
    if (c->write_rc)
        return NGHTTP2_ERR_WOULDBLOCK; /* offered again at the next flush */
    struct md_outbuf *o = out_of(c);
    if (md_outbuf_append(o, data, len) < 0) {
        md_h2conn_close(c, "out_of_memory", true);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    int rv = gathered(c, o);
    return rv ? rv : (ssize_t)len;
}

void md_h2conn_set_send_callback(nghttp2_session_callbacks *cb)
{
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
}

ssize_t md_h2conn_read_body(nghttp2_session *sess, int32_t id, struct md_stream *s,
                            struct md_half *h, size_t length, uint32_t *data_flags,
                            uint32_t reset_after)
{
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t n = h->body.len < length ? h->body.len : length;
    bool drained = n == h->body.len;
    if (n)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (drained && reset_after) { /* deliver the bytes, then the reset */
        nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, id, reset_after);
        return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
    }
    if (drained && h->end) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (h->n_trailers) {
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_nv *nv = md_h2_nv(&s->arena, h->trailers, h->n_trailers);
            if (!nv || nghttp2_submit_trailer(sess, id, nv, h->n_trailers) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    } else if (n == 0) {
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

int md_h2conn_send_data(struct md_h2conn *c, const nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, struct md_stream *s, struct md_half *h)
{
    if (c->write_rc)
        return NGHTTP2_ERR_WOULDBLOCK;
    /* The stream was let go while this frame waited for the socket (its
     * reset is queued behind it): this frame and stream only, not the
     * connection. We never pad. */
    if (!s || frame->data.padlen)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    struct md_outbuf *o = out_of(c);
    uint8_t *p = md_outbuf_reserve(o, FRAME_HDLEN + length);
    if (!p) {
        md_h2conn_close(c, "out_of_memory", true);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    memcpy(p, framehd, FRAME_HDLEN);
    if (md_stream_take(s, h, p + FRAME_HDLEN, length) != length)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the read callback promised these */
    o->len += FRAME_HDLEN + length;
    if (c->guard)
        md_h2guard_progress(c->guard); /* what the client's WINDOW_UPDATEs answer */
    return gathered(c, o);
}

static void run_flush(struct md_defer *d)
{
    struct md_h2conn *c = MD_CONTAINER_OF(d, struct md_h2conn, flush);
    c->write_rc = 0;
    if (c->sock.fd >= 0 && c->sess) {
        int rv = nghttp2_session_send(c->sess);
        if (rv < 0 && !c->write_rc)
            md_h2conn_close(c, nghttp2_strerror(rv), false);
    }
    int rc = c->write_rc;
    if (!rc && c->sock.fd >= 0 && out_of(c)->len)
        rc = write_out(c, out_of(c));
    c->w->h2_batch.len = 0; /* written or moved, unless closing anyway */
    if (rc == -EAGAIN) {
        ev_io_start(c->w->loop, &c->wio);
    } else if (rc < 0) {
        md_h2conn_close(c, md_err_str(rc), false);
        md_outbuf_fini(&c->out);
    } else {
        ev_io_stop(c->w->loop, &c->wio);
    }
    /* Stop reading while output piles up: the peer must read first. */
    bool pause = c->out.len > MD_H2_OUT_LIMIT;
    if (pause && ev_is_active(&c->rio))
        ev_io_stop(c->w->loop, &c->rio);
    else if (!pause && !ev_is_active(&c->rio) && !c->closing && c->sock.fd >= 0) {
        ev_io_start(c->w->loop, &c->rio);
        read_more_later(c);
    }

    bool done =
        c->sess && !nghttp2_session_want_read(c->sess) && !nghttp2_session_want_write(c->sess);
    if ((c->closing && (c->out.len == 0 || rc < 0 || c->reset_on_close)) ||
        (done && c->out.len == 0)) {
        if (!c->closing)
            c->close_reason = "session_done";
        c->closing = true;
        c->on_free(c);
    }
}

/* Fields whose value is new on every request: indexing them in the HPACK
 * table only evicts entries that would have been reused (and costs ~10% of
 * a small request's CPU). */
static bool never_repeats(const struct md_hdr *h)
{
    return md_hdr_is(h, "x-request-id") || md_hdr_is(h, "grpc-timeout");
}

nghttp2_nv *md_h2_nv(struct md_arena *a, const struct md_hdr *h, size_t n)
{
    nghttp2_nv *nv = md_arena_alloc(a, (n ? n : 1) * sizeof(*nv));
    if (!nv)
        return NULL;
    for (size_t i = 0; i < n; i++)
        nv[i] =
            (nghttp2_nv){(uint8_t *)h[i].name, (uint8_t *)h[i].value, h[i].name_len, h[i].value_len,
                         never_repeats(&h[i]) ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* nghttp2's allocations: the large ones (its stream map, calloc'd, and its
 * 16 KiB frame buffer, mostly unwritten) in whole pages that are resident
 * only once written (core/pages.h); the rest on the heap. */
static void *mem_pages(struct md_h2conn *c, size_t n)
{
    struct md_pages *pg = &c->w->pages;
    void *p = n >= pg->page ? md_pages_alloc(pg, n) : NULL;
    if (p && n > pg->page)
        c->frame_buf = p; /* the one multi-page buffer nghttp2 keeps */
    return p;
}

static void *mem_malloc(size_t n, void *user)
{
    void *p = mem_pages(user, n);
    return p ? p : malloc(n);
}

static void mem_free(void *p, void *user)
{
    struct md_h2conn *c = user;
    if (!md_pages_owns(&c->w->pages, p)) {
        free(p);
        return;
    }
    if (p == c->frame_buf)
        c->frame_buf = NULL;
    md_pages_free(&c->w->pages, p);
}

static void *mem_calloc(size_t n, size_t size, void *user)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = mem_pages(user, n * size); /* page slots come zeroed */
    return p ? p : calloc(n, size);
}

static void *mem_realloc(void *p, size_t n, void *user)
{
    struct md_h2conn *c = user;
    if (!p)
        return mem_malloc(n, user);
    if (!md_pages_owns(&c->w->pages, p))
        return realloc(p, n);
    size_t have = md_pages_size(&c->w->pages, p);
    if (n <= have)
        return p;
    void *q = mem_malloc(n, user);
    if (!q)
        return NULL;
    memcpy(q, p, have);
    mem_free(p, user);
    if (n > c->w->pages.page && md_pages_owns(&c->w->pages, q))
        c->frame_buf = q;
    return q;
}

nghttp2_mem md_h2_mem(struct md_h2conn *c, struct md_worker *w)
{
    c->w = w;
    return (nghttp2_mem){c, mem_malloc, mem_free, mem_calloc, mem_realloc};
}

void md_h2conn_quiesce(struct md_h2conn *c)
{
    /* Between sends nghttp2's frame buffer holds nothing: its next frame is
     * written from the start. */
    if (c->frame_buf && c->sess && !c->closing && c->out.len == 0 &&
        !nghttp2_session_want_write(c->sess))
        md_pages_discard(&c->w->pages, c->frame_buf);
}

nghttp2_option *md_h2_options(void)
{
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        return NULL;
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Flood limits: queued control-frame ACKs, SETTINGS entries, CONTINUATION
     * frames per header block, and RST_STREAM rate (rapid reset, CVE-2023-44487). */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
    /* Until the peer's SETTINGS arrive (one round trip), send one stream at a
     * time: a peer with a low limit would otherwise refuse the rest. */
    nghttp2_option_set_peer_max_concurrent_streams(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    return opt;
}

void md_h2conn_count_proto_error(struct md_h2conn *c)
{
    if (c->proto_err_counted || !c->proto_err_stat)
        return;
    c->proto_err_counted = true;
    md_stats_add(c->proto_err_stat, 1);
}
