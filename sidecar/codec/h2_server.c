/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h2_server.h"

#include "codec/grpc.h"
#include "codec/h2_conn.h"
#include "codec/h2_rules.h"
#include "core/addr.h"
#include "core/log.h"
#include "http/stream.h"
#include "router/router.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct h2sc; /* server connection */

/* A connection without streams this long gives back its frame buffer's
 * memory: idle connections are most of a busy sidecar's connections. */
#define QUIESCE_S 0.25

/* One downstream stream: the codec's half of an md_stream. */
struct h2ss {
    struct md_list link; /* in h2sc.streams */
    struct h2sc *c;
    int32_t id;
    struct md_stream *s;      /* NULL once detached */
    size_t unconsumed;        /* DATA bytes received and not yet acknowledged */
    size_t header_bytes;      /* of the current header block */
    struct md_h2_rules rules; /* rules.why set: reset with PROTOCOL_ERROR, nothing more taken */
    bool too_large;
};

struct h2sc {
    struct md_h2conn h2; /* first: md_h2conn callbacks recover us */
    struct md_list link; /* in worker->h2_conns */
    const struct md_snap_listener *l;
    struct md_list streams;
    size_t n_streams;
    /* The one timer: idle time without streams, the header block open last,
     * and while streams are open a tick (their own timers bound them). */
    ev_timer idle;
    ev_tstamp idle_since;
    struct h2ss *hdr_ss;  /* stream of the header block begun last; NULL once it is gone */
    ev_tstamp hdr_since;  /* when that block began; 0: it is known to be complete */
    bool hdr_trailers;    /* that block is trailers */
    char peer_ip[INET6_ADDRSTRLEN];
    struct md_h2guard guard;
};

static const struct md_stream_side_ops ds_ops;

/* No streams: first the quiesce (md_h2conn_quiesce), then the idle timeout. */
static void idle_start(struct h2sc *c)
{
    double timeout = c->l->http.idle_timeout_ms / 1000.0;
    c->idle_since = ev_now(c->h2.w->loop);
    c->idle.repeat = QUIESCE_S < timeout ? QUIESCE_S : timeout;
    ev_timer_again(c->h2.w->loop, &c->idle);
}

/* Whether the header block begun last may still be open: RFC 9113 §6.10,
 * then nothing but its CONTINUATION can come on the connection. Its HEADERS
 * frame arriving whole ends it (on_frame_recv); a block nghttp2 takes
 * without telling us is judged by its stream while that is there, and once
 * the stream went first (reset by us), by the next block or the timeout. */
static bool hdr_block_open(struct h2sc *c)
{
    const struct h2ss *ss = c->hdr_ss;
    if (!c->hdr_since)
        return false;
    if (!ss || ss->rules.why)
        return true;
    bool done;
    if (c->hdr_trailers)
        done = ss->s && ss->s->req.end;
    else /* a request's stream is let go only once its headers are complete */
        done = !ss->s || ss->s->req.headers_done;
    if (done)
        c->hdr_since = 0;
    return !done;
}

/* A header block begins on |ss|: the timer must fire by its deadline. */
static void hdr_block_begin(struct h2sc *c, struct h2ss *ss, bool trailers)
{
    struct ev_loop *loop = c->h2.w->loop;
    double timeout = c->l->http.request_headers_timeout_ms / 1000.0;
    c->hdr_ss = ss;
    c->hdr_trailers = trailers;
    c->hdr_since = ev_now(loop);
    if (!ev_is_active(&c->idle) || ev_timer_remaining(loop, &c->idle) > timeout) {
        c->idle.repeat = timeout;
        ev_timer_again(loop, &c->idle);
    }
}

/* The request gauge and, for a stream the client left unfinished, the
 * downstream reset count: once per stream, however it ends. */
static void ss_count_end(struct h2sc *c, const struct h2ss *ss, uint32_t error_code)
{
    struct md_stats *st = c->h2.w->stats;
    md_stats_add(md_stats_l(st, c->l->idx, MD_LSTAT_RQ_ACTIVE), -1);
    if (error_code != NGHTTP2_NO_ERROR && ss->s && ss->s->req.headers_done && !ss->rules.why)
        md_stats_add(md_stats_l(st, c->l->idx, MD_LSTAT_RQ_DS_RESET), 1);
}

