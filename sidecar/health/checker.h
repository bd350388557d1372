/* SPDX-License-Identifier: Apache-2.0 */
/* Active health checking, on the control loop: every endpoint of every
 * cluster with a health_check is probed every interval_ms plus a random
 * 0..jitter_ms, each probe bounded by timeout_ms (connect and answer):
 *   tcp   the connect succeeds (then the socket is closed);
 *   http  GET path over HTTP/1.1 (Host: the configured host, else ip:port;
 *         Connection: close) answers a status line whose code is expected;
 *   grpc  grpc.health.v1.Health/Check over h2c (nghttp2 client) answers
 *         grpc-status 0 and HealthCheckResponse.status SERVING.
 * An endpoint becomes unhealthy after unhealthy_threshold consecutive failed
 * probes and healthy again after healthy_threshold consecutive passes; the
 * flag is set in place on the cluster's current set (md_ep_set_healthy),
 * which the workers' balancers read. Endpoints start healthy (a new one takes
 * traffic at once; a dead one leaves after unhealthy_threshold probes).
 *
 * Counts hc_success / hc_failure per probe and hc_ejected / hc_restored per
 * transition in cs->stats; logs each transition (health_check_unhealthy,
 * health_check_healthy) with its reason. Bounded: one probe in flight per
 * endpoint, at most 4 KiB read per HTTP probe, 64 KiB of HTTP/2 output. */
#ifndef MESHD_HEALTH_CHECKER_H
#define MESHD_HEALTH_CHECKER_H

#include "upstream/clusters.h"

#include <ev.h>

struct md_checker;

/* Starts checking the current sets of |cs| (borrowed for the checker's life)
 * on |loop|, and takes cs->watch to follow set changes: endpoints still
 * present (same address) keep their state and probe, new ones start being
 * checked, removed ones stop. Returns NULL with *err = MD_ENOMEM. */
struct md_checker *md_checker_new(struct ev_loop *loop, struct md_clusters *cs, int *err);

/* Stops every probe and timer, closes their sockets and gives cs->watch back.
 * Call before md_clusters_fini. NULL is ignored. */
void md_checker_free(struct md_checker *hc);

#endif
