/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h2_client.h"

#include "codec/h2_conn.h"
#include "codec/h2_rules.h"
#include "core/err.h"
#include "core/log.h"
#include "router/router.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct h2cs { /* one upstream stream: the codec's half of an md_stream */
    struct md_list link;
    struct md_h2_client *cl;
    int32_t id;
    struct md_stream *s; /* NULL once detached */
    size_t unconsumed;
    struct md_h2_rules rules; /* rules.why set: reset with PROTOCOL_ERROR, nothing more taken */
};

struct md_h2_client {
    struct md_h2conn h2; /* first */
    struct md_h2_client_cfg cfg;
    md_h2_client_closed_cb *closed;
    void *owner;
    struct md_list streams;
    size_t n_streams;
    bool goaway;
    bool settings_seen; /* the peer's stream limit is known */
    bool ping_outstanding;
    ev_tstamp last_active; /* a stream started or ended */
    ev_tstamp last_ping;
    ev_timer tick; /* keepalive PING and idle close */
};

static const struct md_stream_side_ops us_ops;

static void cs_end(struct h2cs *cs, enum md_us_close why, uint32_t code)
{
    struct md_h2_client *cl = cs->cl;
    if (cs->unconsumed && cl->h2.sess)
        nghttp2_session_consume_connection(cl->h2.sess, cs->unconsumed);
    md_list_remove(&cs->link);
    cl->n_streams--;
    md_stats_add(cl->cfg.rq_active_stat, -1);
    if (cl->cfg.rq_slots)
        __atomic_sub_fetch(cl->cfg.rq_slots, 1, __ATOMIC_RELAXED);
    cl->last_active = ev_now(cl->h2.w->loop);
    struct md_stream *s = cs->s;
    free(cs);
    if (s)
        md_router_on_upstream_closed(s, why, code);
}

static void teardown(struct md_h2_client *cl)
{
    while (!md_list_empty(&cl->streams))
        cs_end(MD_CONTAINER_OF(cl->streams.next, struct h2cs, link), MD_US_CLOSE_CONN_LOST,
               NGHTTP2_CANCEL);
    ev_timer_stop(cl->h2.w->loop, &cl->tick);
    MD_LOG(MD_LOG_DEBUG, "h2_upstream_closed", "upstream=%s reason=%s", cl->cfg.label,
           cl->h2.close_reason ? cl->h2.close_reason : "-");
    md_h2conn_fini(&cl->h2);
}

static void on_conn_free(struct md_h2conn *h2)
{
    struct md_h2_client *cl = (struct md_h2_client *)h2;
    teardown(cl);
    cl->closed(cl->owner, cl);
    free(cl);
}

void md_h2_client_free(struct md_h2_client *cl)
{
    teardown(cl);
    free(cl);
}

static struct h2cs *stream_of(nghttp2_session *sess, int32_t id)
{
    return nghttp2_session_get_stream_user_data(sess, id);
}

/* A response that breaks RFC 9113 §8 is a stream error: the router sees an
 * upstream reset. */
