/* SPDX-License-Identifier: Apache-2.0 */
/* grpc.health.v1.Health/Check over h2c for the admin port: requests and
 * replies are a few bytes, so the protobuf is read and written by hand. */
#include "admin/admin_grpc.h"

#include "codec/grpc.h"
#include "codec/h2_conn.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STREAMS 8
#define MAX_BODY 4096 /* gRPC frame header included; service names are short */
#define MAX_PATH 64   /* longer paths are no method of ours */
#define WINDOW 16384

#define CHECK_PATH "/grpc.health.v1.Health/Check"

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

/* grpc-status codes (grpc/doc/statuscodes.md) */
enum {
    GRPC_OK = 0,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_NOT_FOUND = 5,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_UNIMPLEMENTED = 12,
};

struct md_admin_grpc {
    nghttp2_session *sess; /* owned */
    md_admin_health_fn *health;
    void *ctx;
    struct md_list streams; /* struct gstream; nghttp2_session_del closes none */
    int n_streams;
};

struct gstream {
    struct md_list link;
    struct md_admin_grpc *g;
    int32_t id;
    bool post, answered, too_big;
    size_t path_len; /* MAX_PATH + 1: too long */
    char path[MAX_PATH];
    uint8_t reply[7]; /* one length-prefixed HealthCheckResponse */
    size_t reply_len;
    size_t body_len;
    uint8_t body[MAX_BODY];
};

static void gstream_free(struct gstream *s)
{
    md_list_remove(&s->link);
    s->g->n_streams--;
    free(s);
}

/* HealthCheckRequest{string service = 1}: |svc| the service, "" when absent.
 * Returns 0 or MD_EPROTO. */
static int parse_request(const uint8_t *b, size_t n, const uint8_t **svc, size_t *svc_len)
{
    *svc = b;
    *svc_len = 0;
    return md_grpc_field1(b, n, 2, NULL, svc, svc_len) < 0 ? MD_EPROTO : 0;
}

static void log_answer(const struct gstream *s, int grpc_status, const uint8_t *svc, size_t svc_len)
{
    char path[MAX_PATH * 4 + 8], service[64 * 4 + 8];
    size_t path_len = s->path_len <= MAX_PATH ? s->path_len : MAX_PATH;
    MD_LOG(MD_LOG_DEBUG, "admin_grpc_request", "path=\"%s\" service=\"%s\" grpc_status=%d",
           md_log_escape(path, sizeof(path), s->path, path_len),
           md_log_escape(service, sizeof(service), (const char *)svc, svc ? svc_len : 0),
           grpc_status);
}

