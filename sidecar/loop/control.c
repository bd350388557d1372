/* SPDX-License-Identifier: Apache-2.0 */
#include "loop/control.h"

#include "admin/prom.h"
#include "core/err.h"
#include "core/log.h"
#include "filter/ratelimit.h"
#include "net/acceptor.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define DRAIN_POLL_S 0.05

static uint64_t active_connections(const struct md_control *c)
{
    uint64_t n = 0;
    for (size_t i = 0; i < c->n_workers; i++)
        n += md_worker_active(&c->workers[i]);
    return n;
}

/* Downstream sockets in their lingering close: the client may still be
 * reading the end of a response (net/linger.h). */
static uint64_t lingering_connections(const struct md_control *c)
{
    uint64_t n = 0;
    for (size_t i = 0; i < c->n_workers; i++)
        n += md_worker_lingering(&c->workers[i]);
    return n;
}

static void stop_accepting(struct md_control *c, const char *why)
{
    if (c->draining)
        return;
    c->draining = true;
    for (size_t i = 0; i < c->n_workers; i++)
        md_worker_post(&c->workers[i], MD_WORKER_CMD_STOP_ACCEPT);
    MD_LOG(MD_LOG_INFO, "drain_started", "why=%s open_connections=%llu", why,
           (unsigned long long)active_connections(c));
}

static void on_drain_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_control *c = MD_CONTAINER_OF(t, struct md_control, drain_poll);
    /* Drained means the clients have their bytes, not that we handed the
     * last ones to the kernel: lingering sockets count. */
    if (active_connections(c) == 0 && lingering_connections(c) == 0) {
        MD_LOG(MD_LOG_INFO, "drain_complete", "open_connections=0 lingering=0");
        ev_break(loop, EVBREAK_ALL);
    }
}

static void on_drain_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_control *c = MD_CONTAINER_OF(t, struct md_control, drain_deadline);
    MD_LOG(MD_LOG_WARN, "drain_timeout", "closing_connections=%llu lingering=%llu",
           (unsigned long long)active_connections(c), (unsigned long long)lingering_connections(c));
    ev_break(loop, EVBREAK_ALL); /* workers close the rest on exit */
}

static void on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct md_control *c = s->data;
    const char *name = s->signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (c->exiting) {
        MD_LOG(MD_LOG_WARN, "shutdown_now", "signal=%s reason=second_signal", name);
        c->hurry = true;
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    c->exiting = true;
    stop_accepting(c, name);
    ev_timer_set(&c->drain_deadline, c->drain_timeout_s, 0.);
    ev_timer_start(loop, &c->drain_deadline);
    ev_timer_set(&c->drain_poll, 0., DRAIN_POLL_S);
    ev_timer_start(loop, &c->drain_poll);
}

/* A cluster's new endpoint set goes to every worker. */
static void publish_epset(void *arg, size_t idx, struct md_epset *set)
{
    struct md_control *c = arg;
    for (size_t i = 0; i < c->n_workers; i++)
        md_worker_post_epset(&c->workers[i], idx, set);
}

static void on_sighup(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct md_control *c = s->data;
    md_tls_watch_reload_all(c->tls_watch, "SIGHUP");
}

static void reply_owned(struct md_admin_reply *r, int rc, char *body, size_t len,
                        const char *content_type)
{
    if (rc < 0) {
        md_admin_reply_text(r, 500, "out of memory\n");
        return;
    }
    r->status = 200;
    r->content_type = content_type;
    r->body = body;
    r->len = len;
}

