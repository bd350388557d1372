/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h1_server.h"

#include "codec/h1_body.h"
#include "codec/h1_field.h"
#include "core/addr.h"
#include "core/outbuf.h"
#include "core/err.h"
#include "core/log.h"
#include "http/stream.h"
#include "loop/worker.h"
#include "router/router.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF 16384
#define OUT_HIGH (64u * 1024u)       /* response bytes pulled ahead of the socket */
#define REQ_BODY_HIGH (256u * 1024u) /* request bytes held before reading pauses */
#define MAX_URL 8192
#define MAX_HEADERS 100

/* The big buffers a connection needs only while it is talking. */
struct h1_bufs {
    uint8_t in[READ_BUF]; /* read but not parsed yet (paused between requests) */
    char url[MAX_URL];
};

/* A keep-alive connection without a request this long gives its buffers
 * back: idle clients are most of a busy sidecar's connections. */
#define QUIESCE_S 0.25

/* In whole pages (core/pages.h): only the parts written are resident, and a
 * quiet connection's go back to the kernel. */
static struct h1_bufs *bufs_new(struct md_worker *w)
{
    struct h1_bufs *b = md_pages_alloc(&w->pages, sizeof(*b));
    return b ? b : malloc(sizeof(*b));
}

static void bufs_free(struct md_worker *w, struct h1_bufs *b)
{
    if (b && md_pages_owns(&w->pages, b))
        md_pages_free(&w->pages, b);
    else
        free(b);
}

/* What the connection's timer waits for: every state a connection can sit
 * in has a timer, the connection's or its stream's. */
enum h1_wait {
    WAIT_NONE,    /* a request's header section is in: its stream's timers apply */
    WAIT_IDLE,    /* no request: the quiesce, then idle_timeout_ms */
    WAIT_HEADERS, /* a request began: request_headers_timeout_ms to its last header */
    WAIT_BODY,    /* answered, the request body unfinished: stream_idle_timeout_ms between bytes */
    WAIT_CLOSE,   /* closing, an answer still queued: idle_timeout_ms for the client to read it */
};

struct h1c {
    struct md_list link; /* in worker->h1_conns */
    struct md_worker *w;
    const struct md_snap_listener *l;
    struct md_sock sock;
    ev_io rio, wio;
    ev_timer timer;
    enum h1_wait wait;
    ev_tstamp idle_since;
    struct md_defer flush;
    llhttp_t parser;
    struct h1_bufs *b; /* NULL while the connection is quiet: see quiesce() */
    size_t in_len;
    struct md_outbuf out;
    struct md_stream *s; /* the request being served */
    size_t url_len;
    struct md_h1_field field; /* header field being gathered */
    size_t header_bytes, n_headers;
    int error_status;         /* refused while parsing: 400/413/414/431 */
    const char *error_reason; /* ours, when llhttp's would not say it */
    bool req_done, resp_head_sent, resp_done, chunked, head_request, keep_alive;
    bool paused_body; /* reading stopped: the upstream is behind */
    bool closing, draining;
    bool abort_close;     /* close with RST: a response was cut short */
    bool peer_eof;        /* the client half-closed */
    bool http10;          /* the current request is HTTP/1.0 */
    bool close_delimited; /* HTTP/1.0 client, length unknown: the body ends with the close */
    bool tunnel;          /* upgraded (101): raw bytes both ways, no more HTTP */
    bool shut_wr;         /* the tunnel's response side ended: FIN sent */
    /* obs-fold scan of the raw header section (llhttp folds silently) */
    bool hs_line_start, hs_cr, hs_over;
    /* request line scan: llhttp takes runs of spaces between its parts */
    bool rl_began, rl_over;
    unsigned rl_spaces;
    char version[8]; /* the request line's "1.1", gathered from llhttp's pieces */
    size_t version_len;
    /* llhttp 8.1 skips the two bytes after chunk data unchecked: we check them */
    const uint8_t *exec_end; /* end of the bytes given to llhttp_execute */
    const char *crlf_want;   /* the rest of a chunk's CRLF still to see, or NULL */
    char peer_ip[INET6_ADDRSTRLEN];
};

static const struct md_stream_side_ops ds_ops;
static llhttp_settings_t settings;

static void want_flush(struct h1c *c)
{
    md_worker_defer(c->w, &c->flush);
}

