/* SPDX-License-Identifier: Apache-2.0 */
#include "admin/admin.h"

#include "core/err.h"
#include "core/list.h"
#include "core/log.h"
#include "net/acceptor.h"
#include "net/detect.h"

#include <errno.h>
#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 64
#define MAX_HEAD 8192
#define MAX_OUT (32u * 1024u * 1024u)
#define IDLE_S 30.0
#define SNIFF 24 /* the HTTP/2 preface; a method token is decided sooner */
#define H2_OUT_HIGH (64u * 1024u)

struct md_admin {
    struct ev_loop *loop;
    struct md_acceptor acc;
    md_admin_handler *handler;
    md_admin_health_fn *health; /* NULL: no h2c */
    void *ctx;
    struct md_list conns;
    int n_conns;
    llhttp_settings_t settings;
};

struct aconn {
    struct md_list link;
    struct md_admin *a;
    int fd;
    ev_io rio, wio;
    ev_timer idle;
    llhttp_t parser;
    char url[MAX_HEAD];
    size_t url_len;
    size_t head_bytes; /* request line + headers of the current request */
    char *out;         /* pending reply bytes */
    size_t out_len, out_off;
    bool close_after;
    bool decided;         /* HTTP/1.1 or HTTP/2, by the first bytes */
    uint8_t sniff[SNIFF]; /* bytes read while undecided */
    size_t sniff_len;
    struct md_admin_grpc *g; /* HTTP/2: owned; NULL for HTTP/1.1 */
};

void md_admin_reply_text(struct md_admin_reply *r, int status, const char *text)
{
    r->status = status;
    r->body = strdup(text);
    r->len = r->body ? strlen(text) : 0;
}