static void admin_handler(void *ctx, const char *method, const char *path, struct md_admin_reply *r)
{
    struct md_control *c = ctx;
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (strcmp(path, "/ready") == 0) {
        if (!get)
            goto get_only;
        /* Short of descriptors, new connections are turned away but open
         * ones are served: still ready (503 on every replica an attacker
         * starves would empty the Service), the body says why. */
        bool short_fds = md_acceptor_fds_short();
        md_admin_reply_text(r, c->draining ? 503 : 200,
                            c->draining
                                ? (short_fds ? "draining\noverloaded: descriptors\n" : "draining\n")
                                : (short_fds ? "ready\noverloaded: descriptors\n" : "ready\n"));
    } else if (strcmp(path, "/stats/prometheus") == 0) {
        if (!get)
            goto get_only;
        struct md_prom_server srv = {.draining = c->draining,
                                     .fds_short = md_acceptor_fds_short(),
                                     .workers = c->n_workers,
                                     .uptime_s = ev_time() - c->started};
        md_tls_watch_counts(c->tls_watch, &srv.tls_reloads, &srv.tls_reload_failures);
        char *body;
        size_t len;
        int rc = md_prom_render(c->snap, c->blocks, c->n_workers, &c->clusters, &srv, &body, &len);
        reply_owned(r, rc, body, len, "text/plain; version=0.0.4; charset=utf-8");
    } else if (strcmp(path, "/config_dump") == 0) {
        if (!get)
            goto get_only;
        char *body;
        size_t len;
        int rc = md_snapshot_dump(c->snap, &body, &len);
        reply_owned(r, rc, body, len, NULL);
    } else if (strcmp(path, "/clusters") == 0) {
        if (!get)
            goto get_only;
        char *body;
        size_t len;
        int rc = md_clusters_dump(&c->clusters, &body, &len);
        reply_owned(r, rc, body, len, NULL);
    } else if (strcmp(path, "/drain") == 0) {
        if (!post) {
            r->allow = "POST";
            md_admin_reply_text(r, 405, "use POST /drain\n");
            return;
        }
        stop_accepting(c, "admin");
        md_admin_reply_text(r, 200, "draining: no new connections; open ones continue\n");
    } else if (strcmp(path, "/") == 0) {
        md_admin_reply_text(
            r, 200,
            "meshd admin\n"
            "  GET  /ready              200 ready, 503 draining; the body adds\n"
            "                           \"overloaded: descriptors\" when new connections\n"
            "                           are turned away for lack of them\n"
            "  GET  /stats/prometheus   metrics, Prometheus text 0.0.4\n"
            "  GET  /config_dump        running configuration\n"
            "  GET  /clusters           endpoints of every cluster: priority, weight, health\n"
            "  POST /drain              stop accepting; open connections continue\n"
            "  gRPC grpc.health.v1.Health/Check (h2c, same port): \"\" as /ready; a listener's\n"
            "       name: that listener; others NOT_FOUND\n");
    } else {
        md_admin_reply_text(r, 404, "not found (GET / lists the endpoints)\n");
    }
    return;
get_only:
    r->allow = "GET, HEAD";
    md_admin_reply_text(r, 405, "method not allowed\n");
}

/* gRPC health, for probes that speak gRPC: "" is the whole server, as /ready;
 * a listener's name reports that listener (all stop accepting together on
 * drain). Any other name is unknown (NOT_FOUND), as in grpc's reference. */
static enum md_admin_health admin_health(void *ctx, const char *service, size_t len)
{
    struct md_control *c = ctx;
    bool known = len == 0;
    for (size_t i = 0; i < c->snap->n_listeners && !known; i++) {
        const char *name = c->snap->listeners[i].name;
        known = strlen(name) == len && memcmp(name, service, len) == 0;
    }
    if (!known)
        return MD_ADMIN_HEALTH_UNKNOWN;
    return c->draining ? MD_ADMIN_HEALTH_NOT_SERVING : MD_ADMIN_HEALTH_SERVING;
}

