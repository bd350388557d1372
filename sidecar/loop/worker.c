/* SPDX-License-Identifier: Apache-2.0 */
#include "loop/worker.h"

#include "codec/h1_server.h"
#include "codec/h2_server.h"
#include "net/detect.h"
#include "net/tls_accept.h"
#include "codec/tcp_proxy.h"
#include "core/err.h"
#include "core/hash.h"
#include "core/log.h"
#include "net/listener.h"
#include "upstream/upool.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void stop_accepting(struct md_worker *w)
{
    for (size_t i = 0; i < w->snap->n_listeners; i++)
        if (w->listeners[i])
            md_listener_close(w->listeners[i]);
}

static void close_connections(struct md_worker *w)
{
    md_detect_close_all(w);
    md_tls_accept_close_all(w);
    md_tcp_proxy_close_all(w);
    md_h2_server_close_all(w);
    md_h1_server_close_all(w);
}

/* Switches the balancers to the sets the control thread posted. */
static void take_epsets(struct md_worker *w)
{
    for (size_t i = 0; i < w->snap->n_clusters; i++) {
        struct md_epset *set = __atomic_exchange_n(&w->epset_next[i], NULL, __ATOMIC_ACQ_REL);
        if (!set)
            continue;
        if (md_lb_set(&w->lbs[i], set) < 0)
            MD_LOG(MD_LOG_ERROR, "out_of_memory", "worker=%d what=endpoint_set cluster=%s", w->id,
                   w->snap->clusters[i].name);
        md_epset_unref(set);
    }
}

/* At exit the loop runs on until the last lingering socket is closed. */
static void on_linger_empty(struct md_linger_set *ls)
{
    ev_break(ls->loop, EVBREAK_ALL);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct md_worker *w = MD_CONTAINER_OF(a, struct md_worker, wake);
    take_epsets(w);
    unsigned cmd = __atomic_exchange_n(&w->cmd, 0, __ATOMIC_ACQ_REL);
    if (cmd & (MD_WORKER_CMD_STOP_ACCEPT | MD_WORKER_CMD_EXIT))
        stop_accepting(w);
    if (cmd & (MD_WORKER_CMD_STOP_ACCEPT | MD_WORKER_CMD_EXIT)) {
        md_h2_server_drain_all(w);
        md_h1_server_drain_all(w);
    }
    if (cmd & (MD_WORKER_CMD_CLOSE_ALL | MD_WORKER_CMD_EXIT))
        close_connections(w);
    if (cmd & (MD_WORKER_CMD_EXIT | MD_WORKER_CMD_HURRY))
        md_linger_exit(&w->linger, cmd & MD_WORKER_CMD_HURRY ? 0 : MD_LINGER_EXIT_S,
                       on_linger_empty);
}

static void run_deferred(struct md_worker *w)
{
    /* Work may queue more work (a flush that frees a stream wakes its
     * upstream): loop until the queue stays empty. */
    while (!md_list_empty(&w->deferred)) {
        struct md_defer *d = MD_CONTAINER_OF(w->deferred.next, struct md_defer, link);
        md_list_remove(&d->link);
        d->run(d);
    }
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    run_deferred(MD_CONTAINER_OF(p, struct md_worker, prepare));
}

void md_worker_defer(struct md_worker *w, struct md_defer *d)
{
    if (md_list_empty(&d->link))
        md_list_insert_tail(&w->deferred, &d->link);
}

void md_worker_defer_cancel(struct md_defer *d)
{
    md_list_remove(&d->link);
}

uint64_t md_worker_rand(struct md_worker *w)
{
    return md_xorshift64(&w->rng);
}

/* Address space (not memory) per slot size for md_pages: 1 GiB holds 52k
 * frame buffers of 20 KiB; past that the heap serves. */
#define WORKER_PAGES_STRETCH (1ull << 30)

