/* SPDX-License-Identifier: Apache-2.0 */
/* Reset detection for sockets nobody is reading: a TCP proxy side paused by
 * backpressure, or half-closed, still has to notice an RST at once so that
 * it can be passed on. libev drops error events for an fd with no active
 * watcher, so each worker keeps one extra epoll set, edge-triggered and
 * asking for no events: only EPOLLERR/EPOLLHUP ever arrive. */
#ifndef MESHD_NET_ERRWATCH_H
#define MESHD_NET_ERRWATCH_H

#include <ev.h>
#include <stdint.h>

struct md_errwatch;
/* |events| are EPOLLERR / EPOLLHUP bits. The callback may close fds and free
 * other md_errwatch entries: events are taken one at a time. */
typedef void md_errwatch_cb(struct md_errwatch *ew, uint32_t events);

/* Embedded in the owner of the watched socket. */
struct md_errwatch {
    md_errwatch_cb *cb;
};

struct md_errwatch_set {
    int epfd;
    ev_io io;
};

/* Returns 0 or -errno. */
int md_errwatch_set_init(struct md_errwatch_set *set, struct ev_loop *loop);
void md_errwatch_set_fini(struct md_errwatch_set *set, struct ev_loop *loop);

/* Watches |fd| until it is closed (closing removes it). Returns 0 or -errno. */
int md_errwatch_add(struct md_errwatch_set *set, int fd, struct md_errwatch *ew,
                    md_errwatch_cb *cb);

#endif
