// SPDX-License-Identifier: Apache-2.0
/*
 * bench_idleconns: open many idle HTTP/2 (h2c) connections to a proxy, for
 * the per-connection memory figure.
 *
 *   bench_idleconns HOST PORT N [TIMEOUT_SECONDS]
 *
 * Each connection sends the client preface and an empty SETTINGS frame, waits
 * for the server's SETTINGS, acknowledges it, and then stays open doing
 * nothing (a PING from the server is answered). At most 256 connects are in
 * flight at a time. Once all N are established, prints "ready N" on stdout;
 * then idles until its stdin closes (or SIGTERM), closes everything (with a
 * reset, so no TIME_WAIT is left), prints
 * "closed lost=K" (K: connections the server closed meanwhile) and exits 0.
 * Exit 1 if not all N could be established within TIMEOUT_SECONDS (default 60).
 * Raises its own RLIMIT_NOFILE as needed (as root past the hard limit).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define INFLIGHT 256

enum state { CONNECTING, WAIT_SETTINGS, IDLE, DEAD };

struct conn {
    int fd;
    enum state st;
    uint8_t hdr[9];   /* frame header being read */
    size_t hdr_got;
    uint32_t skip;    /* payload bytes left of the current frame */
    uint8_t ping[8];
    size_t ping_got;
    bool in_ping;
};

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                              "\x00\x00\x00\x04\x00\x00\x00\x00\x00"; /* + empty SETTINGS */
static const uint8_t settings_ack[9] = {0, 0, 0, 4, 1, 0, 0, 0, 0};
static volatile sig_atomic_t stop;

static void on_signal(int s) { stop = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Parse frames; returns -1 if the connection is dead. */
static int on_readable(struct conn *c, int *established)
{
    uint8_t buf[4096];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        if (n == 0)
            return -1;
        for (ssize_t i = 0; i < n;) {
            if (c->skip) {
                size_t k = (size_t)(n - i) < c->skip ? (size_t)(n - i) : c->skip;
                if (c->in_ping) {
                    for (size_t j = 0; j < k && c->ping_got < 8; j++)
                        c->ping[c->ping_got++] = buf[i + (ssize_t)j];
                }
                c->skip -= (uint32_t)k;
                i += (ssize_t)k;
                if (c->skip == 0 && c->in_ping) {
                    uint8_t pong[17] = {0, 0, 8, 6, 1, 0, 0, 0, 0};
                    memcpy(pong + 9, c->ping, 8);
                    if (write(c->fd, pong, sizeof(pong)) != sizeof(pong))
                        return -1;
                    c->in_ping = false;
                }
                continue;
            }
            c->hdr[c->hdr_got++] = buf[i++];
            if (c->hdr_got < 9)
                continue;
            c->hdr_got = 0;
            uint32_t len = (uint32_t)c->hdr[0] << 16 | (uint32_t)c->hdr[1] << 8 | c->hdr[2];
            uint8_t type = c->hdr[3], flags = c->hdr[4];
            if (type == 4 && !(flags & 1)) { /* SETTINGS, not an ACK */
                if (write(c->fd, settings_ack, 9) != 9)
                    return -1;
                if (c->st == WAIT_SETTINGS) {
                    c->st = IDLE;
                    (*established)++;
                }
            } else if (type == 6 && !(flags & 1) && len == 8) { /* PING */
                c->in_ping = true;
                c->ping_got = 0;
            } else if (type == 7) { /* GOAWAY */
                return -1;
            }
            c->skip = len;
            if (len == 0 && c->in_ping)
                c->in_ping = false;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_idleconns HOST PORT N [TIMEOUT_SECONDS]\n");
        return 2;
    }
    int want = atoi(argv[3]);
    double timeout = argc > 4 ? atof(argv[4]) : 60;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 || want <= 0) {
        fprintf(stderr, "bench_idleconns: bad arguments\n");
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = (rlim_t)want + 64;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = need;
        if (rl.rlim_max < need)
            rl.rlim_max = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            perror("bench_idleconns: setrlimit(RLIMIT_NOFILE)");
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sig = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sig, NULL);
    sigaction(SIGINT, &sig, NULL);

    int ep = epoll_create1(0);
    struct conn *conns = calloc((size_t)want, sizeof(*conns));
    int started = 0, inflight = 0, established = 0, lost = 0;
    double deadline = now_s() + timeout;
    bool announced = false;
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = NULL};
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev); /* stdin: EOF means stop */

    struct epoll_event evs[512];
    while (!stop) {
        while (started < want && inflight < INFLIGHT) {
            struct conn *c = &conns[started++];
            c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (c->fd < 0) {
                perror("bench_idleconns: socket");
                return 1;
            }
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
                perror("bench_idleconns: connect");
                return 1;
            }
            c->st = CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            inflight++;
        }
        if (!announced && established + lost >= want) {
            if (lost) {
                fprintf(stderr, "bench_idleconns: %d of %d connections were closed by the server\n", lost, want);
                return 1;
            }
            printf("ready %d\n", established);
            fflush(stdout);
            announced = true;
        }
        if (!announced && now_s() > deadline) {
            fprintf(stderr, "bench_idleconns: only %d of %d established after %.0fs\n", established, want, timeout);
            return 1;
        }
        int n = epoll_wait(ep, evs, 512, 200);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) { /* stdin */
                char b[256];
                ssize_t r = read(0, b, sizeof(b));
                if (r == 0 || (r < 0 && errno != EAGAIN))
                    stop = 1;
                continue;
            }
            if (c->st == DEAD)
                continue;
            bool dead = false;
            if (c->st == CONNECTING && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int err = 0;
                socklen_t l = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err || write(c->fd, preface, sizeof(preface) - 1) != (ssize_t)(sizeof(preface) - 1)) {
                    dead = true;
                } else {
                    c->st = WAIT_SETTINGS;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!dead && c->st != CONNECTING && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
                enum state before = c->st;
                dead = on_readable(c, &established) < 0;
                if (before == WAIT_SETTINGS && c->st == IDLE)
                    inflight--;
            }
            if (dead) {
                if (c->st == CONNECTING || c->st == WAIT_SETTINGS)
                    inflight--;
                if (c->st == IDLE)
                    established--;
                c->st = DEAD;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                lost++;
            }
        }
    }
    /* Close with RST (linger 0): no TIME_WAIT left behind for the next run. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < started; i++) {
        if (conns[i].st != DEAD) {
            setsockopt(conns[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(conns[i].fd);
        }
    }
    printf("closed lost=%d\n", lost);
    return 0;
}
