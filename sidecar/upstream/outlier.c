/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/outlier.h"

#include "core/log.h"
#include "loop/worker.h"
#include "upstream/clusters.h"

#include <stdlib.h>

/* Returns are logged within this of their time (the balancers do not wait
 * for it: they compare ejected_until with the clock). */
#define SWEEP_PERIOD_S 0.1

struct md_outlier_sweep {
    struct ev_loop *loop;
    struct md_clusters *cs;
    const struct md_clock *clock; /* its sets' clock */
    ev_timer timer;
    uint64_t *next_interval; /* [n_clusters] ms: next success-rate evaluation */
};

enum md_outlier_result md_outlier_classify(const struct md_snap_outlier *o, int http_status,
                                           int grpc_status)
{
    if (grpc_status >= 0 && grpc_status < 32 && (o->grpc_failures & (1u << grpc_status)))
        return MD_OUTLIER_GRPC_FAILURE;
    return http_status >= 500 ? MD_OUTLIER_ERROR : MD_OUTLIER_SUCCESS;
}

uint64_t md_outlier_ejection_ms(const struct md_snap_outlier *o, uint32_t times)
{
    uint64_t ms = (uint64_t)o->base_ejection_ms * (times ? times : 1);
    return ms < o->max_ejection_ms ? ms : o->max_ejection_ms;
}

bool md_outlier_may_eject(uint32_t max_percent, size_t n, size_t ejected)
{
    if (ejected >= n || max_percent == 0)
        return false;
    return ejected == 0 || (uint64_t)(ejected + 1) * 100 <= (uint64_t)n * max_percent;
}

bool md_outlier_eject(struct md_breakers *b, const struct md_snap_cluster *cl, struct md_epset *set,
                      struct md_ep *ep, const char *reason, uint64_t now_ms)
{
    const struct md_snap_outlier *o = cl->outlier;
    /* One decision at a time per cluster, so that two threads cannot both
     * count n-1 ejected and push the cluster past the percentage. Whoever
     * finds it busy skips: the endpoint's next failure tries again. */
    if (b && __atomic_exchange_n(&b->ejecting, 1, __ATOMIC_ACQUIRE))
        return false;
    bool done = false;
    size_t ejected = 0;
    for (size_t i = 0; i < set->n; i++) /* O(n), on ejection only */
        ejected += __atomic_load_n(&set->eps[i].ejected_until, __ATOMIC_RELAXED) > now_ms;
    uint64_t until = __atomic_load_n(&ep->ejected_until, __ATOMIC_RELAXED);
    uint32_t times = 0;
    uint64_t ms = 0;
    if (until <= now_ms && md_outlier_may_eject(o->max_ejection_percent, set->n, ejected)) {
        times = __atomic_add_fetch(&ep->times_ejected, 1, __ATOMIC_RELAXED);
        ms = md_outlier_ejection_ms(o, times);
        __atomic_store_n(&ep->ejection_ms, (uint32_t)ms, __ATOMIC_RELAXED);
        __atomic_store_n(&ep->ejected_until, now_ms + ms, __ATOMIC_RELAXED);
        md_ep_changed(ep);
        __atomic_store_n(&ep->consecutive_errors, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&ep->consecutive_grpc, 0, __ATOMIC_RELAXED);
        done = true;
    }
    if (b) {
        __atomic_store_n(&b->ejecting, 0, __ATOMIC_RELEASE);
        if (done)
            __atomic_add_fetch(&b->outlier_ejected, 1, __ATOMIC_RELAXED);
    }
    if (done)
        MD_LOG(MD_LOG_WARN, "outlier_ejected",
               "cluster=%s endpoint=%s reason=%s ejection_ms=%llu times_ejected=%u "
               "ejected=%zu/%zu",
               cl->name, ep->label, reason, (unsigned long long)ms, times, ejected + 1, set->n);
    else if (until <= now_ms)
        MD_LOG(MD_LOG_DEBUG, "outlier_not_ejected",
               "cluster=%s endpoint=%s reason=%s ejected=%zu/%zu max_ejection_percent=%u", cl->name,
               ep->label, reason, ejected, set->n, o->max_ejection_percent);
    return done;
}

/* Adds one to a run; returns the new length. */
static uint32_t run_add(uint32_t *run)
{
    return __atomic_add_fetch(run, 1, __ATOMIC_RELAXED);
}

/* Ends a run: a store only when there is one, so that successes on a busy
 * endpoint do not bounce its line between workers. */
static void run_end(uint32_t *run)
{
    if (__atomic_load_n(run, __ATOMIC_RELAXED))
        __atomic_store_n(run, 0, __ATOMIC_RELAXED);
}

