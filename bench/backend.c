// SPDX-License-Identifier: Apache-2.0
/*
 * bench_backend: the origin server of the benchmark harness. One thread, one
 * epoll loop, built to stay out of the way of the proxy being measured.
 *
 *   bench_backend --h2 PORT [--h1 PORT] [--echo PORT]
 *                 [--unary-size BYTES] [--stream-messages N] [--stream-size BYTES]
 *
 * --h2    h2c (prior knowledge) on nghttp2:
 *           POST .../Stream  gRPC server streaming: N messages of --stream-size
 *                            bytes (default 4 x 1 MiB), then trailers grpc-status: 0
 *           POST anything    gRPC unary: one --unary-size message (default 16
 *                            bytes), then trailers grpc-status: 0
 *           GET  anything    200 "hello, world\n" (no trailers)
 *         Responses start once the request has ended (END_STREAM).
 * --h1    HTTP/1.1 keep-alive responder: every request (a header block without
 *         a body) gets 200 "hello, world\n"; pipelining works; `Connection:
 *         close` closes after the answer.
 * --echo  raw TCP echo (for the ping-pong latency test).
 *
 * Prints "ready" on stdout once every port is bound. SIGTERM/SIGINT: exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

enum kind { K_LISTEN_H2, K_LISTEN_H1, K_LISTEN_ECHO, K_H2, K_H1, K_ECHO };

struct conn {
    enum kind kind;
    int fd;
    bool want_out;            /* EPOLLOUT armed */
    bool close_after_write;   /* h1: Connection: close seen */
    nghttp2_session *h2;
    char *out;                /* pending output */
    size_t out_len, out_off, out_cap;
    char *in;                 /* h1: unparsed input */
    size_t in_len, in_cap;
};

enum rkind { R_UNARY, R_STREAM, R_GET };

struct stream {
    enum rkind rkind;
    bool is_post;
    bool is_stream_path;
    uint64_t sent, total;     /* response body bytes */
};

static size_t unary_size = 16;
static size_t stream_messages = 4;
static size_t stream_size = 1 << 20;
static int epfd;
static volatile sig_atomic_t stop;
static unsigned char *unary_msg; /* 5-byte prefix + payload */
static size_t unary_msg_len;
static const char get_body[] = "hello, world\n";
static const char h1_response[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";

#define OUT_HIGH (256 * 1024)
#define READ_CHUNK (64 * 1024)

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void on_signal(int sig) { stop = 1; }

static void set_events(struct conn *c, bool out)
{
    if (c->want_out == out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl mod");
    c->want_out = out;
}

static void conn_free(struct conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->h2)
        nghttp2_session_del(c->h2);
    free(c->out);
    free(c->in);
    free(c);
}

static void out_append(struct conn *c, const void *p, size_t n)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) { /* compact first */
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 16384;
            while (cap < c->out_len + n)
                cap *= 2;
            c->out = realloc(c->out, cap);
            if (!c->out)
                die("realloc");
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* Write what is pending. Returns -1 on a dead socket. */
static int out_write(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

/* ---- HTTP/2 ------------------------------------------------------------- */

static ssize_t body_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    struct stream *st = src->ptr;
    size_t n = 0;
    if (st->rkind == R_UNARY) {
        n = unary_msg_len - st->sent;
        if (n > len)
            n = len;
        memcpy(buf, unary_msg + st->sent, n);
    } else if (st->rkind == R_GET) {
        n = sizeof(get_body) - 1 - st->sent;
        if (n > len)
            n = len;
        memcpy(buf, get_body + st->sent, n);
    } else {
        /* N messages, each a 5-byte gRPC prefix and stream_size bytes. */
        uint64_t msg = stream_size + 5;
        while (n < len && st->sent + n < st->total) {
            uint64_t pos = (st->sent + n) % msg;
            if (pos < 5) {
                uint8_t hdr[5] = {0, (uint8_t)(stream_size >> 24), (uint8_t)(stream_size >> 16),
                                  (uint8_t)(stream_size >> 8), (uint8_t)stream_size};
                buf[n++] = hdr[pos];
            } else {
                size_t k = (size_t)(msg - pos);
                if (k > len - n)
                    k = len - n;
                memset(buf + n, 'x', k);
                n += k;
            }
        }
    }
    st->sent += n;
    if (st->sent >= st->total) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->rkind != R_GET) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            static const nghttp2_nv trailers[] = {
                {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE},
            };
            if (nghttp2_submit_trailer(s, sid, trailers, 1) != 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    return (ssize_t)n;
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}

static int respond(nghttp2_session *s, int32_t sid, struct stream *st)
{
    static const nghttp2_nv grpc_hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    static const nghttp2_nv get_hdrs[] = {NV(":status", "200"), NV("content-type", "text/plain")};
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_read};
    if (!st->is_post) {
        st->rkind = R_GET;
        st->total = sizeof(get_body) - 1;
        return nghttp2_submit_response(s, sid, get_hdrs, 2, &prd);
    }
    if (st->is_stream_path) {
        st->rkind = R_STREAM;
        st->total = (uint64_t)stream_messages * (stream_size + 5);
    } else {
        st->rkind = R_UNARY;
        st->total = unary_msg_len;
    }
    return nghttp2_submit_response(s, sid, grpc_hdrs, 2, &prd);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct stream *st = calloc(1, sizeof(*st));
    if (!st)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st)
        return 0;
    if (namelen == 7 && memcmp(name, ":method", 7) == 0)
        st->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
        st->is_stream_path = valuelen >= 7 && memcmp(value + valuelen - 7, "/Stream", 7) == 0;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (st && respond(s, f->hd.stream_id, st) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud)
{
    free(nghttp2_session_get_stream_user_data(s, sid));
    nghttp2_session_set_stream_user_data(s, sid, NULL);
    return 0;
}

