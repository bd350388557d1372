/* SPDX-License-Identifier: Apache-2.0 */
/* Probes on the control loop: one target per endpoint with its timer, and
 * while a probe is in flight one struct probe (socket, timeout, buffers,
 * nghttp2 session for gRPC), freed as soon as the probe has a verdict. */
#include "health/checker.h"

#include "codec/grpc.h"
#include "codec/h2_conn.h"
#include "core/err.h"
#include "core/hash.h"
#include "core/list.h"
#include "core/log.h"
#include "http/hdrs.h"
#include "net/sock.h"
#include "upstream/connect.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_READ_MAX 4096      /* a status line longer than this is garbage */
#define H2_OUT_MAX (64u * 1024) /* our output is < 1 KiB; more is a peer's flood */
#define GRPC_BODY_MAX 256       /* a HealthCheckResponse is 7 bytes framed */
#define GRPC_CHECK_PATH "/grpc.health.v1.Health/Check"

#define NV(n, v, len)                                                                              \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (len), NGHTTP2_NV_FLAG_NONE                 \
    }

struct hc_cluster;

/* One endpoint under check; owned by its cluster's array. */
struct hc_target {
    struct hc_cluster *hcl;
    struct md_ep *ep; /* in cs->cur[idx] (borrowed; re-pointed when the set changes) */
    struct md_addr addr;
    char label[MD_ADDR_STRLEN];
    uint32_t passes, fails; /* consecutive */
    ev_timer next;          /* the next probe */
    struct probe *probe;    /* in flight, or NULL */
};

struct hc_cluster {
    struct md_checker *hc;
    size_t idx;
    const struct md_snap_cluster *cl;       /* borrowed from cs->snap */
    const struct md_snap_health_check *cfg; /* NULL: not checked */
    struct hc_target **ts;                  /* [n]; an entry may be NULL (ENOMEM) */
    size_t n;
};

struct md_checker {
    struct ev_loop *loop;
    struct md_clusters *cs; /* borrowed */
    uint64_t rng;
    struct hc_cluster *cls; /* [cs->snap->n_clusters] */
};

/* A probe in flight; owned by its target. */
struct probe {
    struct hc_target *t;
    struct md_sock sock; /* TLS when the cluster has it (http and grpc checks) */
    bool connected;
    bool handshaking;
    ev_io io;
    ev_timer timeout;
    uint8_t *out; /* request bytes (HTTP) or nghttp2's output (gRPC) */
    size_t out_len, out_off;
    /* HTTP */
    char in[HTTP_READ_MAX];
    size_t in_len;
    /* gRPC */
    nghttp2_session *sess;
    int32_t sid;
    bool closed, grpc_ct;
    uint32_t close_code;
    int http_status, grpc_status; /* -1: not seen */
    uint8_t body[GRPC_BODY_MAX];
    size_t body_len;
    bool body_too_big;
};

/* Seconds until the next probe: |base_ms| plus 0..jitter_ms at random. */
static double delay_s(struct md_checker *hc, uint32_t base_ms, uint32_t jitter_ms)
{
    uint64_t j = jitter_ms ? md_xorshift64(&hc->rng) % ((uint64_t)jitter_ms + 1) : 0;
    return (double)(base_ms + j) / 1000.0;
}

static void probe_free(struct md_checker *hc, struct probe *p)
{
    if (!p)
        return;
    ev_io_stop(hc->loop, &p->io);
    ev_timer_stop(hc->loop, &p->timeout);
    if (p->sock.fd >= 0)
        md_sock_close(&p->sock, false);
    nghttp2_session_del(p->sess);
    free(p->out);
    free(p);
}

/* The probe's verdict: counts, thresholds, the flag, the next probe.
 * |why|: NULL when it passed, else the reason it failed. */