static void conn_free(struct h1c *c, bool reset)
{
    struct md_worker *w = c->w;
    if (c->s) {
        struct md_stream *s = c->s;
        c->s = NULL;
        md_stats_add(md_stats_l(w->stats, c->l->idx, MD_LSTAT_RQ_ACTIVE), -1);
        md_router_on_downstream_closed(s, c->resp_done && c->req_done ? 0 : 8 /* CANCEL */);
        md_stream_detach_ds(s);
    }
    md_worker_defer_cancel(&c->flush);
    ev_io_stop(w->loop, &c->rio);
    ev_io_stop(w->loop, &c->wio);
    ev_timer_stop(w->loop, &c->timer);
    md_linger_close(&w->linger, &c->sock, reset);
    md_list_remove(&c->link);
    md_stats_add(md_stats_l(w->stats, c->l->idx, MD_LSTAT_CX_ACTIVE), -1);
    __atomic_sub_fetch(&w->active, 1, __ATOMIC_RELAXED);
    md_outbuf_fini(&c->out);
    md_h1_field_fini(&c->field);
    bufs_free(w, c->b);
    free(c);
}

/* The client reset or left: an exchange it had not seen through counts as
 * a downstream reset (one meshd refused is closing already: not counted). */
static void client_gone(struct h1c *c, bool reset)
{
    if (c->s && !c->closing && !(c->req_done && c->resp_done))
        md_stats_add(md_stats_l(c->w->stats, c->l->idx, MD_LSTAT_RQ_DS_RESET), 1);
    conn_free(c, reset);
}

static int out_append(struct h1c *c, const void *p, size_t n)
{
    return md_outbuf_append(&c->out, p, n);
}

#define out_printf(c, ...) md_outbuf_printf(&(c)->out, __VA_ARGS__)

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

static void timer_set(struct h1c *c, enum h1_wait wait, double after)
{
    c->wait = wait;
    c->timer.repeat = after;
    ev_timer_again(c->w->loop, &c->timer);
}

/* No request: first the quiesce, then the idle timeout. */
static void idle_start(struct h1c *c)
{
    double timeout = c->l->http.idle_timeout_ms / 1000.0;
    c->idle_since = ev_now(c->w->loop);
    timer_set(c, WAIT_IDLE, QUIESCE_S < timeout ? QUIESCE_S : timeout);
}

/* A request's first byte is in (or waited while the one before it was
 * answered): its header section has this long to arrive in full. */
static void headers_start(struct h1c *c)
{
    timer_set(c, WAIT_HEADERS, c->l->http.request_headers_timeout_ms / 1000.0);
}

/* A request meshd refuses while parsing: answer and close (RFC 9112 §11.2:
 * after a framing error the rest of the connection cannot be trusted). */
static void refuse(struct h1c *c, int status, const char *why)
{
    MD_LOG(MD_LOG_INFO, "http1_bad_request", "listener=%s peer=%s status=%d reason=\"%s\"",
           c->l->name, c->peer_ip, status, why);
    md_stats_add(md_stats_l(c->w->stats, c->l->idx,
                            status == 431   ? MD_LSTAT_RQ_TOO_LARGE
                            : status == 408 ? MD_LSTAT_RQ_TIMEOUT
                                            : MD_LSTAT_RQ_BAD_REQUEST),
                 1);
    if (!c->resp_head_sent) {
        char body[160];
        int n = snprintf(body, sizeof(body), "%s\n", why);
        out_printf(c,
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                   status, reason(status), n, body);
    }
    c->keep_alive = false;
    c->closing = true;
    want_flush(c);
}

static int on_message_begin(llhttp_t *p)
{
    struct h1c *c = p->data;
    c->url_len = 0;
    md_h1_field_reset(&c->field);
    c->header_bytes = c->n_headers = 0;
    c->error_status = 0;
    c->error_reason = NULL;
    c->req_done = c->resp_head_sent = c->resp_done = c->chunked = c->head_request = false;
    c->close_delimited = false;
    c->crlf_want = NULL;
    c->version_len = 0;
    c->s = md_stream_new(c->w, c->l, c, &ds_ops);
    if (!c->s)
        return -1;
    c->s->peer_ip = c->peer_ip;
    c->s->peer_id = c->sock.peer_id;
    c->s->local_id = c->sock.local_id;
    c->s->sni = c->sock.sni;
    md_stats_add(md_stats_l(c->w->stats, c->l->idx, MD_LSTAT_RQ_TOTAL), 1);
    md_stats_add(md_stats_l(c->w->stats, c->l->idx, MD_LSTAT_RQ_ACTIVE), 1);
    return 0;
}

/* RFC 9112 §2.3, §3: meshd speaks HTTP/1.0 and 1.1 only. Called before
 * llhttp judges the version (it takes 0.9 and 2.0). */