static int refuse_malformed(struct md_h2_client *cl, struct h2cs *cs)
{
    MD_LOG(MD_LOG_WARN, "h2_upstream_malformed", "upstream=%s stream=%d reason=\"%s\"",
           cl->cfg.label, cs->id, cs->rules.why);
    nghttp2_submit_rst_stream(cl->h2.sess, NGHTTP2_FLAG_NONE, cs->id, NGHTTP2_PROTOCOL_ERROR);
    return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct h2cs *cs = stream_of(sess, frame->hd.stream_id);
    if (!cs || !cs->s || cs->rules.why)
        return 0;
    struct md_stream *s = cs->s;
    bool trailer = s->resp.headers_done;
    switch (md_h2_rules_field(&cs->rules, name, namelen, value, valuelen, trailer)) {
    case MD_H2_FIELD_MALFORMED: return refuse_malformed(user, cs);
    case MD_H2_FIELD_DROP: return 0;
    case MD_H2_FIELD_TAKE: break;
    }
    if (!trailer && cs->rules.status < 200)
        return 0; /* 1xx: informational, not forwarded (:status comes first) */
    if (md_stream_add_header(s, &s->resp, (const char *)name, namelen, (const char *)value,
                             valuelen) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    return 0;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct md_h2_client *cl = user;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        cl->goaway = true;
        return 0;
    }
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
        !cl->settings_seen) {
        cl->settings_seen = true;
        if (cl->cfg.ready)
            cl->cfg.ready(cl->owner, cl);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        cl->ping_outstanding = false;
        return 0;
    }
    struct h2cs *cs = frame->hd.stream_id ? stream_of(sess, frame->hd.stream_id) : NULL;
    if (!cs || !cs->s || cs->rules.why)
        return 0;
    struct md_stream *s = cs->s;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM, informational;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (!md_h2_rules_block(&cs->rules, s->resp.headers_done, end, &informational))
            return refuse_malformed(cl, cs);
        if (informational)
            return 0;
        if (!s->resp.headers_done) {
            s->resp.headers_done = true;
            s->resp.headers_end = s->resp.end = end;
            md_router_on_response(s);
        } else {
            md_stream_end(s, &s->resp);
        }
    } else if (frame->hd.type == NGHTTP2_DATA && end) {
        if (!md_h2_rules_data_end(&cs->rules))
            return refuse_malformed(cl, cs);
        md_stream_end(s, &s->resp);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *user)
{
    struct h2cs *cs = stream_of(sess, id);
    if (!cs || !cs->s || cs->rules.why) {
        nghttp2_session_consume(sess, id, len);
        return 0;
    }
    if (!md_h2_rules_data(&cs->rules, len)) {
        nghttp2_session_consume(sess, id, len);
        return refuse_malformed(user, cs);
    }
    cs->unconsumed += len;
    if (md_stream_body(cs->s, &cs->s->resp, data, len) < 0) {
        cs->unconsumed -= len;
        nghttp2_session_consume(sess, id, len);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t code, void *user)
{
    struct h2cs *cs = stream_of(sess, id);
    if (!cs)
        return 0;
    nghttp2_session_set_stream_user_data(sess, id, NULL);
    enum md_us_close why = MD_US_CLOSE_DONE;
    if (cs->rules.why) /* it may close before our RST_STREAM goes (both sides had ended) */
        code = NGHTTP2_PROTOCOL_ERROR;
    if (code == NGHTTP2_REFUSED_STREAM)
        why = MD_US_CLOSE_REFUSED;
    else if (code != NGHTTP2_NO_ERROR || (cs->s && !cs->s->resp.end))
        why = MD_US_CLOSE_RESET;
    cs_end(cs, why, code);
    return 0;
}

/* Request body (h2_conn.h). */
static ssize_t read_req(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t length,
                        uint32_t *data_flags, nghttp2_data_source *src, void *user)
{
    struct md_stream *s = ((struct h2cs *)src->ptr)->s;
    return md_h2conn_read_body(sess, id, s, s ? &s->req : NULL, length, data_flags, 0);
}

static int send_data(nghttp2_session *sess, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *src, void *user)
{
    struct h2cs *cs = src->ptr;
    return md_h2conn_send_data(user, frame, framehd, length, cs->s, cs->s ? &cs->s->req : NULL);
}

static void us_headers_ready(void *side) {}

static void us_data_ready(void *side)
{
    struct h2cs *cs = side;
    if (cs->id > 0)
        nghttp2_session_resume_data(cs->cl->h2.sess, cs->id);
    md_h2conn_want_flush(&cs->cl->h2);
}

static void us_consumed(void *side, size_t n)
{
    struct h2cs *cs = side;
    cs->unconsumed -= n;
    nghttp2_session_consume(cs->cl->h2.sess, cs->id, n);
    md_h2conn_want_flush(&cs->cl->h2);
}

static void us_reset(void *side, uint32_t h2_error)
{
    struct h2cs *cs = side;
    cs->s = NULL;
    nghttp2_submit_rst_stream(cs->cl->h2.sess, NGHTTP2_FLAG_NONE, cs->id, h2_error);
    md_h2conn_want_flush(&cs->cl->h2);
}

static const struct md_stream_side_ops us_ops = {
    .headers_ready = us_headers_ready,
    .data_ready = us_data_ready,
    .consumed = us_consumed,
    .reset = us_reset,
};

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_h2_client *cl = MD_CONTAINER_OF(t, struct md_h2_client, tick);
    if (cl->h2.closing)
        return;
    ev_tstamp now = ev_now(loop);
    if (cl->n_streams == 0 && now - cl->last_active >= cl->cfg.idle_timeout_ms / 1000.0 - 0.001) {
        nghttp2_session_terminate_session(cl->h2.sess, NGHTTP2_NO_ERROR);
        md_h2conn_close(&cl->h2, "idle_timeout", false);
        return;
    }
    if (now - cl->last_ping < cl->cfg.keepalive_interval_ms / 1000.0 - 0.001)
        return;
    if (cl->ping_outstanding) {
        MD_LOG(MD_LOG_WARN, "h2_upstream_keepalive_timeout", "upstream=%s", cl->cfg.label);
        md_h2conn_close(&cl->h2, "keepalive_timeout", true);
        return;
    }
    nghttp2_submit_ping(cl->h2.sess, NGHTTP2_FLAG_NONE, NULL);
    cl->ping_outstanding = true;
    cl->last_ping = now;
    md_h2conn_want_flush(&cl->h2);
}