static void verdict(struct hc_target *t, const char *why)
{
    struct hc_cluster *hcl = t->hcl;
    struct md_checker *hc = hcl->hc;
    const struct md_snap_health_check *cfg = hcl->cfg;
    struct md_cluster_ctl_stats *st = &hc->cs->stats[hcl->idx];
    probe_free(hc, t->probe);
    t->probe = NULL;
    bool healthy = md_ep_healthy(t->ep);
    if (!why) {
        st->hc_success++;
        t->fails = 0;
        t->passes++;
        if (!healthy && t->passes >= cfg->healthy_threshold) {
            md_ep_set_healthy(t->ep, true);
            st->hc_restored++;
            MD_LOG(MD_LOG_INFO, "health_check_healthy",
                   "cluster=%s endpoint=%s reason=\"passed\" passes=%u", hcl->cl->name, t->label,
                   t->passes);
        }
    } else {
        st->hc_failure++;
        t->passes = 0;
        t->fails++;
        MD_LOG(MD_LOG_DEBUG, "health_check_failed", "cluster=%s endpoint=%s reason=\"%s\"",
               hcl->cl->name, t->label, why);
        if (healthy && t->fails >= cfg->unhealthy_threshold) {
            md_ep_set_healthy(t->ep, false);
            st->hc_ejected++;
            MD_LOG(MD_LOG_WARN, "health_check_unhealthy",
                   "cluster=%s endpoint=%s reason=\"%s\" failures=%u", hcl->cl->name, t->label, why,
                   t->fails);
        }
    }
    ev_timer_set(&t->next, delay_s(hc, cfg->interval_ms, cfg->jitter_ms), 0.);
    ev_timer_start(hc->loop, &t->next);
}

/* Our own failure (memory, descriptors), not the endpoint's: no verdict,
 * the probe is tried again after an interval. */
static void skip(struct hc_target *t, int err)
{
    struct md_checker *hc = t->hcl->hc;
    MD_LOG(MD_LOG_WARN, "health_check_skipped", "cluster=%s endpoint=%s err=%s", t->hcl->cl->name,
           t->label, md_err_str(err));
    probe_free(hc, t->probe);
    t->probe = NULL;
    /* Jittered, or every target out of descriptors retries in step. */
    ev_timer_set(&t->next, delay_s(hc, t->hcl->cfg->interval_ms, t->hcl->cfg->jitter_ms), 0.);
    ev_timer_start(hc->loop, &t->next);
}

static void fail_errno(struct hc_target *t, int err, const char *what)
{
    char why[96];
    if (err == ECONNREFUSED)
        snprintf(why, sizeof(why), "%s refused", what);
    else
        snprintf(why, sizeof(why), "%s failed: %s", what, md_err_str(-err));
    verdict(t, why);
}

/* -- HTTP/1.1 -------------------------------------------------------------- */

/* RFC 9112 §4: "HTTP/1.x NNN reason CRLF"; the reason may be empty. Returns
 * 1 with |code| set, 0 when more bytes are needed, -1 for garbage. */
static int parse_status_line(const char *b, size_t n, int *code)
{
    static const char pat[] = "HTTP/1.d ddd";
    for (size_t i = 0; i < n && i < sizeof(pat) - 1; i++) {
        bool ok = pat[i] == 'd' ? b[i] >= '0' && b[i] <= '9' : b[i] == pat[i];
        if (!ok)
            return -1;
    }
    const char *lf = memchr(b, '\n', n);
    if (!lf)
        return n < HTTP_READ_MAX ? 0 : -1;
    size_t len = (size_t)(lf - b);
    if (len < sizeof(pat) - 1 + 1 || b[len - 1] != '\r')
        return -1;
    len--; /* without CR */
    if (len > sizeof(pat) - 1 && b[sizeof(pat) - 1] != ' ')
        return -1;
    for (size_t i = sizeof(pat); i < len; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c != '\t' && (c < 0x20 || c == 0x7f))
            return -1;
    }
    *code = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    return 1;
}

static int http_request(struct probe *p, const struct md_snap_health_check *cfg)
{
    const char *host = cfg->host ? cfg->host : p->t->label;
    char *req;
    int n = asprintf(&req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                     "User-Agent: meshd-health-check\r\n\r\n",
                     cfg->path, host);
    if (n < 0)
        return MD_ENOMEM;
    p->out = (uint8_t *)req;
    p->out_len = (size_t)n;
    return 0;
}

/* Reads what is there; decides once the status line is complete. */
static void http_read(struct probe *p)
{
    struct hc_target *t = p->t;
    ssize_t n = md_sock_recv(&p->sock, p->in + p->in_len, sizeof(p->in) - p->in_len);
    if (n == -EAGAIN)
        return;
    if (n < 0) {
        fail_errno(t, (int)-n, "read");
        return;
    }
    p->in_len += (size_t)n;
    int code = 0;
    int rc = parse_status_line(p->in, p->in_len, &code);
    if (rc == 0 && n == 0)
        rc = -2;
    if (rc == 0)
        return;
    if (rc < 0) {
        verdict(t, rc == -2 ? "closed before the status line" : "bad status line");
        return;
    }
    const struct md_snap_health_check *cfg = t->hcl->cfg;
    for (size_t i = 0; i < cfg->n_statuses; i++) {
        if ((int)cfg->statuses[i] == code) {
            verdict(t, NULL);
            return;
        }
    }
    char why[32];
    snprintf(why, sizeof(why), "status %d", code);
    verdict(t, why);
}