void md_outlier_report(struct md_worker *w, const struct md_snap_cluster *cl,
                       const struct md_addr *addr, enum md_outlier_result r)
{
    const struct md_snap_outlier *o = cl->outlier;
    struct md_epset *set = w->lbs ? w->lbs[cl->idx].set : NULL;
    if (!o || !set || !addr)
        return;
    struct md_ep *ep = md_epset_find(set, addr);
    if (!ep)
        return; /* left the set meanwhile */
    if (o->success_rate_threshold) {
        __atomic_add_fetch(&ep->sr_total, 1, __ATOMIC_RELAXED);
        if (r == MD_OUTLIER_SUCCESS)
            __atomic_add_fetch(&ep->sr_ok, 1, __ATOMIC_RELAXED);
    }
    const char *reason = NULL;
    switch (r) {
    case MD_OUTLIER_SUCCESS:
        run_end(&ep->consecutive_errors);
        run_end(&ep->consecutive_grpc);
        return;
    case MD_OUTLIER_ERROR:
        if (run_add(&ep->consecutive_errors) >= o->consecutive_errors)
            reason = "consecutive_errors";
        break;
    case MD_OUTLIER_GRPC_FAILURE:
        if (run_add(&ep->consecutive_grpc) >= o->consecutive_grpc_failures)
            reason = "consecutive_grpc_failures";
        break;
    }
    if (reason)
        md_outlier_eject(md_breakers_of(w, cl->idx), cl, set, ep, reason,
                         md_epset_clock_ms(set));
}

/* One cluster's sweep: returns logged; every interval the success rates
 * judged and the multipliers of endpoints not ejected lowered by one (as
 * Envoy does), so an endpoint that behaves earns back short ejections. */
static void sweep_cluster(struct md_outlier_sweep *sw, size_t idx, uint64_t now)
{
    struct md_clusters *cs = sw->cs;
    const struct md_snap_cluster *cl = &cs->snap->clusters[idx];
    const struct md_snap_outlier *o = cl->outlier;
    struct md_epset *set = cs->cur[idx];
    if (!o || !set)
        return;
    for (size_t i = 0; i < set->n; i++) {
        struct md_ep *ep = &set->eps[i];
        uint64_t until = __atomic_load_n(&ep->ejected_until, __ATOMIC_RELAXED);
        /* A worker may eject it again meanwhile: then the exchange fails. */
        if (until && until <= now &&
            __atomic_compare_exchange_n(&ep->ejected_until, &until, 0, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            MD_LOG(MD_LOG_INFO, "outlier_returned",
                   "cluster=%s endpoint=%s ejection_ms=%u times_ejected=%u", cl->name, ep->label,
                   __atomic_load_n(&ep->ejection_ms, __ATOMIC_RELAXED),
                   __atomic_load_n(&ep->times_ejected, __ATOMIC_RELAXED));
    }
    if (now < sw->next_interval[idx])
        return;
    sw->next_interval[idx] = now + o->interval_ms;
    for (size_t i = 0; i < set->n; i++) {
        struct md_ep *ep = &set->eps[i];
        bool ejected = __atomic_load_n(&ep->ejected_until, __ATOMIC_RELAXED) > now;
        uint32_t times = __atomic_load_n(&ep->times_ejected, __ATOMIC_RELAXED);
        if (!ejected && times)
            __atomic_compare_exchange_n(&ep->times_ejected, &times, times - 1, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        if (!o->success_rate_threshold)
            continue;
        uint32_t total = __atomic_exchange_n(&ep->sr_total, 0, __ATOMIC_RELAXED);
        uint32_t ok = __atomic_exchange_n(&ep->sr_ok, 0, __ATOMIC_RELAXED);
        if (ok > total)
            ok = total; /* the two exchanges are not one: a success may fall between */
        if (!ejected && total >= o->success_rate_min_requests &&
            (uint64_t)ok * 100 < (uint64_t)o->success_rate_threshold * total)
            md_outlier_eject(cs->breakers ? &cs->breakers[idx] : NULL, cl, set, ep, "success_rate",
                             now);
    }
}

void md_outlier_sweep_run(struct md_outlier_sweep *sw, uint64_t now_ms)
{
    for (size_t i = 0; i < sw->cs->snap->n_clusters; i++)
        sweep_cluster(sw, i, now_ms);
}

static void on_sweep(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_outlier_sweep *sw = MD_CONTAINER_OF(t, struct md_outlier_sweep, timer);
    md_outlier_sweep_run(sw, md_clock_ms(sw->clock));
}

struct md_outlier_sweep *md_outlier_sweep_new(struct ev_loop *loop, struct md_clusters *cs,
                                              const struct md_clock *clock)
{
    struct md_outlier_sweep *sw = calloc(1, sizeof(*sw));
    size_t n = cs->snap->n_clusters;
    if (!sw || !(sw->next_interval = calloc(n ? n : 1, sizeof(*sw->next_interval)))) {
        free(sw);
        return NULL;
    }
    sw->loop = loop;
    sw->cs = cs;
    sw->clock = clock;
    bool any = false;
    uint64_t now = md_clock_ms(clock);
    for (size_t i = 0; i < n; i++) {
        const struct md_snap_outlier *o = cs->snap->clusters[i].outlier;
        any |= o != NULL;
        if (o)
            sw->next_interval[i] = now + o->interval_ms;
    }
    ev_timer_init(&sw->timer, on_sweep, SWEEP_PERIOD_S, SWEEP_PERIOD_S);
    if (any)
        ev_timer_start(loop, &sw->timer);
    return sw;
}

void md_outlier_sweep_free(struct md_outlier_sweep *sw)
{
    if (!sw)
        return;
    ev_timer_stop(sw->loop, &sw->timer);
    free(sw->next_interval);
    free(sw);
}