/* |svc|: the service asked for, for the log (NULL: none). */
static void answer_trailers_only(struct gstream *s, int code, const char *msg, const uint8_t *svc,
                                 size_t svc_len)
{
    char status[4];
    snprintf(status, sizeof(status), "%d", code);
    nghttp2_nv nv[] = {
        NV(":status", "200"), NV("content-type", "application/grpc"), NV("grpc-status", status),
        NV("grpc-message", msg), /* ASCII without '%': no percent-encoding needed */
    };
    if (nghttp2_submit_response(s->g->sess, s->id, nv, sizeof(nv) / sizeof(nv[0]), NULL) != 0)
        nghttp2_submit_rst_stream(s->g->sess, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    s->answered = true;
    log_answer(s, code, svc, svc_len);
}

/* The message, then the trailers (RFC 9113 §8.1: trailers end the stream). */
static ssize_t read_reply(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *src, void *user)
{
    struct gstream *s = src->ptr;
    size_t n = s->reply_len < length ? s->reply_len : length;
    memcpy(buf, s->reply, n);
    memmove(s->reply, s->reply + n, s->reply_len - n);
    s->reply_len -= n;
    if (s->reply_len == 0) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_nv tr[] = {NV("grpc-status", "0")};
        if (nghttp2_submit_trailer(sess, id, tr, 1) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

static void answer_check(struct gstream *s)
{
    const uint8_t *svc;
    size_t svc_len;
    if (parse_request(s->body, s->body_len, &svc, &svc_len) < 0) {
        answer_trailers_only(s, GRPC_INVALID_ARGUMENT, "malformed HealthCheckRequest", NULL, 0);
        return;
    }
    enum md_admin_health h = s->g->health(s->g->ctx, (const char *)svc, svc_len);
    if (h == MD_ADMIN_HEALTH_UNKNOWN) {
        answer_trailers_only(s, GRPC_NOT_FOUND, "unknown service", svc, svc_len);
        return;
    }
    /* HealthCheckResponse{status = 1 (varint)}: tag 0x08, then 1 or 2 */
    static const uint8_t head[] = {0, 0, 0, 0, 2, 0x08};
    memcpy(s->reply, head, sizeof(head));
    s->reply[sizeof(head)] = (uint8_t)h;
    s->reply_len = sizeof(head) + 1;
    nghttp2_nv nv[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_reply};
    if (nghttp2_submit_response(s->g->sess, s->id, nv, 2, &prd) != 0)
        nghttp2_submit_rst_stream(s->g->sess, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    s->answered = true;
    log_answer(s, GRPC_OK, svc, svc_len);
}

/* The request has ended: answer it. */
static void answer(struct gstream *s)
{
    bool check = s->post && s->path_len == sizeof(CHECK_PATH) - 1 &&
                 memcmp(s->path, CHECK_PATH, s->path_len) == 0;
    if (check)
        answer_check(s);
    else
        answer_trailers_only(s, GRPC_UNIMPLEMENTED, "only grpc.health.v1.Health/Check", NULL, 0);
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    struct md_admin_grpc *g = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    /* nghttp2 refuses streams past our SETTINGS once they are acknowledged;
     * this holds before that too. */
    struct gstream *s = g->n_streams < MAX_STREAMS ? calloc(1, sizeof(*s)) : NULL;
    if (!s) {
        nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    s->g = g;
    s->id = frame->hd.stream_id;
    md_list_insert_tail(&g->streams, &s->link);
    g->n_streams++;
    nghttp2_session_set_stream_user_data(sess, s->id, s);
    return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct gstream *s = nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
    if (!s || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        s->path_len = valuelen <= MAX_PATH ? valuelen : MAX_PATH + 1;
        memcpy(s->path, value, valuelen <= MAX_PATH ? valuelen : 0);
    } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        s->post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *user)
{
    /* Window updates are ours to send (md_h2_options): what is read is done. */
    nghttp2_session_consume(sess, id, len);
    struct gstream *s = nghttp2_session_get_stream_user_data(sess, id);
    if (!s || s->answered)
        return 0; /* answered early: the rest is dropped */
    if (len > MAX_BODY - s->body_len) {
        answer_trailers_only(s, GRPC_RESOURCE_EXHAUSTED, "request over 4 KiB", NULL, 0);
        return 0;
    }
    memcpy(s->body + s->body_len, data, len);
    s->body_len += len;
    return 0;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *user)
{
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct gstream *s = nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
    if (s && !s->answered)
        answer(s);
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t error_code, void *user)
{
    struct gstream *s = nghttp2_session_get_stream_user_data(sess, id);
    if (s) {
        nghttp2_session_set_stream_user_data(sess, id, NULL);
        gstream_free(s);
    }
    return 0;
}

struct md_admin_grpc *md_admin_grpc_new(md_admin_health_fn *health, void *ctx, int *err)
{
    struct md_admin_grpc *g = calloc(1, sizeof(*g));
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = g ? md_h2_options() : NULL;
    if (opt && nghttp2_session_callbacks_new(&cb) == 0) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    }
    if (!cb || nghttp2_session_server_new2(&g->sess, cb, g, opt) != 0) {
        nghttp2_option_del(opt);
        nghttp2_session_callbacks_del(cb);
        free(g);
        *err = MD_ENOMEM;
        return NULL;
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    g->health = health;
    g->ctx = ctx;
    md_list_init(&g->streams);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 8192}, /* as the HTTP/1.1 side */
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(g->sess, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0) {
        md_admin_grpc_free(g);
        *err = MD_ENOMEM;
        return NULL;
    }
    return g;
}

void md_admin_grpc_free(struct md_admin_grpc *g)
{
    if (!g)
        return;
    nghttp2_session_del(g->sess);
    while (!md_list_empty(&g->streams))
        gstream_free(MD_CONTAINER_OF(g->streams.next, struct gstream, link));
    free(g);
}

int md_admin_grpc_recv(struct md_admin_grpc *g, const uint8_t *b, size_t n)
{
    ssize_t used = nghttp2_session_mem_recv(g->sess, b, n);
    if (used >= 0)
        return 0;
    /* For floods and some framing errors nghttp2 queues no GOAWAY itself. */
    uint32_t code = used == NGHTTP2_ERR_FLOODED || used == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                        ? NGHTTP2_ENHANCE_YOUR_CALM
                        : NGHTTP2_PROTOCOL_ERROR;
    nghttp2_session_terminate_session(g->sess, code);
    MD_LOG(MD_LOG_WARN, "admin_h2_protocol_error", "err=\"%s\"", nghttp2_strerror((int)used));
    return MD_EPROTO;
}

ssize_t md_admin_grpc_send(struct md_admin_grpc *g, const uint8_t **data)
{
    ssize_t n = nghttp2_session_mem_send(g->sess, data);
    return n < 0 ? MD_ENOMEM : n; /* NGHTTP2_ERR_NOMEM or a callback failure */
}

bool md_admin_grpc_is_done(const struct md_admin_grpc *g)
{
    return !nghttp2_session_want_read(g->sess) && !nghttp2_session_want_write(g->sess);
}