/* -- gRPC over h2c ----------------------------------------------------------- */

/* HealthCheckResponse{ServingStatus status = 1}: absent is UNKNOWN (0).
 * Returns 0 or MD_EPROTO. */
static int parse_response(const uint8_t *b, size_t n, uint64_t *status)
{
    *status = 0;
    return md_grpc_field1(b, n, 0, status, NULL, NULL) < 0 ? MD_EPROTO : 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct probe *p = user;
    if (frame->hd.stream_id != p->sid)
        return 0;
    long v = md_hdr_decimal((const char *)value, valuelen);
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        p->http_status = v < 0 ? 0 : (int)v;
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        p->grpc_status = v < 0 ? 2 : (int)v; /* UNKNOWN, as gRPC reads a bad one */
    else if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
        p->grpc_ct = md_grpc_is_content_type((const char *)value, valuelen);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *user)
{
    struct probe *p = user;
    /* Window updates are ours to send (md_h2_options). */
    nghttp2_session_consume(sess, id, len);
    if (id != p->sid)
        return 0;
    if (len > sizeof(p->body) - p->body_len) {
        p->body_too_big = true;
        return 0;
    }
    memcpy(p->body + p->body_len, data, len);
    p->body_len += len;
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t error_code, void *user)
{
    struct probe *p = user;
    if (id == p->sid) {
        p->closed = true;
        p->close_code = error_code;
    }
    return 0;
}

static ssize_t read_request(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *src, void *user)
{
    struct probe *p = user;
    const char *svc = p->t->hcl->cfg->service;
    size_t svc_len = strlen(svc);
    /* HealthCheckRequest{string service = 1}: tag 0x0a, length, bytes; the
     * length (a varint) fits 2 bytes as service names are short. */
    size_t msg = svc_len ? 1 + (svc_len < 128 ? 1 : 2) + svc_len : 0;
    if (svc_len >= 16384 || length < 5 || msg > length - 5)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    uint8_t *o = buf;
    *o++ = 0;
    *o++ = (uint8_t)(msg >> 24);
    *o++ = (uint8_t)(msg >> 16);
    *o++ = (uint8_t)(msg >> 8);
    *o++ = (uint8_t)msg;
    if (svc_len) {
        *o++ = 0x0a;
        if (svc_len < 128) {
            *o++ = (uint8_t)svc_len;
        } else {
            *o++ = (uint8_t)(0x80 | (svc_len & 0x7f));
            *o++ = (uint8_t)(svc_len >> 7);
        }
        memcpy(o, svc, svc_len);
        o += svc_len;
    }
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return o - buf;
}

static int grpc_start(struct probe *p, const struct md_snap_health_check *cfg)
{
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = md_h2_options();
    int rc = MD_ENOMEM;
    if (opt && nghttp2_session_callbacks_new(&cb) == 0) {
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        if (nghttp2_session_client_new2(&p->sess, cb, p, opt) != 0)
            p->sess = NULL;
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (!p->sess)
        return rc;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    const char *auth = cfg->host ? cfg->host : p->t->label;
    nghttp2_nv nv[] = {
        NV(":method", "POST", 4),
        NV(":scheme", p->sock.ssl ? "https" : "http", p->sock.ssl ? 5 : 4),
        NV(":path", GRPC_CHECK_PATH, sizeof(GRPC_CHECK_PATH) - 1),
        NV(":authority", auth, strlen(auth)),
        NV("content-type", "application/grpc", 16),
        NV("te", "trailers", 8),
        NV("user-agent", "meshd-health-check", 18),
    };
    nghttp2_data_provider prd = {.read_callback = read_request};
    if (nghttp2_submit_settings(p->sess, NGHTTP2_FLAG_NONE, iv, 1) != 0)
        return rc;
    p->sid = nghttp2_submit_request(p->sess, NULL, nv, sizeof(nv) / sizeof(nv[0]), &prd, NULL);
    return p->sid < 0 ? rc : 0;
}

/* Appends what nghttp2 wants to send to p->out. Returns 0 or MD_ETOOBIG. */
static int grpc_pull(struct probe *p)
{
    if (p->out_off == p->out_len)
        p->out_off = p->out_len = 0;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(p->sess, &data);
        if (n < 0)
            return MD_EPROTO;
        if (n == 0)
            return 0;
        if (p->out_len + (size_t)n > H2_OUT_MAX)
            return MD_ETOOBIG;
        uint8_t *o = realloc(p->out, p->out_len + (size_t)n);
        if (!o)
            return MD_ENOMEM;
        memcpy(o + p->out_len, data, (size_t)n);
        p->out = o;
        p->out_len += (size_t)n;
    }
}

