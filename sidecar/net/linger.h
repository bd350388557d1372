/* SPDX-License-Identifier: Apache-2.0 */
/* The lingering close of a downstream connection we wrote to. close() on a
 * socket with unread bytes in its receive queue (a PING, a WINDOW_UPDATE, a
 * pipelined request) sends RST, and the peer's kernel then throws away the
 * response bytes it had not read yet. So: TLS close_notify, FIN, then read
 * and discard until the peer's EOF, an inactivity timeout or a total cap
 * (nginx's lingering_timeout / lingering_time), and only then close.
 *
 * One set per worker (one list, one timer per socket). Past the cap on
 * sockets the set holds, a socket is closed at once, as before. At exit the
 * worker gives the sockets still lingering MD_LINGER_EXIT_S more at most. */
#ifndef MESHD_NET_LINGER_H
#define MESHD_NET_LINGER_H

#include "core/list.h"
#include "net/sock.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#define MD_LINGER_TIMEOUT_S 5.0 /* no byte from the peer for this long: close */
#define MD_LINGER_TIME_S 30.0   /* at most this long in all */
#define MD_LINGER_EXIT_S 5.0    /* at exit, at most this much longer */
#define MD_LINGER_MAX 1024      /* sockets lingering per worker */

struct md_linger_set {
    struct ev_loop *loop; /* borrowed */
    struct md_list socks; /* struct lsock entries (linger.c) */
    size_t n;             /* atomic (read by the control thread) */
    size_t max;           /* 0: every close is immediate */
    ev_tstamp exit_by;    /* 0, or when the last socket is closed at exit */
    /* called once the set is empty after md_linger_exit; may be NULL */
    void (*on_empty)(struct md_linger_set *ls);
};

void md_linger_init(struct md_linger_set *ls, struct ev_loop *loop, size_t max);

/* Closes |s| (taken: s->fd is -1 and its TLS state and identities freed on
 * return): with RST at once when |reset|; otherwise lingering as above. The
 * caller has written all it meant to and stopped its watchers on the fd. */
void md_linger_close(struct md_linger_set *ls, struct md_sock *s, bool reset);

/* Sockets lingering now; safe from any thread. */
size_t md_linger_count(const struct md_linger_set *ls);

/* The process is exiting: every socket gets at most |within| seconds more,
 * and new ones as long; |on_empty| runs when the last one is closed (at
 * once, from this call, if none is left). |within| 0 closes them all now. */
void md_linger_exit(struct md_linger_set *ls, double within,
                    void (*on_empty)(struct md_linger_set *ls));

/* Closes every lingering socket now. */
void md_linger_fini(struct md_linger_set *ls);

#endif
