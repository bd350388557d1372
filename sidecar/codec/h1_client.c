/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h1_client.h"

#include "codec/h1_body.h"
#include "codec/h1_field.h"
#include "core/addr.h"
#include "core/err.h"
#include "core/outbuf.h"
#include "core/log.h"
#include "loop/worker.h"
#include "router/router.h"

#include <errno.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF 16384
#define OUT_HIGH (64u * 1024u)
#define PULL_MAX 16384                /* body bytes per chunk */
#define RESP_BODY_HIGH (256u * 1024u) /* response bytes held before reading pauses */

struct md_h1_client {
    struct md_worker *w;
    struct md_sock sock;
    ev_io rio, wio;
    struct md_defer flush;
    llhttp_t parser;
    struct md_h1_client_cfg cfg;
    md_h1_client_event_cb *event;
    void *owner;
    struct md_outbuf out;
    struct md_stream *s;
    struct md_h1_field field;
    bool reused, got_response, chunked, req_sent, resp_done, head, in_1xx;
    bool paused, closing, eof;
    bool tunnel;           /* upgraded (101): raw bytes both ways until both FINs */
    bool idempotent;       /* RFC 9110 §9.2.2: safe to send again after a stale close */
    const char *conn_list; /* the response's Connection value (in the stream's arena) */
    size_t conn_list_len;
    bool shut_wr; /* the tunnel's request side ended: FIN sent */
    bool abort;   /* close with RST: the other side was reset */
    enum md_us_close close_why;
};

static const struct md_stream_side_ops us_ops;
static llhttp_settings_t settings;

static void want_flush(struct md_h1_client *cl)
{
    md_worker_defer(cl->w, &cl->flush);
}

static int out_append(struct md_h1_client *cl, const void *p, size_t n)
{
    return md_outbuf_append(&cl->out, p, n);
}

#define out_printf(cl, ...) md_outbuf_printf(&(cl)->out, __VA_ARGS__)

/* Gives back the request's circuit breaker slot (the pool took it). */
static void slot_put(struct md_h1_client *cl)
{
    if (cl->cfg.rq_slots)
        __atomic_sub_fetch(cl->cfg.rq_slots, 1, __ATOMIC_RELAXED);
}

/* Ends the stream for the router (once). */
static void stream_end(struct md_h1_client *cl, enum md_us_close why)
{
    struct md_stream *s = cl->s;
    if (!s)
        return;
    cl->s = NULL;
    md_stats_add(cl->cfg.rq_active_stat, -1);
    slot_put(cl);
    md_router_on_upstream_closed(s, why, 0);
}

static void teardown(struct md_h1_client *cl)
{
    stream_end(cl, cl->close_why);
    md_worker_defer_cancel(&cl->flush);
    if (cl->sock.fd >= 0) {
        ev_io_stop(cl->w->loop, &cl->rio);
        ev_io_stop(cl->w->loop, &cl->wio);
        md_sock_close(&cl->sock, cl->abort);
    }
    md_outbuf_fini(&cl->out);
    md_h1_field_fini(&cl->field);
}

void md_h1_client_free(struct md_h1_client *cl)
{
    cl->close_why = MD_US_CLOSE_CONN_LOST;
    teardown(cl);
    free(cl);
}

/* From a flush or an event only: frees |cl| and tells the pool. */
static void close_now(struct md_h1_client *cl, enum md_us_close why)
{
    cl->close_why = why;
    teardown(cl);
    cl->event(cl->owner, cl, false);
    free(cl);
}