int md_worker_init(struct md_worker *w, int id, struct md_snapshot *snap)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->reserve_fd = -1;
    w->errwatch.epfd = -1;
    md_list_init(&w->sessions);
    md_list_init(&w->deferred);
    md_list_init(&w->h2_conns);
    md_list_init(&w->h1_conns);
    md_list_init(&w->detecting);
    md_list_init(&w->tls_accepting);
    w->snap = md_snapshot_ref(snap);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    w->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)(id + 1) << 48) ^
             (uint64_t)(uintptr_t)w;
    if (!w->rng)
        w->rng = 88172645463325252ULL;
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    w->stats =
        md_stats_new((size_t[MD_DIM__N]){snap->n_listeners, snap->n_clusters, snap->n_rbac_stats,
                                         snap->n_rate_limits, snap->n_retry_stats});
    w->listeners = calloc(snap->n_listeners + 1, sizeof(*w->listeners));
    w->lbs = calloc(snap->n_clusters + 1, sizeof(*w->lbs));
    w->epset_next = calloc(snap->n_clusters + 1, sizeof(*w->epset_next));
    w->upools = calloc(snap->n_clusters + 1, sizeof(*w->upools));
    if (!w->loop || !w->stats || !w->listeners || !w->lbs || !w->epset_next || !w->upools ||
        md_reset_flood_init(&w->reset_flood, snap->n_listeners, md_worker_rand(w)) < 0)
        return MD_ENOMEM;
    for (size_t i = 0; i < snap->n_clusters; i++) /* workers start on different endpoints */
        md_lb_init(&w->lbs[i], (uint64_t)id ^ md_worker_rand(w));
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ev_async_init(&w->wake, on_wake);
    ev_async_start(w->loop, &w->wake);
    ev_prepare_init(&w->prepare, on_prepare);
    ev_prepare_start(w->loop, &w->prepare);
    md_linger_init(&w->linger, w->loop, MD_LINGER_MAX);
    int rc = md_errwatch_set_init(&w->errwatch, w->loop);
    if (rc < 0)
        return rc;
    if (md_pages_init(&w->pages, WORKER_PAGES_STRETCH) < 0)
        MD_LOG(MD_LOG_WARN, "pages_unavailable",
               "worker=%d reason=\"no address space reserved: large HTTP/2 buffers come from "
               "the heap\"",
               id);
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

void md_worker_post_epset(struct md_worker *w, size_t idx, struct md_epset *set)
{
    struct md_epset *old =
        __atomic_exchange_n(&w->epset_next[idx], md_epset_ref(set), __ATOMIC_ACQ_REL);
    md_epset_unref(old); /* posted before and never taken: superseded */
    if (w->thread_started)
        ev_async_send(w->loop, &w->wake);
    else
        take_epsets(w);
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

uint64_t md_worker_lingering(const struct md_worker *w)
{
    return md_linger_count(&w->linger);
}

void md_worker_fini(struct md_worker *w)
{
    if (w->thread_started) {
        md_worker_post(w, MD_WORKER_CMD_EXIT);
        pthread_join(w->thread, NULL);
        w->thread_started = false;
    } else if (w->loop) {
        close_connections(w);
    }
    if (w->loop) {
        if (w->upools)
            for (size_t i = 0; i < w->snap->n_clusters; i++)
                md_upool_free(w->upools[i]);
        run_deferred(w);
        md_linger_fini(&w->linger);
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
        ev_prepare_stop(w->loop, &w->prepare);
        md_errwatch_set_fini(&w->errwatch, w->loop);
        ev_loop_destroy(w->loop);
    }
    md_outbuf_fini(&w->h2_batch);
    md_pages_fini(&w->pages);
    free(w->listeners);
    for (size_t i = 0; w->lbs && i < w->snap->n_clusters; i++) {
        md_lb_fini(&w->lbs[i]);
        md_epset_unref(w->epset_next ? w->epset_next[i] : NULL);
    }
    free(w->lbs);
    free(w->epset_next);
    free(w->upools);
    md_reset_flood_fini(&w->reset_flood);
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