static int on_version(llhttp_t *p, const char *at, size_t len)
{
    struct h1c *c = p->data;
    for (size_t i = 0; i < len && c->version_len < sizeof(c->version); i++)
        c->version[c->version_len++] = at[i];
    const char *v = c->version;
    if (c->version_len >= 3 && v[0] >= '0' && v[0] <= '9' && v[1] == '.' && v[2] >= '0' &&
        v[2] <= '9' && !(v[0] == '1' && (v[2] == '0' || v[2] == '1'))) {
        c->error_status = 505;
        c->error_reason = "HTTP version not supported (HTTP/1.0 and HTTP/1.1 are)";
        return -1;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct h1c *c = p->data;
    if (c->url_len + len >= MAX_URL) {
        c->error_status = 414;
        return -1;
    }
    memcpy(c->b->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int count_header_bytes(struct h1c *c, size_t len)
{
    c->header_bytes += len;
    if (c->header_bytes > c->l->http.h2.max_header_list_size) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct h1c *c = p->data;
    if (count_header_bytes(c, len) < 0 || md_h1_field_name(&c->field, at, len) < 0) {
        c->error_status = 431;
        return -1;
    }
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct h1c *c = p->data;
    if (count_header_bytes(c, len) < 0)
        return -1;
    return md_h1_field_value(&c->field, at, len, c->l->http.h2.max_header_list_size);
}

/* RFC 9110 §5.6.2 tchar */
static bool is_token(const char *s, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || strchr(extra, ch)))
            return false; /* names are lower-cased already */
    }
    return n > 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct h1c *c = p->data;
    if (!is_token(c->field.name, c->field.name_len)) {
        /* RFC 9112 §5.1: no whitespace between the name and the colon. */
        c->error_status = 400;
        c->error_reason = "invalid header field name";
        return -1;
    }
    const char *v = md_h1_field_value_ptr(&c->field); /* obs-fold: see obs_fold() */
    if (++c->n_headers > MAX_HEADERS) {
        c->error_status = 431;
        return -1;
    }
    int rc = md_stream_add_header(c->s, &c->s->req, c->field.name, c->field.name_len, v,
                                  c->field.value_len);
    md_h1_field_reset(&c->field);
    return rc < 0 ? -1 : 0;
}

/* HTTP/2-shaped request: pseudo-headers first, then the fields except Host
 * (it becomes :authority) and the HTTP/1 framing fields. */
static int to_h2_shape(struct h1c *c)
{
    struct md_stream *s = c->s;
    struct md_half *q = &s->req;
    const struct md_hdr *host = md_hdrs_find(q->hdrs, q->n_hdrs, "host");
    const char *method = llhttp_method_name(llhttp_get_method(&c->parser));
    size_t n = 0, cap = q->n_hdrs + 4;
    struct md_hdr *v = md_arena_alloc(&s->arena, cap * sizeof(*v));
    char *path = md_arena_strndup(&s->arena, c->b->url, c->url_len);
    if (!v || !path)
        return MD_ENOMEM;
    v[n++] = (struct md_hdr){":method", 7, method, strlen(method)};
    v[n++] = (struct md_hdr){":scheme", 7, "http", 4};
    if (host)
        v[n++] = (struct md_hdr){":authority", 10, host->value, host->value_len};
    v[n++] = (struct md_hdr){":path", 5, path, c->url_len};
    const struct md_hdr *conn = md_hdrs_find(q->hdrs, q->n_hdrs, "connection");
    for (size_t i = 0; i < q->n_hdrs; i++) {
        const struct md_hdr *h = &q->hdrs[i];
        if (md_hdr_is(h, "host") || md_hdr_is(h, "expect"))
            continue; /* Host is :authority; Expect was answered here */
        if (conn && md_h1_connection_lists(conn->value, conn->value_len, h->name, h->name_len))
            continue; /* RFC 9110 §7.6.1: fields the Connection header names are hop-by-hop */
        v[n++] = *h;
    }
    q->hdrs = v;
    q->n_hdrs = q->cap_hdrs = n;
    return 0;
}

/* RFC 9110 §7.8: the protocols the client offers, in its order of
 * preference, become the stream's upgrade as a lower-case list "a,b" (the
 * router picks the first its route allows). "h2c" (RFC 7540 §3.2, dropped by
 * RFC 9113) is left out; offering nothing else serves the request as it is.
 * Returns 0 or MD_ENOMEM. */