struct md_h2_client *md_h2_client_new(struct md_worker *w, struct md_sock sock,
                                      const struct md_h2_client_cfg *cfg,
                                      md_h2_client_closed_cb *closed, void *owner)
{
    struct md_h2_client *cl = calloc(1, sizeof(*cl));
    nghttp2_mem mem = cl ? md_h2_mem(&cl->h2, w) : (nghttp2_mem){0};
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = cl ? md_h2_options() : NULL;
    if (opt && nghttp2_session_callbacks_new(&cb) == 0) {
        nghttp2_option_set_no_http_messaging(opt, 1); /* codec/h2_rules.h instead */
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
        md_h2conn_set_send_callback(cb);
    }
    if (!cb || nghttp2_session_client_new3(&cl->h2.sess, cb, cl, opt, &mem) != 0) {
        nghttp2_session_callbacks_del(cb);
        nghttp2_option_del(opt);
        free(cl);
        md_sock_close(&sock, false);
        return NULL;
    }
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    cl->cfg = *cfg;
    cl->closed = closed;
    cl->owner = owner;
    md_list_init(&cl->streams);
    cl->h2.rx_stat = cfg->rx_stat;
    cl->h2.tx_stat = cfg->tx_stat;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->h2->initial_stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->h2->max_header_list_size},
    };
    nghttp2_submit_settings(cl->h2.sess, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(cl->h2.sess, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)cfg->h2->initial_connection_window);
    cl->last_active = cl->last_ping = ev_now(w->loop);
    ev_init(&cl->tick, on_tick);
    /* One timer serves both: it ticks at the shorter of the two periods. */
    uint32_t tick_ms = cfg->keepalive_interval_ms < cfg->idle_timeout_ms
                           ? cfg->keepalive_interval_ms
                           : cfg->idle_timeout_ms;
    cl->tick.repeat = tick_ms / 1000.0;
    ev_timer_again(w->loop, &cl->tick);
    md_h2conn_init(&cl->h2, w, sock, on_conn_free);
    md_h2conn_want_flush(&cl->h2);
    return cl;
}

size_t md_h2_client_load(const struct md_h2_client *cl)
{
    return cl->n_streams;
}

bool md_h2_client_ready(const struct md_h2_client *cl)
{
    return cl->settings_seen;
}

bool md_h2_client_usable(const struct md_h2_client *cl)
{
    return !cl->goaway && !cl->h2.closing && cl->h2.sock.fd >= 0 &&
           nghttp2_session_get_next_stream_id(cl->h2.sess) < (1u << 30);
}

size_t md_h2_client_capacity(const struct md_h2_client *cl)
{
    if (!md_h2_client_usable(cl))
        return 0;
    uint32_t peer =
        nghttp2_session_get_remote_settings(cl->h2.sess, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    uint32_t cap =
        cl->cfg.h2->max_concurrent_streams < peer ? cl->cfg.h2->max_concurrent_streams : peer;
    return cap > cl->n_streams ? cap - cl->n_streams : 0;
}

int md_h2_client_submit(struct md_h2_client *cl, struct md_stream *s)
{
    struct h2cs *cs = calloc(1, sizeof(*cs));
    nghttp2_nv *nv = cs ? md_h2_nv(&s->arena, s->us_hdrs, s->n_us_hdrs) : NULL;
    if (!nv) {
        free(cs);
        return MD_ENOMEM;
    }
    cs->cl = cl;
    cs->s = s;
    const struct md_hdr *m = md_hdrs_find(s->us_hdrs, s->n_us_hdrs, ":method");
    md_h2_rules_response_init(&cs->rules, m ? m->value : NULL, m ? m->value_len : 0);
    nghttp2_data_provider prd = {.source.ptr = cs, .read_callback = read_req};
    int32_t id = nghttp2_submit_request(cl->h2.sess, NULL, nv, s->n_us_hdrs,
                                        s->req.headers_end ? NULL : &prd, cs);
    if (id < 0) {
        free(cs);
        return id == NGHTTP2_ERR_NOMEM ? MD_ENOMEM : MD_EPROTO;
    }
    cs->id = id;
    md_list_insert_tail(&cl->streams, &cs->link);
    cl->n_streams++;
    cl->last_active = ev_now(cl->h2.w->loop);
    md_stats_add(cl->cfg.rq_active_stat, 1);
    s->us = cs;
    s->us_ops = &us_ops;
    md_h2conn_want_flush(&cl->h2);
    return 0;
}