int md_control_init(struct md_control *c, struct md_snapshot *snap, size_t n_workers,
                    double drain_timeout_s)
{
    memset(c, 0, sizeof(*c));
    c->loop = ev_default_loop(EVFLAG_AUTO);
    c->snap = md_snapshot_ref(snap);
    c->drain_timeout_s = drain_timeout_s;
    c->started = ev_time();
    md_acceptor_reserve_init(); /* before the workers' threads */
    c->workers = calloc(n_workers, sizeof(*c->workers));
    c->blocks = calloc(n_workers, sizeof(*c->blocks));
    if (!c->loop || !c->workers || !c->blocks)
        return MD_ENOMEM;
    for (size_t i = 0; i < n_workers; i++) {
        c->n_workers++;
        int rc = md_worker_init(&c->workers[i], (int)i, snap);
        if (rc < 0)
            return rc;
        c->blocks[i] = c->workers[i].stats;
    }
    /* one state per limit for all workers: the budget is not multiplied */
    if (!(c->ratelimits = md_ratelimit_new_all(snap)))
        return MD_ENOMEM;
    for (size_t i = 0; i < n_workers; i++)
        c->workers[i].ratelimits = c->ratelimits;
    if (md_clusters_init(&c->clusters, snap, publish_epset, c) < 0)
        return MD_ENOMEM;
    for (size_t i = 0; i < n_workers; i++) /* before they start: plain stores are enough */
        c->workers[i].breakers = c->clusters.breakers;
    if (!(c->outlier = md_outlier_sweep_new(c->loop, &c->clusters, NULL)))
        return MD_ENOMEM;
    int err;
    if (!(c->dns = md_dns_new(c->loop, snap, &c->clusters, &err)))
        return err;
    c->admin = md_admin_new(c->loop, &snap->admin, snap->admin_label, admin_handler, admin_health,
                            c, &err);
    if (!c->admin)
        return err;
    if (!(c->checker = md_checker_new(c->loop, &c->clusters, &err)))
        return err;
    ev_signal_init(&c->sig_term, on_signal, SIGTERM);
    ev_signal_init(&c->sig_int, on_signal, SIGINT);
    c->sig_term.data = c->sig_int.data = c;
    ev_signal_start(c->loop, &c->sig_term);
    ev_signal_start(c->loop, &c->sig_int);
    if (!(c->tls_watch = md_tls_watch_new(c->loop, snap)))
        return MD_ENOMEM;
    ev_signal_init(&c->sig_hup, on_sighup, SIGHUP);
    c->sig_hup.data = c;
    ev_signal_start(c->loop, &c->sig_hup);
    ev_init(&c->drain_deadline, on_drain_deadline);
    ev_init(&c->drain_poll, on_drain_poll);
    return 0;
}

int md_control_run(struct md_control *c)
{
    for (size_t i = 0; i < c->n_workers; i++) {
        int rc = md_worker_start(&c->workers[i]);
        if (rc < 0) {
            MD_LOG(MD_LOG_ERROR, "worker_start_failed", "worker=%zu err=%s", i, md_err_str(rc));
            return rc;
        }
    }
    for (size_t i = 0; i < c->snap->n_listeners; i++) {
        const struct md_snap_listener *l = &c->snap->listeners[i];
        bool http = l->handler == MD_HANDLER_HTTP;
        MD_LOG(MD_LOG_INFO, "listening", "listener=%s addr=%s %s=%s workers=%zu", l->name, l->label,
               http ? "route_config" : "cluster",
               http ? c->snap->route_configs[l->http.route_config].name
                    : c->snap->clusters[l->tcp.cluster].name,
               c->n_workers);
    }
    MD_LOG(MD_LOG_INFO, "ready", "admin=%s workers=%zu startup_ms=%.1f", c->snap->admin_label,
           c->n_workers, (ev_time() - c->started) * 1000.0);
    ev_run(c->loop, 0);
    return 0;
}

void md_control_fini(struct md_control *c)
{
    /* Workers first: they exit their loops and close what is still open,
     * all at once (each gives its lingering sockets MD_LINGER_EXIT_S). */
    for (size_t i = 0; i < c->n_workers; i++)
        if (c->workers[i].thread_started)
            md_worker_post(&c->workers[i],
                           MD_WORKER_CMD_EXIT | (c->hurry ? MD_WORKER_CMD_HURRY : 0));
    for (size_t i = 0; i < c->n_workers; i++)
        md_worker_fini(&c->workers[i]);
    md_admin_free(c->admin);
    md_outlier_sweep_free(c->outlier);
    md_tls_watch_free(c->tls_watch);
    md_dns_free(c->dns);
    md_checker_free(c->checker); /* stops its probes; the sets it flags go next */
    md_clusters_fini(&c->clusters);
    md_ratelimit_free_all(c->ratelimits, c->snap ? c->snap->n_rate_limits : 0);
    if (c->loop) {
        ev_signal_stop(c->loop, &c->sig_term);
        ev_signal_stop(c->loop, &c->sig_int);
        ev_signal_stop(c->loop, &c->sig_hup);
        ev_timer_stop(c->loop, &c->drain_deadline);
        ev_timer_stop(c->loop, &c->drain_poll);
    }
    free(c->workers);
    free(c->blocks);
    md_snapshot_unref(c->snap);
    memset(c, 0, sizeof(*c));
}
