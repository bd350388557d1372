/* SPDX-License-Identifier: Apache-2.0 */
#include "snapshot.h"

#include "core/err.h"
#include "snapshot_build.h"
#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v ? v : def;
}

static int build_cluster(const Mesh__V1__Cluster *c, size_t idx, struct md_snap_cluster *out)
{
    out->name = strdup(c->name);
    out->idx = idx;
    out->lb = MD_LB_ROUND_ROBIN;
    out->connect_timeout_ms = or_default(c->connect_timeout_ms, MD_DEFAULT_CONNECT_TIMEOUT_MS);
    out->n_endpoints = c->n_endpoints;
    out->endpoints = calloc(c->n_endpoints ? c->n_endpoints : 1, sizeof(*out->endpoints));
    if (!out->name || !out->endpoints)
        return MD_ENOMEM;
    uint32_t attempts = or_default(c->max_connect_attempts, MD_DEFAULT_MAX_CONNECT_ATTEMPTS);
    /* Each attempt goes to a different endpoint. */
    out->max_connect_attempts = attempts < c->n_endpoints ? attempts : (uint32_t)c->n_endpoints;
    for (size_t k = 0; k < c->n_endpoints; k++) {
        struct md_snap_endpoint *ep = &out->endpoints[k];
        const Mesh__V1__SocketAddress *a = c->endpoints[k]->address;
        md_addr_parse(a->address, a->port, &ep->addr);
        md_addr_format((struct sockaddr *)&ep->addr.ss, ep->label);
    }
    return 0;
}

static int build_listener(const Mesh__V1__Bundle *b, const Mesh__V1__Listener *l, size_t idx,
                          struct md_snap_listener *out)
{
    out->name = strdup(l->name);
    if (!out->name)
        return MD_ENOMEM;
    out->idx = idx;
    md_addr_parse(l->address->address, l->address->port, &out->addr);
    md_addr_format((struct sockaddr *)&out->addr.ss, out->label);
    const Mesh__V1__TcpProxy *tp = l->tcp_proxy;
    out->handler = MD_HANDLER_TCP_PROXY;
    out->tcp.cluster = (size_t)md_validate_find_cluster(b, tp->cluster);
    out->tcp.idle_timeout_ms = or_default(tp->idle_timeout_ms, MD_DEFAULT_IDLE_TIMEOUT_MS);
    out->tcp.buffer_limit = or_default(tp->buffer_limit_bytes, MD_DEFAULT_BUFFER_LIMIT);
    out->tcp.splice = !tp->disable_splice;
    return 0;
}

int md_snapshot_build(const Mesh__V1__Bundle *b, struct md_snapshot **out)
{
    struct md_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return MD_ENOMEM;
    s->refs = 1;
    s->listeners = calloc(b->n_listeners + 1, sizeof(*s->listeners));
    s->clusters = calloc(b->n_clusters + 1, sizeof(*s->clusters));
    int rc = s->listeners && s->clusters ? 0 : MD_ENOMEM;
    for (size_t i = 0; rc == 0 && i < b->n_clusters; i++, s->n_clusters++)
        rc = build_cluster(b->clusters[i], i, &s->clusters[i]);
    for (size_t i = 0; rc == 0 && i < b->n_listeners; i++, s->n_listeners++)
        rc = build_listener(b, b->listeners[i], i, &s->listeners[i]);
    const Mesh__V1__SocketAddress *aa = b->admin ? b->admin->address : NULL;
    md_addr_parse(aa ? aa->address : MD_DEFAULT_ADMIN_IP, aa ? aa->port : MD_DEFAULT_ADMIN_PORT,
                  &s->admin);
    md_addr_format((struct sockaddr *)&s->admin.ss, s->admin_label);
    if (rc < 0) {
        /* count the half-built entry so unref frees what it holds */
        s->n_clusters += s->n_clusters < b->n_clusters;
        s->n_listeners += s->n_listeners < b->n_listeners;
        md_snapshot_unref(s);
        return rc;
    }
    *out = s;
    return 0;
}

struct md_snapshot *md_snapshot_ref(struct md_snapshot *snap)
{
    __atomic_add_fetch(&snap->refs, 1, __ATOMIC_RELAXED);
    return snap;
}

void md_snapshot_unref(struct md_snapshot *snap)
{
    if (!snap || __atomic_sub_fetch(&snap->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < snap->n_listeners; i++)
        free(snap->listeners[i].name);
    for (size_t i = 0; i < snap->n_clusters; i++) {
        free(snap->clusters[i].name);
        free(snap->clusters[i].endpoints);
    }
    free(snap->listeners);
    free(snap->clusters);
    free(snap);
}

int md_snapshot_dump(const struct md_snapshot *snap, char **out, size_t *len)
{
    FILE *f = open_memstream(out, len);
    if (!f)
        return MD_ENOMEM;
    fprintf(f, "# meshd running configuration (defaults applied)\n");
    fprintf(f, "admin {\n  address: \"%s\"\n}\n", snap->admin_label);
    for (size_t i = 0; i < snap->n_listeners; i++) {
        const struct md_snap_listener *l = &snap->listeners[i];
        fprintf(f,
                "listener {\n  name: \"%s\"\n  address: \"%s\"\n  tcp_proxy {\n"
                "    cluster: \"%s\"\n    idle_timeout_ms: %u\n    buffer_limit_bytes: %u\n"
                "    splice: %s\n  }\n}\n",
                l->name, l->label, snap->clusters[l->tcp.cluster].name, l->tcp.idle_timeout_ms,
                l->tcp.buffer_limit, l->tcp.splice ? "true" : "false");
    }
    for (size_t i = 0; i < snap->n_clusters; i++) {
        const struct md_snap_cluster *c = &snap->clusters[i];
        fprintf(f,
                "cluster {\n  name: \"%s\"\n  type: STATIC\n  lb_policy: ROUND_ROBIN\n"
                "  connect_timeout_ms: %u\n  max_connect_attempts: %u\n",
                c->name, c->connect_timeout_ms, c->max_connect_attempts);
        for (size_t k = 0; k < c->n_endpoints; k++)
            fprintf(f, "  endpoint: \"%s\"\n", c->endpoints[k].label);
        fprintf(f, "}\n");
    }
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return MD_ENOMEM;
    }
    return 0;
}