static void conn_free(struct aconn *c)
{
    struct md_admin *a = c->a;
    ev_io_stop(a->loop, &c->rio);
    ev_io_stop(a->loop, &c->wio);
    ev_timer_stop(a->loop, &c->idle);
    close(c->fd);
    md_list_remove(&c->link);
    a->n_conns--;
    free(c->out);
    md_admin_grpc_free(c->g);
    free(c);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

/* Makes room for |add| more bytes of output. Returns 0, MD_ETOOBIG or MD_ENOMEM. */
static int out_reserve(struct aconn *c, size_t add)
{
    size_t need = c->out_len - c->out_off + add;
    if (need > MAX_OUT)
        return MD_ETOOBIG;
    if (c->out_off > 0) { /* drop what was already written */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    char *p = realloc(c->out, need ? need : 1);
    if (!p)
        return MD_ENOMEM;
    c->out = p;
    return 0;
}

/* Appends one whole response to the connection's output. Returns 0 or MD_ENOMEM. */
static int append_reply(struct aconn *c, const struct md_admin_reply *r, bool head_only)
{
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s%s\r\n",
                      r->status, reason(r->status),
                      r->content_type ? r->content_type : "text/plain; charset=utf-8", r->len,
                      r->allow ? "Allow: " : "", r->allow ? r->allow : "", r->allow ? "\r\n" : "",
                      c->close_after ? "Connection: close\r\n" : "");
    size_t body = head_only ? 0 : r->len;
    int rc = out_reserve(c, (size_t)hl + body);
    if (rc < 0)
        return rc;
    memcpy(c->out + c->out_len, head, (size_t)hl);
    if (body)
        memcpy(c->out + c->out_len + hl, r->body, body);
    c->out_len += (size_t)hl + body;
    return 0;
}

/* Moves the HTTP/2 session's frames to the output, up to H2_OUT_HIGH
 * pending: reading stops while output waits (flush), so a peer that does not
 * read cannot make us hold more. Returns the bytes moved or a negative MD_E*. */
static ssize_t pump(struct aconn *c)
{
    size_t moved = 0;
    while (c->out_len - c->out_off < H2_OUT_HIGH) {
        const uint8_t *data;
        ssize_t n = md_admin_grpc_send(c->g, &data);
        if (n <= 0)
            return n < 0 ? n : (ssize_t)moved;
        int rc = out_reserve(c, (size_t)n);
        if (rc < 0)
            return rc;
        memcpy(c->out + c->out_len, data, (size_t)n);
        c->out_len += (size_t)n;
        moved += (size_t)n;
    }
    return (ssize_t)moved;
}

static void reply_error(struct aconn *c, int status, const char *text)
{
    struct md_admin_reply r = {0};
    md_admin_reply_text(&r, status, text);
    c->close_after = true;
    append_reply(c, &r, false);
    free(r.body);
}

static int on_message_begin(llhttp_t *p)
{
    struct aconn *c = p->data;
    c->url_len = 0;
    c->head_bytes = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct aconn *c = p->data;
    if (c->url_len + len >= sizeof(c->url))
        return -1;
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int on_header_bytes(llhttp_t *p, const char *at, size_t len)
{
    struct aconn *c = p->data;
    c->head_bytes += len;
    return c->head_bytes > MAX_HEAD ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct aconn *c = p->data;
    c->url[c->url_len] = '\0';
    char *q = strchr(c->url, '?');
    if (q)
        *q = '\0';
    const char *method = llhttp_method_name(llhttp_get_method(p));
    struct md_admin_reply r = {0};
    c->a->handler(c->a->ctx, strcmp(method, "HEAD") == 0 ? "GET" : method, c->url, &r);
    c->close_after = c->close_after || !llhttp_should_keep_alive(p);
    int rc = append_reply(c, &r, strcmp(method, "HEAD") == 0);
    free(r.body);
    if (rc < 0) {
        c->close_after = true;
        return -1;
    }
    MD_LOG(MD_LOG_DEBUG, "admin_request", "method=%s path=%s status=%d", method, c->url, r.status);
    return c->close_after ? HPE_PAUSED : 0; /* ignore anything after a closing request */
}

/* Writes what is pending; closes when done and asked to. Returns false when
 * the connection was freed. */
static bool flush(struct aconn *c)
{
    ssize_t moved;
    do {
        moved = c->g ? pump(c) : 0;
        if (moved < 0) {
            conn_free(c);
            return false;
        }
        while (c->out_off < c->out_len) {
            ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN) {
                ev_io_start(c->a->loop, &c->wio);
                ev_io_stop(c->a->loop, &c->rio); /* one reply at a time */
                return true;
            }
            if (n < 0) {
                conn_free(c);
                return false;
            }
            c->out_off += (size_t)n;
        }
        c->out_off = c->out_len = 0;
    } while (moved > 0); /* HTTP/2: until the session has nothing more */
    ev_io_stop(c->a->loop, &c->wio);
    if (c->g && md_admin_grpc_is_done(c->g))
        c->close_after = true;
    if (c->close_after) {
        conn_free(c);
        return false;
    }
    ev_io_start(c->a->loop, &c->rio);
    return true;
}

static void on_read(struct ev_loop *loop, ev_io *io, int revents)
{
    struct aconn *c = MD_CONTAINER_OF(io, struct aconn, rio);
    char buf[SNIFF + 4096];
    size_t held = c->sniff_len; /* 0 once decided */
    memcpy(buf, c->sniff, held);
    ssize_t n = recv(c->fd, buf + held, sizeof(buf) - held, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_free(c);
        return;
    }
    ev_timer_again(loop, &c->idle);
    size_t len = held + (size_t)n;
    if (!c->decided) {
        enum md_detect_kind k = md_detect_classify((const uint8_t *)buf, len);
        if (k == MD_DETECT_MORE && len < sizeof(c->sniff)) {
            memcpy(c->sniff, buf, len);
            c->sniff_len = len;
            return;
        }
        c->decided = true;
        c->sniff_len = 0;
        /* Anything but the preface (TLS, garbage) goes on to HTTP/1.1: a 400. */
        if (k == MD_DETECT_H2 && c->a->health) {
            int err;
            if (!(c->g = md_admin_grpc_new(c->a->health, c->a->ctx, &err))) {
                MD_LOG(MD_LOG_WARN, "admin_conn_failed", "err=%s", md_err_str(err));
                conn_free(c);
                return;
            }
        }
    }
    if (c->g) {
        if (md_admin_grpc_recv(c->g, (const uint8_t *)buf, len) < 0)
            c->close_after = true; /* after the GOAWAY */
        flush(c);
        return;
    }
    llhttp_errno_t e = llhttp_execute(&c->parser, buf, len);
    if (e != HPE_OK && e != HPE_PAUSED && !c->close_after) {
        bool too_big = e == HPE_CB_URL_COMPLETE || c->url_len + 1 >= sizeof(c->url) ||
                       c->head_bytes > MAX_HEAD;
        MD_LOG(MD_LOG_WARN, "admin_bad_request", "err=\"%s\"", llhttp_get_error_reason(&c->parser));
        reply_error(c, too_big ? 431 : 400, too_big ? "request too large\n" : "bad request\n");
    }
    flush(c);
}

static void on_write(struct ev_loop *loop, ev_io *io, int revents)
{
    flush(MD_CONTAINER_OF(io, struct aconn, wio));
}

static void on_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    conn_free(MD_CONTAINER_OF(t, struct aconn, idle));
}