static void ss_free(struct h2ss *ss)
{
    struct h2sc *c = ss->c;
    if (ss->unconsumed && c->h2.sess) /* the stream is gone: return its share of the window */
        nghttp2_session_consume_connection(c->h2.sess, ss->unconsumed);
    md_list_remove(&ss->link);
    if (--c->n_streams == 0)
        idle_start(c);
    free(ss);
}

/* The stream ended for the downstream: tell the router, let go of it. */
static void ss_close(struct h2ss *ss, uint32_t error_code)
{
    struct md_stream *s = ss->s;
    struct h2sc *c = ss->c;
    if (c->hdr_ss == ss) {
        hdr_block_open(c); /* decided while the stream can still tell */
        c->hdr_ss = NULL;
    }
    if (s) {
        ss->s = NULL;
        md_router_on_downstream_closed(s, error_code);
        md_stream_detach_ds(s);
    }
    ss_free(ss);
}

static void conn_free(struct md_h2conn *h2)
{
    struct h2sc *c = (struct h2sc *)h2;
    struct md_worker *w = c->h2.w;
    /* Streams nghttp2 never closed (the connection went first) end here. */
    while (!md_list_empty(&c->streams)) {
        struct h2ss *ss = MD_CONTAINER_OF(c->streams.next, struct h2ss, link);
        ss_count_end(c, ss, NGHTTP2_CANCEL);
        ss_close(ss, NGHTTP2_CANCEL);
    }
    MD_LOG(MD_LOG_DEBUG, "h2_downstream_closed", "listener=%s peer=%s reason=%s", c->l->name,
           c->peer_ip, c->h2.close_reason ? c->h2.close_reason : "-");
    ev_timer_stop(w->loop, &c->idle);
    md_h2conn_fini(&c->h2);
    md_list_remove(&c->link);
    md_stats_add(md_stats_l(w->stats, c->l->idx, MD_LSTAT_CX_ACTIVE), -1);
    __atomic_sub_fetch(&w->active, 1, __ATOMIC_RELAXED);
    free(c);
}

static struct h2ss *stream_of(nghttp2_session *sess, int32_t id)
{
    return nghttp2_session_get_stream_user_data(sess, id);
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct h2sc *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        struct h2ss *ss = stream_of(sess, frame->hd.stream_id);
        if (ss) {
            ss->header_bytes = 0; /* trailers: a new block */
            hdr_block_begin(c, ss, true);
        }
        return 0;
    }
    struct h2ss *ss = calloc(1, sizeof(*ss));
    struct md_stream *s = ss ? md_stream_new(c->h2.w, c->l, ss, &ds_ops) : NULL;
    if (!s) {
        free(ss);
        nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    ss->c = c;
    ss->id = frame->hd.stream_id;
    ss->s = s;
    md_h2_rules_request_init(&ss->rules);
    s->peer_ip = c->peer_ip;
    s->peer_id = c->h2.sock.peer_id;
    s->local_id = c->h2.sock.local_id;
    s->sni = c->h2.sock.sni;
    md_list_insert_tail(&c->streams, &ss->link);
    c->n_streams++;
    hdr_block_begin(c, ss, false);
    nghttp2_session_set_stream_user_data(sess, ss->id, ss);
    struct md_stats *st = c->h2.w->stats;
    md_stats_add(md_stats_l(st, c->l->idx, MD_LSTAT_RQ_TOTAL), 1);
    md_stats_add(md_stats_l(st, c->l->idx, MD_LSTAT_RQ_ACTIVE), 1);
    return 0;
}

/* RFC 9113 §8.1.1: a malformed request is a stream error; the connection
 * goes on. */
