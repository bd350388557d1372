/* SPDX-License-Identifier: Apache-2.0 */
/* The accept loop every listening socket shares (proxy listeners and admin):
 * drain the backlog in bounded batches, and survive fd exhaustion: report it,
 * shed one pending connection with the reserve fd (so that client gets an
 * answer instead of waiting in the backlog), pause accepting for 100 ms, resume.
 *
 * Descriptor reserve: the top 1/16 of RLIMIT_NOFILE (8 to 256) is kept for
 * admin and for the connections already accepted (their upstream sockets).
 * An acceptor that keeps the reserve (the data plane's) turns away, as on
 * EMFILE, a connection whose descriptor falls in it. The kernel hands out
 * the lowest free number, so that one comparison says fewer than the reserve
 * are left, with no system call. */
#ifndef MESHD_NET_ACCEPTOR_H
#define MESHD_NET_ACCEPTOR_H

#include <ev.h>
#include <stdbool.h>
#include <sys/socket.h>

struct md_acceptor;

/* Takes ownership of the accepted non-blocking, close-on-exec |fd|. */
typedef void md_acceptor_conn_cb(struct md_acceptor *a, int fd);
/* Called once per exhaustion episode with the accept() error (-errno). */
typedef void md_acceptor_exhausted_cb(struct md_acceptor *a, int err);

/* Embedded in its owner; recover the owner with MD_CONTAINER_OF. */
struct md_acceptor {
    struct ev_loop *loop;
    int fd;          /* listening socket, owned */
    int *reserve_fd; /* borrowed: the owner's spare fd, or NULL */
    md_acceptor_conn_cb *on_conn;
    md_acceptor_exhausted_cb *on_exhausted;
    bool keep_reserve; /* refuse connections that would eat into the reserve */
    ev_io io;
    ev_timer pause;
};

/* Creates a listening socket on |sa| (SO_REUSEADDR, plus SO_REUSEPORT when
 * |reuseport|). Returns the fd or -errno; |*step| names the failing call. */
int md_acceptor_listen(const struct sockaddr *sa, socklen_t len, bool reuseport, int backlog,
                       const char **step);

/* Prepares |a| around the listening |fd| (taken). Does not start it. */
void md_acceptor_init(struct md_acceptor *a, struct ev_loop *loop, int fd, int *reserve_fd,
                      md_acceptor_conn_cb *on_conn, md_acceptor_exhausted_cb *on_exhausted);
void md_acceptor_start(struct md_acceptor *a);
/* Stops accepting and closes the socket; idempotent. */
void md_acceptor_close(struct md_acceptor *a);

/* Sizes the reserve from RLIMIT_NOFILE; once, before any thread starts. */
void md_acceptor_reserve_init(void);
/* True while fewer descriptors than the reserve are free (or none): one
 * open and close, for admin, not the data path. */
bool md_acceptor_fds_short(void);

#endif