static nghttp2_session_callbacks *h2_callbacks;
static nghttp2_option *h2_option;

static int h2_init(struct conn *c)
{
    if (nghttp2_session_server_new2(&c->h2, h2_callbacks, c, h2_option) != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 4096},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0)
        return -1;
    /* The connection window too, so request bodies never wait on us. */
    return nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
}

/* Move nghttp2's output into c->out (up to OUT_HIGH) and write it. */
static int h2_flush(struct conn *c)
{
    for (;;) {
        while (c->out_len - c->out_off < OUT_HIGH) {
            const uint8_t *p;
            ssize_t n = nghttp2_session_mem_send(c->h2, &p);
            if (n < 0)
                return -1;
            if (n == 0)
                break;
            out_append(c, p, (size_t)n);
        }
        size_t before = c->out_len - c->out_off;
        if (before == 0)
            break;
        if (out_write(c) < 0)
            return -1;
        if (c->out_len - c->out_off > 0)
            break; /* socket full */
    }
    set_events(c, c->out_len > c->out_off);
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) && c->out_len == c->out_off)
        return -1;
    return 0;
}

static int h2_on_readable(struct conn *c)
{
    static uint8_t buf[READ_CHUNK];
    for (int i = 0; i < 16; i++) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -1;
        }
        if (n == 0)
            return -1;
        if (nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0)
            return -1;
        if ((size_t)n < sizeof(buf))
            break;
    }
    return h2_flush(c);
}

/* ---- HTTP/1.1 ----------------------------------------------------------- */

static int h1_on_readable(struct conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            if (c->in_cap >= (1 << 20))
                return -1; /* a header block that never ends */
            c->in_cap = c->in_cap ? c->in_cap * 2 : 16384;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in)
                die("realloc");
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -1;
        }
        if (n == 0)
            return -1;
        c->in_len += (size_t)n;
        if (c->in_len < c->in_cap)
            break;
    }
    size_t off = 0;
    for (;;) {
        char *end = memmem(c->in + off, c->in_len - off, "\r\n\r\n", 4);
        if (!end)
            break;
        size_t hlen = (size_t)(end - (c->in + off)) + 4;
        /* Connection: close (case-insensitive, good enough for the proxies' requests). */
        for (size_t i = off; i + 17 <= off + hlen; i++) {
            if ((c->in[i] == '\n') && strncasecmp(c->in + i + 1, "connection: close", 17) == 0)
                c->close_after_write = true;
        }
        out_append(c, h1_response, sizeof(h1_response) - 1);
        off += hlen;
        if (c->close_after_write)
            break;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    if (out_write(c) < 0)
        return -1;
    if (c->close_after_write && c->out_len == c->out_off)
        return -1;
    set_events(c, c->out_len > c->out_off);
    return 0;
}

/* ---- echo --------------------------------------------------------------- */

