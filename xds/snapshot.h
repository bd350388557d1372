/* SPDX-License-Identifier: Apache-2.0 */
/* The immutable runtime configuration the data path reads. Built once from a
 * validated bundle, shared by reference (atomic count), never modified; a new
 * configuration is a new snapshot. No protobuf-c type crosses this header. */
#ifndef MESHD_XDS_SNAPSHOT_H
#define MESHD_XDS_SNAPSHOT_H

#include "core/addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum md_lb_policy { MD_LB_ROUND_ROBIN };

struct md_snap_endpoint {
    struct md_addr addr;
    char label[MD_ADDR_STRLEN]; /* "ip:port" for logs and stats */
};

struct md_snap_cluster {
    char *name;
    size_t idx; /* position in md_snapshot.clusters; stats index */
    enum md_lb_policy lb;
    uint32_t connect_timeout_ms;   /* defaults applied */
    uint32_t max_connect_attempts; /* defaults applied; <= n_endpoints */
    size_t n_endpoints;
    struct md_snap_endpoint *endpoints;
};

enum md_snap_handler { MD_HANDLER_TCP_PROXY };

struct md_snap_tcp_proxy {
    size_t cluster;           /* index into md_snapshot.clusters */
    uint32_t idle_timeout_ms; /* defaults applied */
    uint32_t buffer_limit;    /* bytes per direction, defaults applied */
    bool splice;
};

struct md_snap_listener {
    char *name;
    size_t idx; /* position in md_snapshot.listeners; stats index */
    struct md_addr addr;
    char label[MD_ADDR_STRLEN];
    enum md_snap_handler handler;
    struct md_snap_tcp_proxy tcp;
};

struct md_snapshot {
    int refs; /* atomic */
    size_t n_listeners;
    struct md_snap_listener *listeners;
    size_t n_clusters;
    struct md_snap_cluster *clusters;
    struct md_addr admin;
    char admin_label[MD_ADDR_STRLEN];
};

/* Defaults the schema documents. */
#define MD_DEFAULT_IDLE_TIMEOUT_MS (3600u * 1000u)
#define MD_DEFAULT_BUFFER_LIMIT (64u * 1024u)
#define MD_DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define MD_DEFAULT_MAX_CONNECT_ATTEMPTS 3u
#define MD_DEFAULT_ADMIN_IP "127.0.0.1"
#define MD_DEFAULT_ADMIN_PORT 15000u

struct md_snapshot *md_snapshot_ref(struct md_snapshot *snap);
/* Drops a reference; the last one frees the snapshot. NULL is ignored. */
void md_snapshot_unref(struct md_snapshot *snap);

/* Writes the running configuration, defaults included, as readable text
 * into a malloc'd string (*out, *len). Returns 0 or MD_ENOMEM. */
int md_snapshot_dump(const struct md_snapshot *snap, char **out, size_t *len);

#endif