static int on_message_begin(llhttp_t *p)
{
    struct md_h1_client *cl = p->data;
    md_h1_field_reset(&cl->field);
    cl->in_1xx = false;
    return cl->s ? 0 : -1; /* a response nobody asked for */
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct md_h1_client *cl = p->data;
    return md_h1_field_name(&cl->field, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct md_h1_client *cl = p->data;
    return md_h1_field_value(&cl->field, at, len, 1024 * 1024);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct md_h1_client *cl = p->data;
    struct md_h1_field *f = &cl->field;
    size_t n = f->name_len, vlen = f->value_len;
    md_h1_field_reset(f);
    if (cl->in_1xx || !cl->s)
        return 0;
    /* Framing and connection fields are HTTP/1's; the downstream frames anew.
     * The fields Connection names go too, once the block is whole. */
    if (n == 10 && memcmp(f->name, "connection", 10) == 0 && !cl->conn_list) {
        cl->conn_list = md_arena_strndup(&cl->s->arena, md_h1_field_value_ptr(f), vlen);
        cl->conn_list_len = vlen;
        return cl->conn_list ? 0 : -1;
    }
    int status = llhttp_get_status_code(p);
    if (n == 17 && memcmp(f->name, "transfer-encoding", 17) == 0 && !cl->head && status != 204 &&
        status != 304) {
        /* RFC 9112 §6.1: chunked is the one coding meshd takes off; another
         * would reach the client still applied, with nothing to say so. */
        struct md_hdr te = {"transfer-encoding", 17, md_h1_field_value_ptr(f), vlen};
        if (md_h1_transfer_codings(&te, 1) != MD_H1_TE_CHUNKED) {
            MD_LOG(MD_LOG_INFO, "http1_upstream_bad_response",
                   "upstream=%s err=\"transfer coding other than chunked\"", cl->cfg.label);
            return -1; /* the line logged next names only a callback error */
        }
    }
    if (md_hdr_name_is_connection_specific(f->name, n))
        return 0;
    return md_stream_add_header(cl->s, &cl->s->resp, f->name, n, md_h1_field_value_ptr(f), vlen) < 0
               ? -1
               : 0;
}

/* RFC 9110 §7.6.1: fields the response's Connection header names are
 * hop-by-hop. */
static void drop_nominated(struct md_h1_client *cl)
{
    struct md_half *h = &cl->s->resp;
    if (!cl->conn_list)
        return;
    size_t n = 0;
    for (size_t i = 0; i < h->n_hdrs; i++)
        if (!md_h1_connection_lists(cl->conn_list, cl->conn_list_len, h->hdrs[i].name,
                                    h->hdrs[i].name_len))
            h->hdrs[n++] = h->hdrs[i];
    h->n_hdrs = n;
    cl->conn_list = NULL;
}

static int on_headers_complete(llhttp_t *p)
{
    struct md_h1_client *cl = p->data;
    struct md_stream *s = cl->s;
    int status = llhttp_get_status_code(p);
    cl->got_response = true;
    if (status >= 100 && status < 200 && !(status == 101 && s->upgrade))
        cl->conn_list = NULL; /* an interim response's Connection is its own */
    if (status == 101 && s->upgrade) {
        cl->tunnel = true; /* the response is the tunnel: its bytes come raw */
    } else if (status >= 100 && status < 200) {
        cl->in_1xx = true; /* interim: not forwarded */
        s->resp.n_hdrs = 0;
        return 0;
    }
    /* :status goes first, as HTTP/2 wants it */
    char code[8];
    snprintf(code, sizeof(code), "%03d", status > 0 && status < 1000 ? status : 502);
    size_t n = s->resp.n_hdrs;
    if (md_stream_add_header(s, &s->resp, ":status", 7, code, 3) < 0)
        return -1;
    struct md_hdr st = s->resp.hdrs[n];
    memmove(s->resp.hdrs + 1, s->resp.hdrs, n * sizeof(st));
    s->resp.hdrs[0] = st;
    drop_nominated(cl);
    /* RFC 9110 §6.4.1: HEAD, 204 and 304 responses have no body whatever
     * their Content-Length says. */
    bool bodiless = cl->head || status == 204 || status == 304;
    bool body = cl->tunnel || (!bodiless && ((p->flags & F_CHUNKED) || p->content_length > 0 ||
                                             llhttp_message_needs_eof(p)));
    s->resp.headers_done = true;
    s->resp.headers_end = s->resp.end = !body;
    md_router_on_response(s);
    return bodiless ? 1 : 0; /* 1: llhttp skips the body */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct md_h1_client *cl = p->data;
    if (!cl->s)
        return 0;
    if (md_stream_body(cl->s, &cl->s->resp, at, len) < 0)
        return -1;
    if (cl->s && cl->s->resp.body.len > RESP_BODY_HIGH)
        cl->paused = true;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct md_h1_client *cl = p->data;
    if (cl->in_1xx) {
        cl->in_1xx = false;
        return 0;
    }
    if (cl->tunnel)
        return HPE_PAUSED; /* the rest are the tunnel's bytes, whatever llhttp thinks */
    if (cl->s && !cl->s->resp.end)
        md_stream_end(cl->s, &cl->s->resp);
    cl->resp_done = true;
    want_flush(cl);
    return HPE_PAUSED;
}

/* Out of memory mid-request: the exchange cannot go on. */
static void close_soon(struct md_h1_client *cl, enum md_us_close why)
{
    cl->closing = true;
    cl->close_why = why;
    want_flush(cl);
}

static void pull_request(struct md_h1_client *cl)
{
    struct md_stream *s = cl->s;
    while (s && !cl->req_sent && cl->out.len < OUT_HIGH) {
        ssize_t n = md_h1_body_pull(s, &s->req, &cl->out, PULL_MAX,
                                    cl->chunked ? MD_H1_CHUNKED : MD_H1_RAW);
        if (n < 0) {
            close_soon(cl, MD_US_CLOSE_CONN_LOST);
            return;
        }
        if (s->req.body.len == 0 && s->req.end) {
            /* Trailers need chunks: with a Content-Length they are dropped. */
            if (cl->chunked && md_h1_last_chunk(&cl->out, s->req.trailers, s->req.n_trailers) < 0) {
                close_soon(cl, MD_US_CLOSE_CONN_LOST);
                return;
            }
            cl->req_sent = true;
        }
        if (n == 0)
            break;
    }
}

/* Tunnel bytes from the upstream: the response body, with backpressure. */
static int tunnel_in(struct md_h1_client *cl, const uint8_t *p, size_t n)
{
    struct md_stream *s = cl->s;
    if (!s || n == 0)
        return 0;
    if (md_stream_body(s, &s->resp, p, n) < 0)
        return MD_ENOMEM;
    if (cl->s && cl->s->resp.body.len > RESP_BODY_HIGH)
        cl->paused = true;
    return 0;
}

static void tunnel_out(struct md_h1_client *cl)
{
    struct md_stream *s = cl->s;
    while (s && cl->out.len < OUT_HIGH) {
        ssize_t n = md_h1_body_pull(s, &s->req, &cl->out, PULL_MAX, MD_H1_RAW);
        if (n < 0) {
            close_soon(cl, MD_US_CLOSE_CONN_LOST);
            return;
        }
        if (n == 0)
            break;
    }
}

/* The tunnel's flush: FIN follows the client's once its bytes are out; the
 * exchange is over when both directions have ended. */
static void tunnel_flush(struct md_h1_client *cl)
{
    struct md_stream *s = cl->s;
    int rc;
    do { /* until the socket is full or the client's bytes are all out */
        tunnel_out(cl);
        rc = md_sock_flush(&cl->sock, &cl->out, cl->cfg.tx_stat);
    } while (rc == 0 && s && s->req.body.len > 0);
    if (rc < 0 && rc != -EAGAIN) {
        close_now(cl, MD_US_CLOSE_CONN_LOST);
        return;
    }
    if (s && s->req.end && s->req.body.len == 0 && cl->out.len == 0 && !cl->shut_wr) {
        md_sock_shutdown_wr(&cl->sock);
        cl->shut_wr = true;
    }
    if (cl->shut_wr && cl->eof) {
        close_now(cl, MD_US_CLOSE_DONE);
        return;
    }
    if (rc == -EAGAIN)
        ev_io_start(cl->w->loop, &cl->wio);
    else
        ev_io_stop(cl->w->loop, &cl->wio);
    bool read = !cl->paused && !cl->eof;
    if (read && !ev_is_active(&cl->rio))
        ev_io_start(cl->w->loop, &cl->rio);
    else if (!read && ev_is_active(&cl->rio))
        ev_io_stop(cl->w->loop, &cl->rio);
    md_sock_kick(&cl->sock, cl->w->loop, &cl->rio);
}

static void run_flush(struct md_defer *d)
{
    struct md_h1_client *cl = MD_CONTAINER_OF(d, struct md_h1_client, flush);
    if (cl->closing) {
        close_now(cl, cl->close_why);
        return;
    }
    if (cl->tunnel) {
        tunnel_flush(cl);
        return;
    }
    int rc;
    do { /* until the socket is full or the body taken so far is all out */
        pull_request(cl);
        rc = md_sock_flush(&cl->sock, &cl->out, cl->cfg.tx_stat);
    } while (rc == 0 && cl->s && !cl->req_sent && cl->s->req.body.len > 0);
    if (rc < 0 && rc != -EAGAIN) {
        close_now(cl, cl->reused && cl->idempotent && !cl->got_response && cl->s &&
                              cl->s->req.taken == 0
                          ? MD_US_CLOSE_REFUSED
                          : MD_US_CLOSE_CONN_LOST);
        return;
    }
    if (rc == -EAGAIN)
        ev_io_start(cl->w->loop, &cl->wio);
    else
        ev_io_stop(cl->w->loop, &cl->wio);
    if (cl->resp_done && (cl->req_sent || cl->eof) && cl->out.len == 0) {
        bool keep = !cl->eof && cl->req_sent && llhttp_should_keep_alive(&cl->parser);
        stream_end(cl, MD_US_CLOSE_DONE);
        if (!keep) {
            close_now(cl, MD_US_CLOSE_DONE);
            return;
        }
        cl->resp_done = cl->req_sent = cl->got_response = false;
        cl->event(cl->owner, cl, true); /* idle: back to the pool */
        return;
    }
    if (cl->eof) { /* closed before the exchange could finish */
        close_now(cl, MD_US_CLOSE_CONN_LOST);
        return;
    }
    bool read = !cl->paused;
    if (read && !ev_is_active(&cl->rio))
        ev_io_start(cl->w->loop, &cl->rio);
    else if (!read && ev_is_active(&cl->rio))
        ev_io_stop(cl->w->loop, &cl->rio);
    md_sock_kick(&cl->sock, cl->w->loop, &cl->rio);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    struct md_h1_client *cl = MD_CONTAINER_OF(io, struct md_h1_client, rio);
    uint8_t buf[READ_BUF];
    ssize_t n = md_sock_recv(&cl->sock, buf, sizeof(buf));
    if (n == -EAGAIN)
        return;
    if (cl->tunnel && n >= 0) {
        if (n > 0)
            md_stats_add(cl->cfg.rx_stat, n);
        if (n == 0) {
            cl->eof = true; /* the upstream's FIN ends the response */
            if (cl->s)
                md_stream_end(cl->s, &cl->s->resp);
        } else if (tunnel_in(cl, buf, (size_t)n) < 0) {
            close_now(cl, MD_US_CLOSE_RESET);
            return;
        }
        want_flush(cl);
        return;
    }
    if (n > 0) {
        md_stats_add(cl->cfg.rx_stat, n);
        if (!cl->s) { /* bytes while idle: the connection cannot be trusted */
            close_now(cl, MD_US_CLOSE_CONN_LOST);
            return;
        }
        llhttp_errno_t e = llhttp_execute(&cl->parser, (const char *)buf, (size_t)n);
        if ((e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) && cl->tunnel) {
            const uint8_t *at = (const uint8_t *)llhttp_get_error_pos(&cl->parser);
            if (tunnel_in(cl, at, (size_t)(buf + n - at)) < 0) {
                close_now(cl, MD_US_CLOSE_RESET);
                return;
            }
        } else if (e == HPE_PAUSED) {
            llhttp_resume(&cl->parser); /* bytes after a complete response are ignored */
        } else if (e != HPE_OK) {
            MD_LOG(MD_LOG_INFO, "http1_upstream_bad_response", "upstream=%s err=\"%s\"",
                   cl->cfg.label, llhttp_get_error_reason(&cl->parser));
            close_now(cl, MD_US_CLOSE_RESET);
            return;
        }
        want_flush(cl);
        return;
    }
    /* EOF or error. A response delimited by the close ends here. */
    if (n == 0 && cl->s && cl->got_response) {
        llhttp_finish(&cl->parser);
        if (cl->resp_done) {
            cl->eof = true;
            ev_io_stop(loop, io);
            want_flush(cl);
            return;
        }
    }
    /* Nothing of the response came on a reused connection and nothing of the
     * body was taken: the peer closed it idle, the request is safe to send again. */
    close_now(cl,
              cl->reused && cl->idempotent && !cl->got_response && cl->s && cl->s->req.taken == 0
                  ? MD_US_CLOSE_REFUSED
                  : MD_US_CLOSE_CONN_LOST);
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    run_flush(&MD_CONTAINER_OF(io, struct md_h1_client, wio)->flush);
}

static void us_headers_ready(void *side) {}
static void us_data_ready(void *side)
{
    want_flush(side);
}

static void us_consumed(void *side, size_t n)
{
    struct md_h1_client *cl = side;
    if (cl->paused && cl->s && cl->s->resp.body.len < RESP_BODY_HIGH / 2) {
        cl->paused = false;
        want_flush(cl);
    }
}

static void us_reset(void *side, uint32_t h2_error)
{
    /* An HTTP/1.1 request cannot be cancelled but by closing. */
    struct md_h1_client *cl = side;
    md_stats_add(cl->cfg.rq_active_stat, -1);
    slot_put(cl);
    cl->s = NULL;
    cl->closing = true;
    cl->abort = cl->tunnel; /* a tunnel passes a reset on as a reset */
    cl->close_why = MD_US_CLOSE_DONE;
    want_flush(cl);
}

static const struct md_stream_side_ops us_ops = {
    .headers_ready = us_headers_ready,
    .data_ready = us_data_ready,
    .consumed = us_consumed,
    .reset = us_reset,
};

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

struct md_h1_client *md_h1_client_new(struct md_worker *w, struct md_sock sock,
                                      const struct md_h1_client_cfg *cfg,
                                      md_h1_client_event_cb *event, void *owner)
{
    int fd = sock.fd;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, settings_init);
    struct md_h1_client *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        md_sock_close(&sock, false);
        return NULL;
    }
    cl->w = w;
    cl->sock = sock;
    cl->cfg = *cfg;
    cl->event = event;
    cl->owner = owner;
    llhttp_init(&cl->parser, HTTP_RESPONSE, &settings);
    cl->parser.data = cl;
    md_defer_init(&cl->flush, run_flush);
    ev_io_init(&cl->rio, on_readable, fd, EV_READ);
    ev_io_init(&cl->wio, on_writable, fd, EV_WRITE);
    ev_io_start(w->loop, &cl->rio);
    return cl;
}