static void on_exhausted(struct md_acceptor *acc, int err)
{
    MD_LOG(MD_LOG_WARN, "admin_accept_failed", "err=%s pause_ms=100", md_err_str(err));
}

static void on_conn(struct md_acceptor *acc, int fd)
{
    struct md_admin *a = MD_CONTAINER_OF(acc, struct md_admin, acc);
    struct aconn *c = a->n_conns < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        MD_LOG(MD_LOG_WARN, "admin_conn_refused", "open=%d max=%d", a->n_conns, MAX_CONNS);
        close(fd);
        return;
    }
    c->a = a;
    c->fd = fd;
    llhttp_init(&c->parser, HTTP_REQUEST, &a->settings);
    c->parser.data = c;
    ev_io_init(&c->rio, on_read, fd, EV_READ);
    ev_io_init(&c->wio, on_write, fd, EV_WRITE);
    ev_timer_init(&c->idle, on_idle, 0., IDLE_S);
    ev_timer_again(a->loop, &c->idle);
    ev_io_start(a->loop, &c->rio);
    md_list_insert_tail(&a->conns, &c->link);
    a->n_conns++;
}

struct md_admin *md_admin_new(struct ev_loop *loop, const struct md_addr *addr, const char *label,
                              md_admin_handler *handler, md_admin_health_fn *health, void *ctx,
                              int *err)
{
    struct md_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        *err = MD_ENOMEM;
        return NULL;
    }
    a->loop = loop;
    a->handler = handler;
    a->health = health;
    a->ctx = ctx;
    md_list_init(&a->conns);
    llhttp_settings_init(&a->settings);
    a->settings.on_message_begin = on_message_begin;
    a->settings.on_url = on_url;
    a->settings.on_header_field = on_header_bytes;
    a->settings.on_header_value = on_header_bytes;
    a->settings.on_message_complete = on_message_complete;
    const char *step;
    int fd = md_acceptor_listen((const struct sockaddr *)&addr->ss, addr->len, false, 128, &step);
    if (fd < 0) {
        *err = fd;
        MD_LOG(MD_LOG_ERROR, "admin_bind_failed", "addr=%s step=%s err=%s", label, step,
               md_err_str(fd));
        free(a);
        return NULL;
    }
    md_acceptor_init(&a->acc, loop, fd, NULL, on_conn, on_exhausted);
    md_acceptor_start(&a->acc);
    return a;
}

void md_admin_free(struct md_admin *a)
{
    if (!a)
        return;
    while (!md_list_empty(&a->conns))
        conn_free(MD_CONTAINER_OF(a->conns.next, struct aconn, link));
    md_acceptor_close(&a->acc);
    free(a);
}
