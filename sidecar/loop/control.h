/* SPDX-License-Identifier: Apache-2.0 */
/* The control thread: its libev loop runs the admin server, signals, the
 * drain and certificate rotation (SIGHUP or a changed file); it starts,
 * commands and stops the workers. */
#ifndef MESHD_LOOP_CONTROL_H
#define MESHD_LOOP_CONTROL_H

#include "admin/admin.h"
#include "discovery/dns.h"
#include "health/checker.h"
#include "loop/worker.h"
#include "snapshot.h"
#include "tls/tls_watch.h"
#include "upstream/clusters.h"
#include "upstream/outlier.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

struct md_control {
    struct ev_loop *loop;      /* the default loop (signals) */
    struct md_snapshot *snap;  /* one reference */
    struct md_worker *workers; /* [n_workers], owned */
    size_t n_workers;
    struct md_stats **blocks; /* [n_workers] borrowed from the workers, for scrapes */
    struct md_admin *admin;   /* owned */
    ev_signal sig_term, sig_int, sig_hup;
    struct md_tls_watch *tls_watch; /* owned: certificate rotation */
    struct md_clusters clusters;    /* every cluster's current endpoint set */
    /* [snap->n_rate_limits] owned: the shared buckets, lent to every worker */
    struct md_ratelimit **ratelimits;
    /* owned: outlier detection's returns from ejection and success rates */
    struct md_outlier_sweep *outlier;
    struct md_dns *dns;             /* owned: DNS and DNS_SRV clusters' discovery */
    struct md_checker *checker;     /* owned: active health checks (takes clusters.watch) */
    ev_timer drain_deadline, drain_poll;
    double drain_timeout_s;
    bool draining; /* listeners closed; /ready is 503 */
    bool exiting;  /* a signal came: exit once drained */
    bool hurry;    /* a second signal: exit without waiting for lingering sockets */
    ev_tstamp started;
};

/* Binds every listener in every worker and the admin port. Returns 0, or a
 * negative error (logged); md_control_fini must be called either way. */
int md_control_init(struct md_control *c, struct md_snapshot *snap, size_t n_workers,
                    double drain_timeout_s);
/* Starts the workers and runs until drained after SIGTERM/SIGINT. Returns 0
 * or a negative error. */
int md_control_run(struct md_control *c);
void md_control_fini(struct md_control *c);

#endif