static int take_upgrade(struct h1c *c, llhttp_t *p)
{
    struct md_stream *s = c->s;
    const struct md_hdr *u = md_hdrs_find(s->req.hdrs, s->req.n_hdrs, "upgrade");
    if (!p->upgrade || !u)
        return 0;
    char *list = md_arena_alloc(&s->arena, u->value_len + 1);
    if (!list)
        return MD_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < u->value_len;) {
        while (i < u->value_len &&
               (u->value[i] == ' ' || u->value[i] == '\t' || u->value[i] == ','))
            i++;
        size_t e = i;
        while (e < u->value_len && u->value[e] != ',' && u->value[e] != ' ' && u->value[e] != '\t')
            e++;
        if (e > i && !(e - i == 3 && strncasecmp(u->value + i, "h2c", 3) == 0)) {
            if (n)
                list[n++] = ',';
            for (size_t k = i; k < e; k++) {
                char ch = u->value[k];
                list[n++] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
            }
        }
        i = e;
    }
    list[n] = 0;
    if (n == 0) {
        p->upgrade = 0; /* llhttp would stop parsing after this request */
        return 0;
    }
    s->upgrade = list;
    s->upgrade_len = n;
    return 0;
}

/* The body's framing, judged in full before the request goes anywhere
 * (llhttp judges part of Transfer-Encoding only after this callback). */
static int check_framing(struct h1c *c, llhttp_t *p)
{
    struct md_stream *s = c->s;
    enum md_h1_te te = md_h1_transfer_codings(s->req.hdrs, s->req.n_hdrs);
    c->error_status = 400;
    if (te != MD_H1_TE_NONE && c->http10) {
        /* RFC 9112 §6.1: HTTP/1.0 knows no transfer codings */
        c->error_reason = "Transfer-Encoding in an HTTP/1.0 request";
        return -1;
    }
    if (te == MD_H1_TE_MALFORMED) {
        c->error_reason = "invalid Transfer-Encoding (chunked must be its last coding)";
        return -1;
    }
    if (te == MD_H1_TE_UNSUPPORTED) {
        /* RFC 9112 §6.1: a coding the server does not implement */
        c->error_status = 501;
        c->error_reason = "transfer coding not implemented (only chunked is)";
        return -1;
    }
    if (te == MD_H1_TE_CHUNKED && (!(p->flags & F_CHUNKED) || (p->flags & F_CONTENT_LENGTH))) {
        c->error_reason = "Transfer-Encoding with Content-Length, or unclear"; /* §6.3 */
        return -1;
    }
    if (te == MD_H1_TE_NONE && (p->flags & (F_CHUNKED | F_TRANSFER_ENCODING))) {
        c->error_reason = "invalid Transfer-Encoding";
        return -1;
    }
    c->error_status = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct h1c *c = p->data;
    struct md_stream *s = c->s;
    if (c->url_len == 0 || c->b->url[0] != '/') {
        /* origin-form only: absolute-form and CONNECT are for forward proxies */
        c->error_status = 400;
        return -1;
    }
    c->http10 = p->http_major == 1 && p->http_minor == 0;
    size_t hosts = 0;
    for (size_t i = 0; i < s->req.n_hdrs; i++)
        hosts += md_hdr_is(&s->req.hdrs[i], "host");
    if (hosts > 1 || (hosts == 0 && !c->http10)) {
        /* RFC 9112 §3.2: exactly one Host in HTTP/1.1 */
        c->error_status = 400;
        c->error_reason = hosts ? "more than one Host header" : "missing Host header";
        return -1;
    }
    if (memchr(c->b->url, '#', c->url_len)) {
        /* RFC 9112 §3.2: origin-form has no fragment; a client never sends one */
        c->error_status = 400;
        c->error_reason = "fragment in the request target";
        return -1;
    }
    if (check_framing(c, p) < 0)
        return -1;
    const struct md_hdr *expect = md_hdrs_find(s->req.hdrs, s->req.n_hdrs, "expect");
    if (expect && expect->value_len == 12 && strncasecmp(expect->value, "100-continue", 12) == 0 &&
        p->http_minor >= 1) {
        /* meshd reads the body itself, bounded by backpressure: the client may
         * as well send it now. */
        if (out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
            return -1;
        want_flush(c);
    }
    if (take_upgrade(c, p) < 0 || to_h2_shape(c) < 0)
        return -1;
    c->head_request = llhttp_get_method(p) == HTTP_HEAD;
    c->keep_alive = llhttp_should_keep_alive(p) && !c->draining;
    bool body = (p->flags & F_CHUNKED) || p->content_length > 0;
    if (s->upgrade && body) {
        c->error_status = 400;
        c->error_reason = "an upgrade request cannot have a body";
        return -1;
    }
    s->req.headers_done = true;
    ev_timer_stop(c->w->loop, &c->timer);
    c->wait = WAIT_NONE;
    /* An upgrade's request goes on as the tunnel's bytes if it is accepted. */
    s->req.headers_end = s->req.end = !body && !s->upgrade;
    c->req_done = false;
    md_router_on_request(s);
    return 0;
}

/* Checks |n| bytes at |p| against what must follow chunk data. Returns
 * false on a mismatch; keeps what is still to come in c->crlf_want. */
static bool chunk_crlf_ok(struct h1c *c, const char *p, size_t n)
{
    while (c->crlf_want && *c->crlf_want && n > 0) {
        if (*p != *c->crlf_want)
            return false;
        p++;
        n--;
        c->crlf_want++;
    }
    if (c->crlf_want && !*c->crlf_want)
        c->crlf_want = NULL;
    return true;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct h1c *c = p->data;
    if ((p->flags & F_CHUNKED) && p->content_length == 0) {
        /* The chunk's data ends here: CRLF must follow (RFC 9112 §7.1). */
        const char *end = at + len;
        c->crlf_want = "\r\n";
        if (!chunk_crlf_ok(c, end, (size_t)((const char *)c->exec_end - end))) {
            c->error_status = 400;
            c->error_reason = "chunk data not followed by CRLF";
            return -1;
        }
    }
    if (c->s && md_stream_body(c->s, &c->s->req, at, len) < 0)
        return -1;
    if (c->s && c->s->req.body.len > REQ_BODY_HIGH)
        c->paused_body = true; /* stop reading until the upstream takes some */
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct h1c *c = p->data;
    c->req_done = true;
    if (c->s && !c->s->req.end && !c->s->upgrade)
        md_stream_end(c->s, &c->s->req);
    want_flush(c);
    return HPE_PAUSED; /* the next request waits until this one is answered */
}

/* llhttp joins obs-fold lines silently; RFC 9112 §5.2 lets a proxy refuse
 * them, and smuggling defences want that. Scans the raw header section.
 * Returns true when a header line starts with SP or HT. */
static bool obs_fold(struct h1c *c, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n && !c->hs_over; i++) {
        uint8_t ch = p[i];
        if (c->hs_line_start && (ch == ' ' || ch == '\t'))
            return true;
        if (c->hs_line_start && ch == '\n') {
            c->hs_over = true; /* empty line: the section ended */
        } else if (c->hs_line_start && ch == '\r') {
            c->hs_cr = true; /* an empty line, if LF follows */
            c->hs_line_start = false;
            continue;
        } else if (c->hs_cr && ch == '\n') {
            c->hs_over = true;
        }
        c->hs_cr = false;
        c->hs_line_start = ch == '\n';
    }
    return false;
}

