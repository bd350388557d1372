/* SPDX-License-Identifier: Apache-2.0 */
#include "net/acceptor.h"

#include "core/addr.h"
#include "core/list.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPTS_PER_WAKEUP 64
#define EXHAUSTED_PAUSE_S 0.1
#define RESERVE_MIN 8
#define RESERVE_MAX 256

/* Descriptors from this number up are the reserve. */
static int fd_ceiling = INT_MAX;

void md_acceptor_reserve_init(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT_MAX)
        return;
    long lim = (long)rl.rlim_cur, reserve = lim / 16;
    reserve = reserve < RESERVE_MIN ? RESERVE_MIN : reserve > RESERVE_MAX ? RESERVE_MAX : reserve;
    fd_ceiling = (int)(lim > reserve ? lim - reserve : 0);
}

bool md_acceptor_fds_short(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the lowest free number */
    if (fd < 0)
        return errno == EMFILE || errno == ENFILE;
    close(fd);
    return fd >= fd_ceiling;
}

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

/* Accepting again at once would spin on the same error. */
static void pause_accepting(struct md_acceptor *a, int err)
{
    a->on_exhausted(a, -err);
    ev_io_stop(a->loop, &a->io);
    ev_timer_set(&a->pause, EXHAUSTED_PAUSE_S, 0.);
    ev_timer_start(a->loop, &a->pause);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    struct md_acceptor *a = MD_CONTAINER_OF(io, struct md_acceptor, io);
    for (int i = 0; i < ACCEPTS_PER_WAKEUP && a->fd >= 0; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0 && a->keep_reserve && fd >= fd_ceiling) {
            md_sock_close_reset(fd); /* in the reserve: turned away at once */
            pause_accepting(a, EMFILE);
            return;
        }
        if (fd >= 0) {
            a->on_conn(a, fd);
            continue;
        }
        int err = errno;
        if (err == EINTR || err == ECONNABORTED)
            continue;
        if (err == EAGAIN)
            return;
        /* EMFILE, ENFILE, ENOBUFS, ENOMEM, or anything unexpected */
        if (err == EMFILE || err == ENFILE)
            shed_one(a);
        pause_accepting(a, err);
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