/* Why the finished exchange failed (in |buf|), or NULL when it passed. */
static const char *grpc_failure(const struct probe *p, char *buf, size_t len)
{
    uint64_t status = 0;
    if (!p->closed)
        return "closed before the answer";
    if (p->http_status >= 0 && p->http_status != 200) {
        snprintf(buf, len, "http status %d", p->http_status);
        return buf;
    }
    if (p->close_code != NGHTTP2_NO_ERROR || p->http_status < 0)
        return "stream reset";
    if (!p->grpc_ct)
        return "not a gRPC answer";
    if (p->grpc_status < 0)
        return "no grpc-status";
    if (p->grpc_status != 0) {
        snprintf(buf, len, "grpc-status %d", p->grpc_status);
        return buf;
    }
    if (p->body_too_big || parse_response(p->body, p->body_len, &status) < 0)
        return "malformed HealthCheckResponse";
    static const char *const names[] = {"UNKNOWN", NULL, "NOT_SERVING", "SERVICE_UNKNOWN"};
    if (status == 1)
        return NULL;
    if (status < 4)
        return names[status];
    snprintf(buf, len, "status %llu", (unsigned long long)status);
    return buf;
}

/* The stream has closed (or the connection ended first): the verdict. */
static void grpc_verdict(struct probe *p)
{
    char buf[48];
    verdict(p->t, grpc_failure(p, buf, sizeof(buf)));
}

static void grpc_read(struct probe *p)
{
    uint8_t buf[4096];
    ssize_t n = md_sock_recv(&p->sock, buf, sizeof(buf));
    if (n == -EAGAIN)
        return;
    if (n < 0) {
        fail_errno(p->t, (int)-n, "read");
        return;
    }
    if (n == 0) {
        grpc_verdict(p);
        return;
    }
    if (nghttp2_session_mem_recv(p->sess, buf, (size_t)n) < 0) {
        verdict(p->t, "HTTP/2 protocol error");
        return;
    }
    if (p->closed)
        grpc_verdict(p);
}

/* -- the probe ---------------------------------------------------------------- */

/* Writes what is pending; returns false when the probe ended (freed). */
static bool flush_out(struct probe *p)
{
    /* What is left, as a buffer whose unwritten bytes stay where they are */
    struct md_outbuf rest = {p->out + p->out_off, p->out_len - p->out_off, p->out_len - p->out_off};
    int rc = rest.len ? md_sock_flush(&p->sock, &rest, NULL) : 0;
    p->out_len = p->out_off + rest.len;
    if (rc < 0 && rc != -EAGAIN) {
        fail_errno(p->t, -rc, "write");
        return false;
    }
    return true;
}

static void watch(struct probe *p)
{
    struct ev_loop *loop = p->t->hcl->hc->loop;
    int ev = EV_READ | (p->out_off < p->out_len ? EV_WRITE : 0);
    if (ev_is_active(&p->io) && (p->io.events & (EV_READ | EV_WRITE)) == ev)
        return;
    ev_io_stop(loop, &p->io);
    ev_io_set(&p->io, p->sock.fd, ev);
    ev_io_start(loop, &p->io);
    md_sock_kick(&p->sock, loop, &p->io); /* decrypted bytes waiting inside TLS */
}

/* The request goes out: on the TCP connection, or once TLS is up. */
static void send_request(struct probe *p)
{
    struct hc_target *t = p->t;
    const struct md_snap_health_check *cfg = t->hcl->cfg;
    int rc = cfg->kind == MD_HC_HTTP ? http_request(p, cfg) : grpc_start(p, cfg);
    if (rc == 0 && cfg->kind == MD_HC_GRPC)
        rc = grpc_pull(p);
    if (rc < 0) {
        skip(t, rc);
        return;
    }
    if (flush_out(p))
        watch(p);
}