/* llhttp takes "GET  /p" and "/p  HTTP/1.1"; RFC 9112 §3 has one SP
 * between the parts of a request line. Scans the raw request line (after
 * the empty lines §2.2 lets a server skip). Returns false on extra spaces. */
static bool request_line_ok(struct h1c *c, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n && !c->rl_over; i++) {
        if (!c->rl_began && (p[i] == '\r' || p[i] == '\n'))
            continue;
        c->rl_began = true;
        c->rl_over = p[i] == '\n';
        if (p[i] == ' ' && ++c->rl_spaces > 2)
            return false;
    }
    return true;
}

/* Feeds buffered input to the parser: up to the end of a request, whose
 * answer the next one waits for (pipelining answers in order). */
static void parse(struct h1c *c)
{
    if (c->tunnel)
        return;
    while (c->in_len > 0 && !c->closing && !(c->s && c->req_done)) {
        if (!c->s) { /* a new request line starts here */
            c->hs_line_start = c->hs_cr = c->hs_over = false;
            c->rl_began = c->rl_over = false;
            c->rl_spaces = 0;
        }
        if (!request_line_ok(c, c->b->in, c->in_len)) {
            refuse(c, 400, "more than one space between the parts of the request line");
            return;
        }
        if (obs_fold(c, c->b->in, c->in_len)) {
            c->error_reason = "obsolete line folding in a header field";
            refuse(c, 400, c->error_reason);
            return;
        }
        if (c->crlf_want && !chunk_crlf_ok(c, (const char *)c->b->in, c->in_len)) {
            refuse(c, 400, "chunk data not followed by CRLF");
            return;
        }
        c->exec_end = c->b->in + c->in_len;
        llhttp_errno_t e = llhttp_execute(&c->parser, (const char *)c->b->in, c->in_len);
        size_t used = c->in_len;
        if (e == HPE_PAUSED) {
            used = (size_t)((const uint8_t *)llhttp_get_error_pos(&c->parser) - c->b->in);
            llhttp_resume(&c->parser);
        } else if (e == HPE_PAUSED_UPGRADE) {
            /* The upstream declined the upgrade: HTTP/1.1 goes on. */
            used = (size_t)((const uint8_t *)llhttp_get_error_pos(&c->parser) - c->b->in);
            llhttp_resume_after_upgrade(&c->parser);
        } else if (e != HPE_OK) {
            int status = c->error_status ? c->error_status : 400;
            refuse(c, status,
                   c->error_reason ? c->error_reason
                   : status == 414 ? "request target too long"
                   : status == 431 ? "request header fields too large or too many"
                                   : llhttp_get_error_reason(&c->parser));
            return;
        }
        memmove(c->b->in, c->b->in + used, c->in_len - used);
        c->in_len -= used;
    }
}

