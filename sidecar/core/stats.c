/* SPDX-License-Identifier: Apache-2.0 */
#include "core/stats.h"

#include <stdlib.h>

const struct md_stat_desc md_lstat_desc[MD_LSTAT__N] = {
    [MD_LSTAT_CX_TOTAL] = {"meshd_listener_downstream_cx_total", "Downstream connections accepted.",
                           false},
    [MD_LSTAT_CX_ACTIVE] = {"meshd_listener_downstream_cx_active",
                            "Downstream connections open now.", true},
    [MD_LSTAT_RX_BYTES] = {"meshd_listener_downstream_rx_bytes_total",
                           "Bytes read from downstream clients.", false},
    [MD_LSTAT_TX_BYTES] = {"meshd_listener_downstream_tx_bytes_total",
                           "Bytes written to downstream clients.", false},
    [MD_LSTAT_FD_EXHAUSTED] = {"meshd_listener_accept_fd_exhausted_total",
                               "accept() failures for lack of file descriptors (EMFILE/ENFILE).",
                               false},
};

const struct md_stat_desc md_cstat_desc[MD_CSTAT__N] = {
    [MD_CSTAT_CX_TOTAL] = {"meshd_cluster_upstream_cx_total", "Upstream connect attempts started.",
                           false},
    [MD_CSTAT_CX_ACTIVE] = {"meshd_cluster_upstream_cx_active",
                            "Established upstream connections open now.", true},
    [MD_CSTAT_CONNECT_FAIL] = {"meshd_cluster_upstream_cx_connect_fail_total",
                               "Upstream connects refused or unreachable.", false},
    [MD_CSTAT_CONNECT_TIMEOUT] = {"meshd_cluster_upstream_cx_connect_timeout_total",
                                  "Upstream connects that ran past connect_timeout_ms.", false},
    [MD_CSTAT_UNAVAILABLE] =
        {"meshd_cluster_upstream_unavailable_total",
         "Downstream connections closed because every upstream attempt failed.", false},
    [MD_CSTAT_RX_BYTES] = {"meshd_cluster_upstream_rx_bytes_total", "Bytes read from upstreams.",
                           false},
    [MD_CSTAT_TX_BYTES] = {"meshd_cluster_upstream_tx_bytes_total", "Bytes written to upstreams.",
                           false},
};

struct md_stats *md_stats_new(size_t n_listeners, size_t n_clusters)
{
    struct md_stats *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->n_listeners = n_listeners;
    st->n_clusters = n_clusters;
    st->l = calloc(n_listeners * MD_LSTAT__N + 1, sizeof(uint64_t));
    st->c = calloc(n_clusters * MD_CSTAT__N + 1, sizeof(uint64_t));
    if (!st->l || !st->c) {
        md_stats_free(st);
        return NULL;
    }
    return st;
}

void md_stats_free(struct md_stats *st)
{
    if (!st)
        return;
    free(st->l);
    free(st->c);
    free(st);
}

int64_t md_stats_sum_l(struct md_stats *const *blocks, size_t n, size_t listener, enum md_lstat s)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += __atomic_load_n(md_stats_l(blocks[i], listener, s), __ATOMIC_RELAXED);
    return (int64_t)sum;
}

int64_t md_stats_sum_c(struct md_stats *const *blocks, size_t n, size_t cluster, enum md_cstat s)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += __atomic_load_n(md_stats_c(blocks[i], cluster, s), __ATOMIC_RELAXED);
    return (int64_t)sum;
}