static bool skip_request_field(const struct md_hdr *h)
{
    /* Already stripped by the router: connection-specific fields. These are
     * HTTP/2-only or re-framed here. */
    return md_hdr_is(h, "te") || md_hdr_is(h, "content-length") || md_hdr_is(h, "host") ||
           (h->name_len && h->name[0] == ':');
}

/* RFC 6455 §4.1: a nonce of 16 random bytes, base64. */
static void websocket_key(struct md_worker *w, char out[25])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t k[18] = {0}; /* 16 bytes, padded to a multiple of 3 */
    uint64_t a = md_worker_rand(w), b = md_worker_rand(w);
    memcpy(k, &a, 8);
    memcpy(k + 8, &b, 8);
    for (size_t i = 0, o = 0; i < 18; i += 3, o += 4) {
        uint32_t v = (uint32_t)k[i] << 16 | (uint32_t)k[i + 1] << 8 | k[i + 2];
        out[o] = b64[v >> 18];
        out[o + 1] = b64[(v >> 12) & 63];
        out[o + 2] = b64[(v >> 6) & 63];
        out[o + 3] = b64[v & 63];
    }
    out[22] = out[23] = '=';
    out[24] = 0;
}

/* An upgrade's request head: Connection and Upgrade, and for a WebSocket from
 * an HTTP/2 client (RFC 8441 §5 has no key) the handshake fields HTTP/1.1 needs. */