static int echo_on_event(struct conn *c)
{
    static char buf[READ_CHUNK];
    if (out_write(c) < 0)
        return -1;
    if (c->out_len > c->out_off) { /* still blocked: stop reading (backpressure) */
        set_events(c, true);
        return 0;
    }
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -1;
        }
        if (n == 0)
            return -1;
        ssize_t w = write(c->fd, buf, (size_t)n);
        if (w < 0) {
            if (errno != EAGAIN)
                return -1;
            w = 0;
        }
        if (w < n) {
            out_append(c, buf + w, (size_t)(n - w));
            set_events(c, true);
            return 0;
        }
    }
    set_events(c, false);
    return 0;
}

/* ---- sockets and loop ---------------------------------------------------- */

static void add_fd(int fd, enum kind kind)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        die("calloc");
    c->fd = fd;
    c->kind = kind;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (kind == K_H2 && h2_init(c) != 0) {
        fprintf(stderr, "bench_backend: nghttp2 session setup failed\n");
        close(fd);
        free(c);
        return;
    }
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl add");
    if (kind == K_H2 && h2_flush(c) < 0) /* our SETTINGS */
        conn_free(c);
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "bench_backend: bind 127.0.0.1:%d: %s\n", port, strerror(errno));
        exit(1);
    }
    if (listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static void on_accept(struct conn *l)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != ECONNABORTED)
                perror("bench_backend: accept");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        add_fd(fd, l->kind == K_LISTEN_H2 ? K_H2 : l->kind == K_LISTEN_H1 ? K_H1 : K_ECHO);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_backend --h2 PORT [--h1 PORT] [--echo PORT] [--unary-size BYTES]\n"
                    "                     [--stream-messages N] [--stream-size BYTES]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int h2_port = 0, h1_port = 0, echo_port = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        long v = strtol(argv[i + 1], NULL, 10);
        if (strcmp(argv[i], "--h2") == 0) h2_port = (int)v;
        else if (strcmp(argv[i], "--h1") == 0) h1_port = (int)v;
        else if (strcmp(argv[i], "--echo") == 0) echo_port = (int)v;
        else if (strcmp(argv[i], "--unary-size") == 0) unary_size = (size_t)v;
        else if (strcmp(argv[i], "--stream-messages") == 0) stream_messages = (size_t)v;
        else if (strcmp(argv[i], "--stream-size") == 0) stream_size = (size_t)v;
        else usage();
        i++;
    }
    if (!h2_port)
        usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    unary_msg_len = 5 + unary_size;
    unary_msg = calloc(1, unary_msg_len);
    unary_msg[1] = (uint8_t)(unary_size >> 24);
    unary_msg[2] = (uint8_t)(unary_size >> 16);
    unary_msg[3] = (uint8_t)(unary_size >> 8);
    unary_msg[4] = (uint8_t)unary_size;
    memset(unary_msg + 5, 'r', unary_size);

    nghttp2_session_callbacks_new(&h2_callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(h2_callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(h2_callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(h2_callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2_callbacks, on_stream_close);
    nghttp2_option_new(&h2_option);
    nghttp2_option_set_no_http_messaging(h2_option, 0);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    int ports[3] = {h2_port, h1_port, echo_port};
    enum kind kinds[3] = {K_LISTEN_H2, K_LISTEN_H1, K_LISTEN_ECHO};
    for (int i = 0; i < 3; i++) {
        if (!ports[i])
            continue;
        struct conn *l = calloc(1, sizeof(*l));
        l->fd = listen_on(ports[i]);
        l->kind = kinds[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
            die("epoll_ctl listen");
    }
    printf("ready\n");
    fflush(stdout);

    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(epfd, evs, 256, 1000);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            int rc = 0;
            uint32_t e = evs[i].events;
            switch (c->kind) {
            case K_LISTEN_H2:
            case K_LISTEN_H1:
            case K_LISTEN_ECHO:
                on_accept(c);
                continue;
            case K_H2:
                if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
                    rc = h2_on_readable(c);
                else
                    rc = out_write(c) < 0 ? -1 : h2_flush(c);
                break;
            case K_H1:
                if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                    rc = h1_on_readable(c);
                } else {
                    rc = out_write(c);
                    if (rc == 0 && c->close_after_write && c->out_len == c->out_off)
                        rc = -1;
                    else if (rc == 0)
                        set_events(c, c->out_len > c->out_off);
                }
                break;
            case K_ECHO:
                rc = echo_on_event(c);
                break;
            }
            if (rc < 0)
                conn_free(c);
        }
    }
    return 0;
}