static int refuse_malformed(struct h2sc *c, struct h2ss *ss)
{
    MD_LOG(MD_LOG_INFO, "h2_malformed_request", "listener=%s peer=%s stream=%d reason=\"%s\"",
           c->l->name, c->peer_ip, ss->id, ss->rules.why);
    md_stats_add(md_stats_l(c->h2.w->stats, c->l->idx, MD_LSTAT_RQ_BAD_REQUEST), 1);
    nghttp2_submit_rst_stream(c->h2.sess, NGHTTP2_FLAG_NONE, ss->id, NGHTTP2_PROTOCOL_ERROR);
    return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct h2sc *c = user;
    struct h2ss *ss = stream_of(sess, frame->hd.stream_id);
    if (!ss || !ss->s || ss->rules.why)
        return 0;
    /* Known even when the block is refused: a gRPC client must get its error
     * as a gRPC status. */
    if (namelen == 12 && memcmp(name, "content-type", 12) == 0 && !ss->s->req.headers_done)
        ss->s->grpc = md_grpc_is_content_type((const char *)value, valuelen);
    if (ss->too_large)
        return 0;
    /* RFC 9113 §6.5.2: the list size counts 32 bytes of overhead per field. */
    ss->header_bytes += namelen + valuelen + 32;
    if (ss->header_bytes > c->l->http.h2.max_header_list_size) {
        ss->too_large = true; /* answered once the block is complete */
        return 0;
    }
    switch (
        md_h2_rules_field(&ss->rules, name, namelen, value, valuelen, ss->s->req.headers_done)) {
    case MD_H2_FIELD_MALFORMED: return refuse_malformed(c, ss);
    case MD_H2_FIELD_DROP: return 0;
    case MD_H2_FIELD_TAKE: break;
    }
    if (md_stream_add_header(ss->s, &ss->s->req, (const char *)name, namelen, (const char *)value,
                             valuelen) < 0)
        ss->too_large = true;
    return 0;
}

/* RFC 8441 §4: an extended CONNECT names its protocol in :protocol (nghttp2
 * has checked it comes with CONNECT and the setting we sent). */
static void take_upgrade(struct md_stream *s)
{
    const struct md_hdr *p = md_hdrs_find(s->req.hdrs, s->req.n_hdrs, ":protocol");
    if (!p || p->value_len == 0)
        return;
    char *t = md_arena_strndup(&s->arena, p->value, p->value_len);
    if (!t)
        return; /* then it is a CONNECT the router refuses */
    for (char *q = t; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q + 32);
    s->upgrade = t;
    s->upgrade_len = p->value_len;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct h2sc *c = user;
    if (frame->hd.type == NGHTTP2_HEADERS)
        c->hdr_since = 0; /* blocks never interleave (RFC 9113 §6.10): the last one is whole */
    struct h2ss *ss = frame->hd.stream_id ? stream_of(sess, frame->hd.stream_id) : NULL;
    if (!ss || !ss->s || ss->rules.why)
        return 0;
    struct md_stream *s = ss->s;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM, informational;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (ss->too_large) {
            md_stats_add(md_stats_l(c->h2.w->stats, c->l->idx, MD_LSTAT_RQ_TOO_LARGE), 1);
            s->req.headers_done = true;
            md_router_local_reply(s, MD_REPLY_HEADERS_TOO_LARGE, "request headers too large");
            return 0;
        }
        if (!md_h2_rules_block(&ss->rules, s->req.headers_done, end, &informational))
            return refuse_malformed(c, ss);
        if (!s->req.headers_done) {
            s->req.headers_done = true;
            s->req.headers_end = s->req.end = end;
            take_upgrade(s);
            md_router_on_request(s);
        } else {
            md_stream_end(s, &s->req); /* trailers end the request */
        }
    } else if (frame->hd.type == NGHTTP2_DATA && end) {
        if (!md_h2_rules_data_end(&ss->rules))
            return refuse_malformed(c, ss);
        md_stream_end(s, &s->req);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *user)
{
    struct h2ss *ss = stream_of(sess, id);
    if (!ss || !ss->s || ss->rules.why) {
        nghttp2_session_consume(sess, id, len); /* nobody wants it: keep the window open */
        return 0;
    }
    if (!md_h2_rules_data(&ss->rules, len)) {
        nghttp2_session_consume(sess, id, len);
        return refuse_malformed(user, ss);
    }
    ss->unconsumed += len;
    if (md_stream_body(ss->s, &ss->s->req, data, len) < 0) {
        ss->unconsumed -= len;
        nghttp2_session_consume(sess, id, len);
        md_router_local_reply(ss->s, MD_REPLY_UNAVAILABLE, "out of memory");
    }
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t error_code, void *user)
{
    struct h2sc *c = user;
    struct h2ss *ss = stream_of(sess, id);
    if (!ss)
        return 0;
    ss_count_end(c, ss, error_code);
    nghttp2_session_set_stream_user_data(sess, id, NULL);
    ss_close(ss, error_code);
    return 0;
}