static int upgrade_fields(struct md_h1_client *cl, const struct md_stream *s)
{
    int rc =
        out_printf(cl, "connection: upgrade\r\nupgrade: %.*s\r\n", (int)s->upgrade_len, s->upgrade);
    if (rc < 0 || !(s->upgrade_len == 9 && memcmp(s->upgrade, "websocket", 9) == 0))
        return rc;
    if (!md_hdrs_find(s->us_hdrs, s->n_us_hdrs, "sec-websocket-key")) {
        char key[25];
        websocket_key(cl->w, key);
        rc = out_printf(cl, "sec-websocket-key: %s\r\n", key);
    }
    if (rc == 0 && !md_hdrs_find(s->us_hdrs, s->n_us_hdrs, "sec-websocket-version"))
        rc = out_append(cl, "sec-websocket-version: 13\r\n", 27);
    return rc;
}

static bool is_idempotent(const char *m, size_t n)
{
    static const char *const methods[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (n == strlen(methods[i]) && memcmp(m, methods[i], n) == 0)
            return true;
    return false;
}

int md_h1_client_submit(struct md_h1_client *cl, struct md_stream *s, bool reused)
{
    const struct md_hdr *method = md_hdrs_find(s->us_hdrs, s->n_us_hdrs, ":method");
    const struct md_hdr *path = md_hdrs_find(s->us_hdrs, s->n_us_hdrs, ":path");
    const struct md_hdr *auth = md_hdrs_find(s->us_hdrs, s->n_us_hdrs, ":authority");
    if (!auth) /* an HTTP/2 request may name its host in host instead (RFC 9113 §8.3.1) */
        auth = md_hdrs_find(s->us_hdrs, s->n_us_hdrs, "host");
    const struct md_hdr *len = md_hdrs_find(s->us_hdrs, s->n_us_hdrs, "content-length");
    if (!method || !path)
        return MD_EPROTO;
    cl->out.len = 0;
    /* An extended CONNECT (RFC 8441) is a GET with Upgrade in HTTP/1.1. */
    int rc = out_printf(cl, "%.*s %.*s HTTP/1.1\r\nhost: %.*s\r\n",
                        s->upgrade ? 3 : (int)method->value_len, s->upgrade ? "GET" : method->value,
                        (int)path->value_len, path->value, auth ? (int)auth->value_len : 0,
                        auth ? auth->value : "");
    if (rc == 0 && s->upgrade)
        rc = upgrade_fields(cl, s);
    for (size_t i = 0; rc == 0 && i < s->n_us_hdrs; i++) {
        const struct md_hdr *h = &s->us_hdrs[i];
        if (!skip_request_field(h))
            rc = out_printf(cl, "%.*s: %.*s\r\n", (int)h->name_len, h->name, (int)h->value_len,
                            h->value);
    }
    bool body = !s->req.headers_end && !s->upgrade; /* an upgrade's bytes follow a 101 only */
    cl->chunked = body && !len;
    if (rc == 0 && len && !s->upgrade) /* also "0": some origins want a length on a POST */
        rc = out_printf(cl, "content-length: %.*s\r\n", (int)len->value_len, len->value);
    if (rc == 0 && cl->chunked)
        rc = out_append(cl, "transfer-encoding: chunked\r\n", 28);
    if (rc == 0)
        rc = out_append(cl, "\r\n", 2);
    if (rc < 0)
        return rc;
    cl->s = s;
    cl->reused = reused;
    cl->head = method->value_len == 4 && memcmp(method->value, "HEAD", 4) == 0;
    cl->idempotent = is_idempotent(method->value, method->value_len);
    cl->conn_list = NULL;
    cl->req_sent = !body;
    cl->resp_done = cl->got_response = cl->paused = false;
    cl->tunnel = cl->shut_wr = false;
    s->us = cl;
    s->us_ops = &us_ops;
    md_stats_add(cl->cfg.rq_active_stat, 1);
    want_flush(cl);
    return 0;
}