static void end_exchange(struct h1c *c)
{
    struct md_stream *s = c->s;
    c->s = NULL;
    c->resp_head_sent = false; /* a refusal before the next request must answer */
    md_stats_add(md_stats_l(c->w->stats, c->l->idx, MD_LSTAT_RQ_ACTIVE), -1);
    md_router_on_downstream_closed(s, 0);
    md_stream_detach_ds(s);
    if (!c->keep_alive)
        c->closing = true;
    else if (c->in_len > 0)
        headers_start(c); /* pipelined: it has waited for its turn, not dawdled */
    else
        idle_start(c);
}

static void pull_body(struct h1c *c)
{
    struct md_stream *s = c->s;
    while (c->out.len < OUT_HIGH && !c->resp_done) {
        ssize_t n = md_h1_body_pull(s, &s->resp, &c->out, OUT_HIGH - c->out.len,
                                    c->head_request ? MD_H1_DISCARD
                                    : c->chunked    ? MD_H1_CHUNKED
                                                    : MD_H1_RAW);
        if (n < 0 || (s->resp.body.len == 0 && s->reset_after_body)) {
            /* Out of memory, or the upstream reset mid-response: cut the
             * connection so the client cannot take a truncated body for a
             * whole one. */
            c->closing = c->abort_close = true;
            return;
        }
        if (s->resp.body.len == 0 && s->resp.end) {
            if (c->chunked && md_h1_last_chunk(&c->out, s->resp.trailers, s->resp.n_trailers) < 0) {
                c->closing = c->abort_close = true;
                return;
            }
            c->resp_done = true;
        }
        if (n == 0)
            break;
    }
}