/* One step of the TLS handshake; the server must be who the cluster expects. */
static void handshake_step(struct probe *p)
{
    char why[512];
    int events = 0;
    int rc = md_sock_handshake(&p->sock, &events, why, sizeof(why));
    if (rc == -EAGAIN) {
        struct ev_loop *loop = p->t->hcl->hc->loop;
        ev_io_stop(loop, &p->io);
        ev_io_set(&p->io, p->sock.fd, events);
        ev_io_start(loop, &p->io);
        return;
    }
    const char *refused =
        rc < 0 ? why
        : md_sock_note_identities(&p->sock, why, sizeof(why)) < 0
            ? why
            : md_connect_identity_refused(p->t->hcl->cl->tls, p->sock.peer_id, why, sizeof(why));
    if (refused) {
        char msg[600];
        snprintf(msg, sizeof(msg), "TLS: %s", refused);
        verdict(p->t, msg);
        return;
    }
    p->handshaking = false;
    send_request(p);
}

/* TCP is up: a TCP probe has passed; the others send their request, over
 * TLS when the cluster has it. */
static void connected(struct probe *p)
{
    struct hc_target *t = p->t;
    const struct md_snap_cluster_tls *tls = t->hcl->cl->tls;
    p->connected = true;
    if (t->hcl->cfg->kind == MD_HC_TCP) {
        verdict(t, NULL);
        return;
    }
    if (!tls) {
        send_request(p);
        return;
    }
    /* ALPN by what the probe speaks, not by the cluster's protocol: an http
     * check of an HTTP2 cluster must not be answered in h2. */
    static const unsigned char h2[] = "\x02h2", h1[] = "\x08http/1.1";
    bool http = t->hcl->cfg->kind == MD_HC_HTTP;
    if (md_connect_tls_begin(&p->sock, tls) < 0 ||
        SSL_set_alpn_protos(p->sock.ssl, http ? h1 : h2, http ? sizeof(h1) - 1 : sizeof(h2) - 1)) {
        skip(t, MD_ENOMEM);
        return;
    }
    p->handshaking = true;
    handshake_step(p);
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct probe *p = MD_CONTAINER_OF(io, struct probe, io);
    struct hc_target *t = p->t;
    if (p->handshaking) {
        handshake_step(p);
        return;
    }
    if (!p->connected) {
        int soerr = md_sock_connect_result(&p->sock);
        if (soerr)
            fail_errno(t, soerr, "connect");
        else
            connected(p);
        return;
    }
    if ((revents & EV_WRITE) && !flush_out(p))
        return;
    if (revents & EV_READ) {
        if (t->hcl->cfg->kind == MD_HC_HTTP) {
            http_read(p);
            if (t->probe != p)
                return;
        } else {
            grpc_read(p);
            if (t->probe != p)
                return;
            int rc = grpc_pull(p);
            if (rc < 0) {
                verdict(t, rc == MD_ETOOBIG ? "HTTP/2 output flood" : "HTTP/2 session failed");
                return;
            }
            if (!flush_out(p))
                return;
        }
    }
    watch(p);
}

static void on_timeout(struct ev_loop *loop, ev_timer *tm, int revents)
{
    struct probe *p = MD_CONTAINER_OF(tm, struct probe, timeout);
    verdict(p->t, "timeout");
}

static void on_next(struct ev_loop *loop, ev_timer *tm, int revents)
{
    struct hc_target *t = MD_CONTAINER_OF(tm, struct hc_target, next);
    struct md_checker *hc = t->hcl->hc;
    struct probe *p = calloc(1, sizeof(*p));
    if (!p) {
        skip(t, MD_ENOMEM);
        return;
    }
    p->t = t;
    p->sid = -1;
    p->http_status = p->grpc_status = -1;
    ev_init(&p->io, on_io);
    ev_timer_init(&p->timeout, on_timeout, t->hcl->cfg->timeout_ms / 1000.0, 0.);
    t->probe = p;
    int rc = md_sock_connect(&p->sock, &t->addr);
    if (p->sock.fd < 0) {
        skip(t, rc);
        return;
    }
    ev_timer_start(hc->loop, &p->timeout);
    if (rc == 0) {
        connected(p);
        return;
    }
    if (rc < 0) {
        fail_errno(t, -rc, "connect");
        return;
    }
    ev_io_set(&p->io, p->sock.fd, EV_WRITE);
    ev_io_start(hc->loop, &p->io);
}

