/* SPDX-License-Identifier: Apache-2.0 */
#include "net/errwatch.h"

#include "core/list.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EVENTS_PER_WAKEUP 64

static void on_ready(struct ev_loop *loop, ev_io *io, int revents)
{
    struct md_errwatch_set *set = MD_CONTAINER_OF(io, struct md_errwatch_set, io);
    /* One event per epoll_wait: a callback may close other watched fds, and
     * events already fetched for them would point at freed owners. */
    for (int i = 0; i < EVENTS_PER_WAKEUP; i++) {
        struct epoll_event ev;
        int n = epoll_wait(set->epfd, &ev, 1, 0);
        if (n <= 0)
            return;
        struct md_errwatch *ew = ev.data.ptr;
        ew->cb(ew, ev.events);
    }
}

int md_errwatch_set_init(struct md_errwatch_set *set, struct ev_loop *loop)
{
    set->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (set->epfd < 0)
        return -errno;
    ev_io_init(&set->io, on_ready, set->epfd, EV_READ);
    ev_io_start(loop, &set->io);
    return 0;
}

void md_errwatch_set_fini(struct md_errwatch_set *set, struct ev_loop *loop)
{
    if (set->epfd < 0)
        return;
    ev_io_stop(loop, &set->io);
    close(set->epfd);
    set->epfd = -1;
}

int md_errwatch_add(struct md_errwatch_set *set, int fd, struct md_errwatch *ew, md_errwatch_cb *cb)
{
    ew->cb = cb;
    struct epoll_event ev = {.events = EPOLLET, .data.ptr = ew};
    return epoll_ctl(set->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}
