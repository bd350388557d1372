/* SPDX-License-Identifier: Apache-2.0 */
#include "loop/worker.h"

#include "codec/tcp_proxy.h"
#include "core/err.h"
#include "core/log.h"
#include "net/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void stop_accepting(struct md_worker *w)
{
    for (size_t i = 0; i < w->snap->n_listeners; i++)
        if (w->listeners[i])
            md_listener_close(w->listeners[i]);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct md_worker *w = MD_CONTAINER_OF(a, struct md_worker, wake);
    unsigned cmd = __atomic_exchange_n(&w->cmd, 0, __ATOMIC_ACQ_REL);
    if (cmd & (MD_WORKER_CMD_STOP_ACCEPT | MD_WORKER_CMD_EXIT))
        stop_accepting(w);
    if (cmd & (MD_WORKER_CMD_CLOSE_ALL | MD_WORKER_CMD_EXIT))
        md_tcp_proxy_close_all(w);
    if (cmd & MD_WORKER_CMD_EXIT)
        ev_break(loop, EVBREAK_ALL);
}

int md_worker_init(struct md_worker *w, int id, struct md_snapshot *snap)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->reserve_fd = -1;
    md_list_init(&w->sessions);
    w->snap = md_snapshot_ref(snap);
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    w->stats = md_stats_new(snap->n_listeners, snap->n_clusters);
    w->listeners = calloc(snap->n_listeners + 1, sizeof(*w->listeners));
    w->rr_cursor = calloc(snap->n_clusters + 1, sizeof(*w->rr_cursor));
    if (!w->loop || !w->stats || !w->listeners || !w->rr_cursor)
        return MD_ENOMEM;
    for (size_t i = 0; i < snap->n_clusters; i++) /* workers start on different endpoints */
        w->rr_cursor[i] =
            (uint32_t)((size_t)id %
                       (snap->clusters[i].n_endpoints ? snap->clusters[i].n_endpoints : 1));
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ev_async_init(&w->wake, on_wake);
    ev_async_start(w->loop, &w->wake);
    for (size_t i = 0; i < snap->n_listeners; i++) {
        int err;
        w->listeners[i] = md_listener_new(w, &snap->listeners[i], &err);
        if (!w->listeners[i])
            return err;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct md_worker *w = arg;
    for (size_t i = 0; i < w->snap->n_listeners; i++)
        md_listener_start(w->listeners[i]);
    ev_run(w->loop, 0);
    return NULL;
}

int md_worker_start(struct md_worker *w)
{
    /* Signals belong to the control thread: workers start with them blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -rc;
    w->thread_started = true;
    return 0;
}

void md_worker_post(struct md_worker *w, unsigned cmd)
{
    __atomic_or_fetch(&w->cmd, cmd, __ATOMIC_ACQ_REL);
    ev_async_send(w->loop, &w->wake);
}

uint64_t md_worker_active(const struct md_worker *w)
{
    return __atomic_load_n(&w->active, __ATOMIC_RELAXED);
}

void md_worker_fini(struct md_worker *w)
{
    if (w->thread_started) {
        md_worker_post(w, MD_WORKER_CMD_EXIT);
        pthread_join(w->thread, NULL);
        w->thread_started = false;
    } else if (w->loop) {
        md_tcp_proxy_close_all(w);
    }
    if (w->listeners)
        for (size_t i = 0; i < w->snap->n_listeners; i++)
            md_listener_free(w->listeners[i]);
    for (int i = 0; i < w->n_pipes; i++) {
        close(w->pipes[i][0]);
        close(w->pipes[i][1]);
    }
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
    if (w->loop) {
        ev_async_stop(w->loop, &w->wake);
        ev_loop_destroy(w->loop);
    }
    free(w->listeners);
    free(w->rr_cursor);
    md_stats_free(w->stats);
    md_snapshot_unref(w->snap);
    memset(w, 0, sizeof(*w));
}

int md_worker_pipe_get(struct md_worker *w, int p[2], size_t want)
{
    if (w->n_pipes > 0) {
        w->n_pipes--;
        p[0] = w->pipes[w->n_pipes][0];
        p[1] = w->pipes[w->n_pipes][1];
    } else if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        return -errno;
    }
    int cap = fcntl(p[1], F_GETPIPE_SZ);
    if (cap >= 0 && (size_t)cap < want) {
        /* May fail past /proc/sys/fs/pipe-max-size: then the smaller pipe is
         * the limit for this direction. */
        int got = fcntl(p[1], F_SETPIPE_SZ, (int)want);
        if (got > 0)
            cap = got;
    }
    if (cap < 0) {
        int err = -errno;
        close(p[0]);
        close(p[1]);
        return err;
    }
    return cap;
}

void md_worker_pipe_put(struct md_worker *w, int p[2])
{
    if (w->n_pipes < MD_WORKER_PIPE_CACHE) {
        w->pipes[w->n_pipes][0] = p[0];
        w->pipes[w->n_pipes][1] = p[1];
        w->n_pipes++;
        return;
    }
    close(p[0]);
    close(p[1]);
}