static int on_frame_send(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct h2sc *c = user;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        md_h2guard_local_reset(&c->guard, frame->hd.stream_id);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        md_h2conn_count_proto_error(&c->h2);
        MD_LOG(MD_LOG_WARN, "h2_goaway_sent", "listener=%s peer=%s error=%s", c->l->name,
               c->peer_ip, nghttp2_http2_strerror(frame->goaway.error_code));
    }
    return 0;
}

/* Response body (h2_conn.h); the upstream's reset follows its last bytes. */
static ssize_t read_resp(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *src, void *user)
{
    struct md_stream *s = ((struct h2ss *)src->ptr)->s;
    return md_h2conn_read_body(sess, id, s, s ? &s->resp : NULL, length, data_flags,
                               s ? s->reset_after_body : 0);
}

/* RFC 8441 §5: the upstream's 101 is a 200 to the extended CONNECT, and the
 * WebSocket handshake fields stay on the HTTP/1.1 side. */
static int send_data(nghttp2_session *sess, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *src, void *user)
{
    struct h2ss *ss = src->ptr;
    return md_h2conn_send_data(user, frame, framehd, length, ss->s, ss->s ? &ss->s->resp : NULL);
}

static void tunnel_response(struct md_stream *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->resp.n_hdrs; i++) {
        struct md_hdr h = s->resp.hdrs[i];
        if (md_hdr_is(&h, "sec-websocket-accept"))
            continue;
        if (md_hdr_is(&h, ":status"))
            h.value = "200";
        s->resp.hdrs[n++] = h;
    }
    s->resp.n_hdrs = n;
}

static void ds_headers_ready(void *side)
{
    struct h2ss *ss = side;
    struct md_stream *s = ss->s;
    struct h2sc *c = ss->c;
    if (s->upgraded)
        tunnel_response(s);
    nghttp2_nv *nv = md_h2_nv(&s->arena, s->resp.hdrs, s->resp.n_hdrs);
    nghttp2_data_provider prd = {.source.ptr = ss, .read_callback = read_resp};
    int rc = nv ? nghttp2_submit_response(c->h2.sess, ss->id, nv, s->resp.n_hdrs,
                                          s->resp.headers_end ? NULL : &prd)
                : NGHTTP2_ERR_NOMEM;
    if (rc != 0)
        nghttp2_submit_rst_stream(c->h2.sess, NGHTTP2_FLAG_NONE, ss->id, NGHTTP2_INTERNAL_ERROR);
    md_h2conn_want_flush(&c->h2);
}

static void ds_data_ready(void *side)
{
    struct h2ss *ss = side;
    nghttp2_session_resume_data(ss->c->h2.sess, ss->id);
    md_h2conn_want_flush(&ss->c->h2);
}

static void ds_consumed(void *side, size_t n)
{
    struct h2ss *ss = side;
    ss->unconsumed -= n;
    nghttp2_session_consume(ss->c->h2.sess, ss->id, n);
    md_h2conn_want_flush(&ss->c->h2);
}

static void ds_reset(void *side, uint32_t h2_error)
{
    struct h2ss *ss = side;
    ss->s = NULL; /* the stream object goes on without us */
    nghttp2_submit_rst_stream(ss->c->h2.sess, NGHTTP2_FLAG_NONE, ss->id, h2_error);
    md_h2conn_want_flush(&ss->c->h2);
}

static const struct md_stream_side_ops ds_ops = {
    .headers_ready = ds_headers_ready,
    .data_ready = ds_data_ready,
    .consumed = ds_consumed,
    .reset = ds_reset,
};

/* A header block stayed open past request_headers_timeout_ms: the
 * connection can do nothing else (RFC 9113 §6.10), so it goes. */
static void hdr_timeout(struct h2sc *c)
{
    md_stats_add(md_stats_l(c->h2.w->stats, c->l->idx, MD_LSTAT_RQ_HEADER_TIMEOUT), 1);
    MD_LOG(MD_LOG_INFO, "h2_request_headers_timeout", "listener=%s peer=%s stream=%d",
           c->l->name, c->peer_ip, c->hdr_ss ? c->hdr_ss->id : -1);
    c->hdr_since = 0;
    nghttp2_session_terminate_session(c->h2.sess, NGHTTP2_NO_ERROR);
    md_h2conn_close(&c->h2, "request_headers_timeout", false);
}