static void run_flush(struct md_defer *d)
{
    struct h1c *c = MD_CONTAINER_OF(d, struct h1c, flush);
    struct ev_loop *loop = c->w->loop;
    for (int round = 0; round < 64; round++) {
        if (c->s && c->resp_head_sent)
            pull_body(c);
        int rc = c->out.len ? md_sock_flush(&c->sock, &c->out,
                                            md_stats_l(c->w->stats, c->l->idx, MD_LSTAT_TX_BYTES))
                            : 0;
        if (rc < 0 && rc != -EAGAIN) {
            client_gone(c, true);
            return;
        }
        if (c->tunnel && c->resp_done && c->out.len == 0 && !c->shut_wr) {
            md_sock_shutdown_wr(&c->sock); /* the upstream's FIN, passed on */
            c->shut_wr = true;
        }
        if (c->s && c->resp_done && c->req_done && (!c->tunnel || c->peer_eof))
            end_exchange(c);
        if (c->closing && (c->out.len == 0 || c->abort_close)) {
            conn_free(c, c->abort_close);
            return;
        }
        if (rc == -EAGAIN)
            break;
        size_t before = c->in_len;
        bool had = c->s != NULL;
        parse(c); /* a pipelined request may be waiting */
        if (c->peer_eof && c->in_len == 0 && (!c->s || !c->req_done)) {
            if (c->s) { /* the client left in the middle of a request */
                client_gone(c, false);
                return;
            }
            c->closing = true;
            continue;
        }
        /* Go round again only if that started something that may answer at once. */
        if (!(c->s && !had) && c->in_len == before &&
            !(c->s && c->resp_head_sent && !c->resp_done && c->out.len < OUT_HIGH &&
              c->s->resp.body.len))
            break;
    }
    bool blocked = c->out.len > 0;
    if (c->closing && c->wait != WAIT_CLOSE)
        timer_set(c, WAIT_CLOSE, c->l->http.idle_timeout_ms / 1000.0);
    else if (!c->closing && c->s && c->resp_done && !c->req_done && !c->tunnel &&
             c->wait != WAIT_BODY) /* the stream is over: its idle timer with it */
        timer_set(c, WAIT_BODY, c->l->http.stream_idle_timeout_ms / 1000.0);
    if (blocked && !ev_is_active(&c->wio))
        ev_io_start(loop, &c->wio);
    else if (!blocked && ev_is_active(&c->wio))
        ev_io_stop(loop, &c->wio);
    bool read = !c->closing && !c->paused_body && !c->peer_eof && c->in_len < READ_BUF;
    if (read && !ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    else if (!read && ev_is_active(&c->rio))
        ev_io_stop(loop, &c->rio);
    md_sock_kick(&c->sock, loop, &c->rio);
}

/* Tunnel bytes from the client: the request body, with backpressure. */
static void tunnel_in(struct h1c *c)
{
    struct md_stream *s = c->s;
    size_t n = c->in_len;
    c->in_len = 0;
    if (!s)
        return;                                             /* the tunnel is being torn down */
    if (n && md_stream_body(s, &s->req, c->b->in, n) < 0) { /* n > 0: c->b is there */
        c->closing = c->abort_close = true; /* out of memory: reset, from the flush */
        want_flush(c);
        return;
    }
    if (c->s && c->s->req.body.len > REQ_BODY_HIGH)
        c->paused_body = true;
    want_flush(c);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    struct h1c *c = MD_CONTAINER_OF(io, struct h1c, rio);
    if (!c->b && !(c->b = bufs_new(c->w))) {
        conn_free(c, true);
        return;
    }
    ssize_t n = md_sock_recv(&c->sock, c->b->in + c->in_len, READ_BUF - c->in_len);
    if (n == -EAGAIN)
        return;
    if (n < 0) {
        client_gone(c, true);
        return;
    }
    if (n == 0 && c->tunnel) {
        c->peer_eof = true;
        if (c->s)
            md_stream_end(c->s, &c->s->req); /* FIN, after the bytes before it */
        want_flush(c);
        return;
    }
    if (n == 0) {
        /* Half-closed: what was sent in full is still answered, in order. */
        c->peer_eof = true;
        if (c->in_len == 0 && (!c->s || !c->req_done)) {
            client_gone(c, false); /* nothing left to answer, or gone mid-request */
            return;
        }
        want_flush(c);
        return;
    }
    c->in_len += (size_t)n;
    md_stats_add(md_stats_l(c->w->stats, c->l->idx, MD_LSTAT_RX_BYTES), n);
    if (c->tunnel) {
        tunnel_in(c);
        return;
    }
    if (c->wait == WAIT_IDLE)
        headers_start(c);
    else if (c->wait == WAIT_BODY)
        ev_timer_again(loop, &c->timer);
    parse(c);
    want_flush(c);
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    run_flush(&MD_CONTAINER_OF(io, struct h1c, wio)->flush);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct h1c *c = MD_CONTAINER_OF(t, struct h1c, timer);
    if (c->wait == WAIT_HEADERS) {
        /* RFC 9110 §15.5.9: 408, and the connection closes */
        ev_timer_stop(loop, t);
        c->wait = WAIT_NONE;
        refuse(c, 408, "request header section not received in time");
        return;
    }
    if (c->wait == WAIT_CLOSE || c->wait == WAIT_BODY) {
        /* The client does not read its answer (reset: nothing more will go),
         * or does not send its body (its answer is written: a lingering
         * close lets it read that). */
        conn_free(c, c->out.len > 0);
        return;
    }
    if (c->wait != WAIT_IDLE || c->s)
        return;
    double left = c->l->http.idle_timeout_ms / 1000.0 - (ev_now(loop) - c->idle_since);
    if (left > 0.001) {
        if (c->in_len == 0) { /* nothing pipelined waits in them */
            bufs_free(c->w, c->b);
            c->b = NULL;
        }
        if (c->out.len == 0)
            md_outbuf_fini(&c->out);
        md_h1_field_fini(&c->field);
        t->repeat = left;
        ev_timer_again(loop, t);
        return;
    }
    conn_free(c, false);
}

/* 101: the connection becomes the tunnel. */
static void tunnel_open(struct h1c *c)
{
    struct md_stream *s = c->s;
    out_printf(c, "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: %.*s\r\n",
               (int)s->upgrade_len, s->upgrade);
    for (size_t i = 0; i < s->resp.n_hdrs; i++) {
        const struct md_hdr *h = &s->resp.hdrs[i];
        if (!(h->name_len && h->name[0] == ':'))
            out_printf(c, "%.*s: %.*s\r\n", (int)h->name_len, h->name, (int)h->value_len, h->value);
    }
    out_append(c, "\r\n", 2);
    c->tunnel = c->resp_head_sent = true;
    c->chunked = c->keep_alive = false;
    tunnel_in(c); /* what the client sent after its request is the tunnel's first bytes */
}

static void ds_headers_ready(void *side)
{
    struct h1c *c = side;
    struct md_stream *s = c->s;
    if (s->upgraded) {
        tunnel_open(c);
        return;
    }
    if (s->upgrade) {
        /* Not upgraded: that request was all there is, and the connection
         * goes on as HTTP/1.1 after this answer. */
        c->parser.upgrade = 0;
        md_stream_end(s, &s->req);
    }
    const struct md_hdr *st = md_hdrs_find(s->resp.hdrs, s->resp.n_hdrs, ":status");
    int status = st ? atoi(st->value) : 502;
    bool no_body = c->head_request || status == 204 || status == 304 || status < 200;
    bool has_length = md_hdrs_find(s->resp.hdrs, s->resp.n_hdrs, "content-length") != NULL;
    out_printf(c, "HTTP/1.1 %d %s\r\n", status, reason(status));
    for (size_t i = 0; i < s->resp.n_hdrs; i++) {
        const struct md_hdr *h = &s->resp.hdrs[i];
        if (h->name_len && h->name[0] == ':')
            continue;
        out_printf(c, "%.*s: %.*s\r\n", (int)h->name_len, h->name, (int)h->value_len, h->value);
    }
    c->chunked = false;
    if (!no_body && !has_length) {
        if (s->resp.headers_end) {
            out_append(c, "content-length: 0\r\n", 19);
        } else if (c->http10) {
            c->close_delimited = true; /* HTTP/1.0 has no chunks: the close ends it */
            c->keep_alive = false;
        } else {
            out_append(c, "transfer-encoding: chunked\r\n", 28);
            c->chunked = true;
        }
    }
    if (!c->keep_alive)
        out_append(c, "connection: close\r\n", 19);
    out_append(c, "\r\n", 2);
    c->resp_head_sent = true;
    if (s->resp.headers_end || (no_body && s->resp.end && s->resp.body.len == 0))
        c->resp_done = true;
    want_flush(c);
}

static void ds_data_ready(void *side)
{
    want_flush(side);
}

static void ds_consumed(void *side, size_t n)
{
    struct h1c *c = side;
    if (c->paused_body && c->s && c->s->req.body.len < REQ_BODY_HIGH / 2) {
        c->paused_body = false;
        want_flush(c); /* turns reading back on */
    }
}

static void ds_reset(void *side, uint32_t h2_error)
{
    /* HTTP/1.1 cannot reset one exchange: the connection goes. */
    struct h1c *c = side;
    md_stats_add(md_stats_l(c->w->stats, c->l->idx, MD_LSTAT_RQ_ACTIVE), -1);
    c->s = NULL;
    c->keep_alive = false;
    c->closing = true;
    c->abort_close = c->resp_head_sent; /* a cut-short response must not look complete */
    if (!c->resp_head_sent)             /* nothing sent yet: an answer is still possible */
        md_outbuf_printf(&c->out, "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; "
                                  "charset=utf-8\r\ncontent-length: 15\r\nconnection: "
                                  "close\r\n\r\nupstream reset\n");
    want_flush(c);
}

static const struct md_stream_side_ops ds_ops = {
    .headers_ready = ds_headers_ready,
    .data_ready = ds_data_ready,
    .consumed = ds_consumed,
    .reset = ds_reset,
};

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_version = on_version;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

void md_h1_server_start(struct md_worker *w, const struct md_snap_listener *l, struct md_sock sock)
{
    int fd = sock.fd;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, settings_init);
    struct h1c *c = calloc(1, sizeof(*c));
    if (!c) {
        MD_LOG(MD_LOG_ERROR, "out_of_memory", "listener=%s what=h1_connection", l->name);
        md_sock_close(&sock, false);
        return;
    }
    c->w = w;
    c->l = l;
    c->sock = sock;
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    md_addr_peer_ip(fd, c->peer_ip, sizeof(c->peer_ip));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    md_defer_init(&c->flush, run_flush);
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    ev_init(&c->timer, on_timer);
    idle_start(c);
    ev_io_start(w->loop, &c->rio);
    md_list_insert_tail(&w->h1_conns, &c->link);
    __atomic_add_fetch(&w->active, 1, __ATOMIC_RELAXED);
    md_stats_add(md_stats_l(w->stats, l->idx, MD_LSTAT_CX_TOTAL), 1);
    md_stats_add(md_stats_l(w->stats, l->idx, MD_LSTAT_CX_ACTIVE), 1);
}

void md_h1_server_drain_all(struct md_worker *w)
{
    for (struct md_list *it = w->h1_conns.next; it != &w->h1_conns; it = it->next) {
        struct h1c *c = MD_CONTAINER_OF(it, struct h1c, link);
        c->draining = true;
        c->keep_alive = false;
        if (!c->s)
            c->closing = true;
        want_flush(c);
    }
}

void md_h1_server_close_all(struct md_worker *w)
{
    while (!md_list_empty(&w->h1_conns))
        conn_free(MD_CONTAINER_OF(w->h1_conns.next, struct h1c, link), false);
}