/* -- targets and set changes ------------------------------------------------ */

static struct hc_target *target_new(struct hc_cluster *hcl, struct md_ep *ep)
{
    struct hc_target *t = calloc(1, sizeof(*t));
    if (!t) {
        MD_LOG(MD_LOG_ERROR, "health_check_skipped", "cluster=%s endpoint=%s err=%s", hcl->cl->name,
               ep->label, md_err_str(MD_ENOMEM));
        return NULL;
    }
    t->hcl = hcl;
    t->ep = ep;
    t->addr = ep->addr;
    memcpy(t->label, ep->label, sizeof(t->label));
    /* The first probe soon, spread over jitter_ms so that many endpoints do
     * not all connect at once. */
    ev_timer_init(&t->next, on_next, delay_s(hcl->hc, 0, hcl->cfg->jitter_ms), 0.);
    ev_timer_start(hcl->hc->loop, &t->next);
    return t;
}

static void target_free(struct hc_target *t)
{
    if (!t)
        return;
    struct md_checker *hc = t->hcl->hc;
    ev_timer_stop(hc->loop, &t->next);
    probe_free(hc, t->probe);
    free(t);
}

/* Follows cluster |idx|'s new |set|: O(n log m) address lookups, run only when
 * discovery changes a set (n, m <= 1024 by validation). */
static void on_set(void *arg, size_t idx, struct md_epset *set)
{
    struct md_checker *hc = arg;
    struct hc_cluster *hcl = &hc->cls[idx];
    if (!hcl->cfg)
        return;
    struct hc_target **ts = calloc(set->n ? set->n : 1, sizeof(*ts));
    for (size_t i = 0; i < hcl->n; i++) {
        struct hc_target *t = hcl->ts[i];
        struct md_ep *ep = t && ts ? md_epset_find(set, &t->addr) : NULL;
        if (ep && !ts[ep - set->eps]) {
            t->ep = ep;
            ts[ep - set->eps] = t;
        } else {
            target_free(t); /* gone, or no memory to follow it */
        }
    }
    free(hcl->ts);
    hcl->ts = ts;
    hcl->n = ts ? set->n : 0;
    if (!ts)
        MD_LOG(MD_LOG_ERROR, "health_check_skipped", "cluster=%s err=%s", hcl->cl->name,
               md_err_str(MD_ENOMEM));
    for (size_t k = 0; k < hcl->n; k++)
        if (!ts[k])
            ts[k] = target_new(hcl, &set->eps[k]);
}

struct md_checker *md_checker_new(struct ev_loop *loop, struct md_clusters *cs, int *err)
{
    const struct md_snapshot *snap = cs->snap;
    struct md_checker *hc = calloc(1, sizeof(*hc));
    if (hc)
        hc->cls = calloc(snap->n_clusters ? snap->n_clusters : 1, sizeof(*hc->cls));
    if (!hc || !hc->cls) {
        free(hc);
        *err = MD_ENOMEM;
        return NULL;
    }
    hc->loop = loop;
    hc->cs = cs;
    hc->rng = ((uint64_t)(ev_time() * 1e6) ^ (uint64_t)(uintptr_t)hc) | 1;
    for (size_t i = 0; i < snap->n_clusters; i++) {
        struct hc_cluster *hcl = &hc->cls[i];
        hcl->hc = hc;
        hcl->idx = i;
        hcl->cl = &snap->clusters[i];
        hcl->cfg = hcl->cl->health_check;
        if (hcl->cfg && cs->cur[i])
            on_set(hc, i, cs->cur[i]);
    }
    cs->watch = on_set;
    cs->watch_arg = hc;
    return hc;
}

void md_checker_free(struct md_checker *hc)
{
    if (!hc)
        return;
    for (size_t i = 0; i < hc->cs->snap->n_clusters; i++) {
        struct hc_cluster *hcl = &hc->cls[i];
        for (size_t k = 0; k < hcl->n; k++)
            target_free(hcl->ts[k]);
        free(hcl->ts);
    }
    if (hc->cs->watch_arg == hc) {
        hc->cs->watch = NULL;
        hc->cs->watch_arg = NULL;
    }
    free(hc->cls);
    free(hc);
}