static void on_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct h2sc *c = MD_CONTAINER_OF(t, struct h2sc, idle);
    double hdr_timeout_s = c->l->http.request_headers_timeout_ms / 1000.0;
    if (hdr_block_open(c)) {
        double left = c->hdr_since + hdr_timeout_s - ev_now(loop);
        if (left <= 0.001) {
            hdr_timeout(c);
            return;
        }
        t->repeat = left;
        ev_timer_again(loop, t);
        return;
    }
    if (c->n_streams) {
        t->repeat = hdr_timeout_s; /* a tick: the streams' own timers bound them */
        ev_timer_again(loop, t);
        return;
    }
    double left = c->l->http.idle_timeout_ms / 1000.0 - (ev_now(loop) - c->idle_since);
    if (left > 0.001) {
        md_h2conn_quiesce(&c->h2);
        t->repeat = left;
        ev_timer_again(loop, t);
        return;
    }
    nghttp2_session_terminate_session(c->h2.sess, NGHTTP2_NO_ERROR);
    md_h2conn_close(&c->h2, "idle_timeout", false);
}

static nghttp2_session_callbacks *server_callbacks(void)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    md_h2conn_set_send_callback(cb);
    return cb;
}

void md_h2_server_start(struct md_worker *w, const struct md_snap_listener *l, struct md_sock sock)
{
    int fd = sock.fd;
    struct md_stats *st = w->stats;
    struct h2sc *c = calloc(1, sizeof(*c));
    nghttp2_mem mem = c ? md_h2_mem(&c->h2, w) : (nghttp2_mem){0};
    nghttp2_session_callbacks *cb = c ? server_callbacks() : NULL;
    nghttp2_option *opt = cb ? md_h2_options() : NULL;
    if (opt)
        nghttp2_option_set_no_http_messaging(opt, 1); /* codec/h2_rules.h instead */
    if (!opt || nghttp2_session_server_new3(&c->h2.sess, cb, c, opt, &mem) != 0) {
        MD_LOG(MD_LOG_ERROR, "out_of_memory", "listener=%s what=h2_session", l->name);
        nghttp2_option_del(opt);
        nghttp2_session_callbacks_del(cb);
        free(c);
        md_sock_close(&sock, false);
        return;
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    c->l = l;
    md_list_init(&c->streams);
    md_list_insert_tail(&w->h2_conns, &c->link);
    __atomic_add_fetch(&w->active, 1, __ATOMIC_RELAXED);
    md_stats_add(md_stats_l(st, l->idx, MD_LSTAT_CX_TOTAL), 1);
    md_stats_add(md_stats_l(st, l->idx, MD_LSTAT_CX_ACTIVE), 1);
    c->h2.rx_stat = md_stats_l(st, l->idx, MD_LSTAT_RX_BYTES);
    c->h2.tx_stat = md_stats_l(st, l->idx, MD_LSTAT_TX_BYTES);
    c->h2.proto_err_stat = md_stats_l(st, l->idx, MD_LSTAT_H2_GOAWAY_ERROR);
    md_h2guard_init(&c->guard);
    c->h2.guard = &c->guard;

    md_addr_peer_ip(fd, c->peer_ip, sizeof(c->peer_ip));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    const struct md_snap_h2_opts *o = &l->http.h2;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->initial_stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, o->max_header_list_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441: WebSocket over HTTP/2 */
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},   /* RFC 9218: no priority tree to keep */
    };
    nghttp2_submit_settings(c->h2.sess, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->h2.sess, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)o->initial_connection_window);
    ev_init(&c->idle, on_idle);
    idle_start(c);
    md_h2conn_init(&c->h2, w, sock, conn_free);
    c->h2.linger = true;
    md_h2conn_want_flush(&c->h2);
}

void md_h2_server_drain_all(struct md_worker *w)
{
    for (struct md_list *it = w->h2_conns.next; it != &w->h2_conns; it = it->next) {
        struct h2sc *c = MD_CONTAINER_OF(it, struct h2sc, link);
        /* Streams up to the last one seen finish; the session ends when they have. */
        nghttp2_submit_goaway(c->h2.sess, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->h2.sess), NGHTTP2_NO_ERROR,
                              NULL, 0);
        md_h2conn_want_flush(&c->h2);
    }
}

void md_h2_server_close_all(struct md_worker *w)
{
    while (!md_list_empty(&w->h2_conns))
        conn_free(&MD_CONTAINER_OF(w->h2_conns.next, struct h2sc, link)->h2);
}
