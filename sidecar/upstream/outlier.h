/* SPDX-License-Identifier: Apache-2.0 */
/* Outlier detection (passive health). Workers report each upstream
 * attempt's outcome against its endpoint; the counts are atomics in the
 * shared md_ep, so all workers see one endpoint's record. An endpoint with
 * consecutive_errors errors (5xx, resets, connect failures) or
 * consecutive_grpc_failures gRPC failure statuses in a row is ejected at
 * once: ejected_until = now + min(base x times ejected, max), and the
 * balancers skip it (md_ep_usable) until then; the panic threshold still
 * applies. Every interval the control thread's sweep ejects endpoints whose
 * success rate fell below the threshold and lets the multiplier decay; it
 * also logs returns. An ejection that would leave more than
 * max_ejection_percent of the cluster's endpoints ejected is not made; as in
 * Envoy, one ejection is always allowed when none is in force (so a cluster
 * with fewer than 100 / percent endpoints may still eject one). */
#ifndef MESHD_UPSTREAM_OUTLIER_H
#define MESHD_UPSTREAM_OUTLIER_H

#include "core/addr.h"
#include "snapshot.h"
#include "upstream/breakers.h"
#include "upstream/epset.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct md_worker;
struct md_clusters;

enum md_outlier_result {
    MD_OUTLIER_SUCCESS,      /* an answer that is not a failure: resets both runs */
    MD_OUTLIER_ERROR,        /* 5xx, reset, connection lost, connect failure */
    MD_OUTLIER_GRPC_FAILURE, /* a grpc-status in the cluster's grpc_failures */
};

/* Pure: what an answer says. |http_status| the :status (0: none),
 * |grpc_status| the grpc-status (-1: none). */
enum md_outlier_result md_outlier_classify(const struct md_snap_outlier *o, int http_status,
                                           int grpc_status);

/* Pure: the length of ejection number |times| (>= 1): min(base x times, max). */
uint64_t md_outlier_ejection_ms(const struct md_snap_outlier *o, uint32_t times);

/* Pure: may one more of |n| endpoints be ejected while |ejected| are? At
 * most max_percent of them (rounded down), but one when none is. */
bool md_outlier_may_eject(uint32_t max_percent, size_t n, size_t ejected);

/* Worker: the attempt to |addr| of cluster |cl| ended as |r|. A no-op for a
 * cluster without outlier detection or an address not in the worker's
 * current set (an O(log n) lookup, only for clusters with outlier detection). */
void md_outlier_report(struct md_worker *w, const struct md_snap_cluster *cl,
                       const struct md_addr *addr, enum md_outlier_result r);

/* Any thread: ejects |ep| of |set| (cluster |cl|, shared block |b|) for
 * |reason| at |now_ms|, unless it is ejected already, the percentage
 * forbids it, or another thread is deciding an ejection for the cluster.
 * Logs event=outlier_ejected and counts it. Returns true when ejected. */
bool md_outlier_eject(struct md_breakers *b, const struct md_snap_cluster *cl, struct md_epset *set,
                      struct md_ep *ep, const char *reason, uint64_t now_ms);

/* The control thread's sweep over |cs| (its sets and blocks, borrowed): a
 * timer on |loop| while any cluster has outlier detection, reading |clock|
 * (the sets' clock; NULL: the real one). NULL on ENOMEM. */
struct md_outlier_sweep *md_outlier_sweep_new(struct ev_loop *loop, struct md_clusters *cs,
                                              const struct md_clock *clock);
/* NULL is ignored. */
void md_outlier_sweep_free(struct md_outlier_sweep *sw);

/* One pass at |now_ms| (the timer's work; exposed for tests). */
void md_outlier_sweep_run(struct md_outlier_sweep *sw, uint64_t now_ms);

#endif
