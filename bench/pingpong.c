// SPDX-License-Identifier: Apache-2.0
/*
 * bench_pingpong: TCP round-trip latency over one connection.
 *
 *   bench_pingpong HOST PORT SECONDS [SIZE] [WARMUP_SECONDS]
 *
 * Writes SIZE bytes (default 64), reads the SIZE bytes echoed back, again and
 * again for SECONDS (after WARMUP_SECONDS, default 0.3, not recorded). Prints
 * one JSON line: {"n":..,"rps":..,"p50_us":..,"p99_us":..,"p999_us":..,"mean_us":..}.
 * Exit 1 if the connection fails or breaks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_pingpong HOST PORT SECONDS [SIZE] [WARMUP_SECONDS]\n");
        return 2;
    }
    double secs = atof(argv[3]);
    size_t size = argc > 4 ? (size_t)atol(argv[4]) : 64;
    double warm = argc > 5 ? atof(argv[5]) : 0.3;
    if (size == 0 || size > 65536 || secs <= 0) {
        fprintf(stderr, "bench_pingpong: bad SECONDS or SIZE\n");
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "bench_pingpong: bad address %s\n", argv[1]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("bench_pingpong: connect");
        return 1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    char *buf = malloc(size), *rbuf = malloc(size);
    memset(buf, 'p', size);
    size_t cap = 1 << 20, n = 0;
    uint64_t *lat = malloc(cap * sizeof(*lat));
    uint64_t start = now_ns(), rec_from = start + (uint64_t)(warm * 1e9);
    uint64_t end = rec_from + (uint64_t)(secs * 1e9);
    for (;;) {
        uint64_t t0 = now_ns();
        if (t0 >= end)
            break;
        if (write(fd, buf, size) != (ssize_t)size) {
            perror("bench_pingpong: write");
            return 1;
        }
        size_t got = 0;
        while (got < size) {
            ssize_t r = read(fd, rbuf + got, size - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                fprintf(stderr, "bench_pingpong: read: %s\n", r == 0 ? "connection closed" : strerror(errno));
                return 1;
            }
            got += (size_t)r;
        }
        uint64_t t1 = now_ns();
        if (t0 < rec_from)
            continue;
        if (n == cap) {
            cap *= 2;
            lat = realloc(lat, cap * sizeof(*lat));
            if (!lat)
                return 1;
        }
        lat[n++] = t1 - t0;
    }
    close(fd);
    if (n == 0) {
        fprintf(stderr, "bench_pingpong: no round trip completed\n");
        return 1;
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)lat[i];
    qsort(lat, n, sizeof(*lat), cmp_u64);
    printf("{\"n\":%zu,\"rps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"mean_us\":%.1f}\n", n,
           (double)n / secs, pct(lat, n, 0.50), pct(lat, n, 0.99), pct(lat, n, 0.999), sum / (double)n / 1000.0);
    return 0;
}
