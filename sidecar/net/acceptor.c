/* SPDX-License-Identifier: Apache-2.0 */
#include "net/acceptor.h"

#include "core/addr.h"
#include "core/list.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPTS_PER_WAKEUP 64
#define EXHAUSTED_PAUSE_S 0.1

int md_acceptor_listen(const struct sockaddr *sa, socklen_t len, bool reuseport, int backlog,
                       const char **step)
{
    int one = 1;
    *step = "socket";
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    *step = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
        (!reuseport || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0)) {
        *step = "bind";
        if (bind(fd, sa, len) == 0) {
            *step = "listen";
            if (listen(fd, backlog) == 0)
                return fd;
        }
    }
    int err = -errno;
    close(fd);
    return err;
}

static void shed_one(struct md_acceptor *a)
{
    if (!a->reserve_fd || *a->reserve_fd < 0)
        return;
    close(*a->reserve_fd);
    int fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
        md_sock_close_reset(fd);
    *a->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_pause_end(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_acceptor *a = MD_CONTAINER_OF(t, struct md_acceptor, pause);
    if (a->fd >= 0)
        ev_io_start(loop, &a->io);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    struct md_acceptor *a = MD_CONTAINER_OF(io, struct md_acceptor, io);
    for (int i = 0; i < ACCEPTS_PER_WAKEUP && a->fd >= 0; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            a->on_conn(a, fd);
            continue;
        }
        int err = errno;
        if (err == EINTR || err == ECONNABORTED)
            continue;
        if (err == EAGAIN)
            return;
        /* EMFILE, ENFILE, ENOBUFS, ENOMEM, or anything unexpected: accepting
         * again at once would spin on the same error. */
        a->on_exhausted(a, -err);
        if (err == EMFILE || err == ENFILE)
            shed_one(a);
        ev_io_stop(loop, &a->io);
        ev_timer_set(&a->pause, EXHAUSTED_PAUSE_S, 0.);
        ev_timer_start(loop, &a->pause);
        return;
    }
}

void md_acceptor_init(struct md_acceptor *a, struct ev_loop *loop, int fd, int *reserve_fd,
                      md_acceptor_conn_cb *on_conn, md_acceptor_exhausted_cb *on_exhausted)
{
    a->loop = loop;
    a->fd = fd;
    a->reserve_fd = reserve_fd;
    a->on_conn = on_conn;
    a->on_exhausted = on_exhausted;
    ev_io_init(&a->io, on_readable, fd, EV_READ);
    ev_init(&a->pause, on_pause_end);
}

void md_acceptor_start(struct md_acceptor *a)
{
    if (a->fd >= 0)
        ev_io_start(a->loop, &a->io);
}

void md_acceptor_close(struct md_acceptor *a)
{
    if (a->fd < 0)
        return;
    ev_io_stop(a->loop, &a->io);
    ev_timer_stop(a->loop, &a->pause);
    close(a->fd);
    a->fd = -1;
}
