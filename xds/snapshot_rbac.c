/* SPDX-License-Identifier: Apache-2.0 */
/* RBAC in the snapshot: built from a validated mesh.v1.Rbac, numbered for
 * stats, freed and dumped with the rest. */
#include "core/err.h"
#include "snapshot_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const scope_names[] = {
    [MD_RBAC_SCOPE_LISTENER] = "listener",
    [MD_RBAC_SCOPE_ROUTE] = "route",
};

static int dup_text(const char *prefix, const char *s, char **out, size_t *len)
{
    if (asprintf(out, "%s%s", prefix, s) < 0) {
        *out = NULL;
        return MD_ENOMEM;
    }
    *len = strlen(*out);
    return 0;
}

static int build_principal(const Mesh__V1__Principal *p, struct md_snap_rbac_principal *out)
{
    switch (p->identity_case) {
    case MESH__V1__PRINCIPAL__IDENTITY_SPIFFE_ID:
        out->kind = MD_RBAC_ID_EXACT;
        return dup_text("", p->spiffe_id, &out->text, &out->len);
    case MESH__V1__PRINCIPAL__IDENTITY_SPIFFE_ID_PREFIX:
        out->kind = MD_RBAC_ID_PREFIX;
        return dup_text("", p->spiffe_id_prefix, &out->text, &out->len);
    case MESH__V1__PRINCIPAL__IDENTITY_TRUST_DOMAIN:
        /* kept as "spiffe://td": matching compares it with the peer ID's start */
        out->kind = MD_RBAC_ID_TRUST_DOMAIN;
        return dup_text("spiffe://", p->trust_domain, &out->text, &out->len);
    case MESH__V1__PRINCIPAL__IDENTITY_AUTHENTICATED: out->kind = MD_RBAC_ID_AUTHENTICATED; break;
    case MESH__V1__PRINCIPAL__IDENTITY_UNAUTHENTICATED:
        out->kind = MD_RBAC_ID_UNAUTHENTICATED;
        break;
    default: out->kind = MD_RBAC_ID_ANY; break; /* validation left only `any` */
    }
    return 0;
}

static int build_permission(const Mesh__V1__Permission *p, struct md_snap_rbac_permission *out)
{
    if (p->grpc) {
        if (!(out->grpc = md_snapshot_grpc_path(p->grpc, &out->grpc_any_method)))
            return MD_ENOMEM;
        out->grpc_len = strlen(out->grpc);
    }
    if (p->path_prefix[0] &&
        dup_text("", p->path_prefix, &out->path_prefix, &out->path_prefix_len) < 0)
        return MD_ENOMEM;
    return md_snapshot_build_header_matchers(p->headers, p->n_headers, &out->headers,
                                             &out->n_headers);
}

static int build_policy(const Mesh__V1__RbacPolicy *p, struct md_snap_rbac_policy *out)
{
    out->name = strdup(p->name);
    out->principals = calloc(p->n_principals + 1, sizeof(*out->principals));
    out->permissions = calloc(p->n_permissions + 1, sizeof(*out->permissions));
    if (!out->name || !out->principals || !out->permissions)
        return MD_ENOMEM;
    out->n_principals = p->n_principals;
    out->n_permissions = p->n_permissions;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < p->n_principals; k++)
        rc = build_principal(p->principals[k], &out->principals[k]);
    for (size_t k = 0; rc == 0 && k < p->n_permissions; k++)
        rc = build_permission(p->permissions[k], &out->permissions[k]);
    return rc;
}

int md_snapshot_build_rbac(const Mesh__V1__Rbac *r, enum md_rbac_scope scope, const char *owner,
                           struct md_snap_rbac **out)
{
    struct md_snap_rbac *x = *out = calloc(1, sizeof(*x));
    if (!x)
        return MD_ENOMEM;
    x->scope = scope;
    x->owner = owner;
    x->action = r->action == MESH__V1__RBAC__ACTION__DENY ? MD_RBAC_DENY : MD_RBAC_ALLOW;
    if (!(x->policies = calloc(r->n_policies + 1, sizeof(*x->policies))))
        return MD_ENOMEM;
    x->n_policies = r->n_policies;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->n_policies; i++)
        rc = build_policy(r->policies[i], &x->policies[i]);
    return rc;
}

/* Calls |fn| for every Rbac of |s| in stats order: listeners, then routes. */
static void each_rbac(struct md_snapshot *s, void (*fn)(struct md_snap_rbac *, void *), void *arg)
{
    for (size_t i = 0; i < s->n_listeners; i++)
        if (s->listeners[i].handler == MD_HANDLER_HTTP && s->listeners[i].http.rbac)
            fn(s->listeners[i].http.rbac, arg);
    for (size_t i = 0; i < s->n_route_configs; i++)
        for (size_t v = 0; v < s->route_configs[i].n_vhosts; v++) {
            struct md_snap_vhost *vh = &s->route_configs[i].vhosts[v];
            for (size_t k = 0; k < vh->n_routes; k++)
                if (vh->routes[k].rbac)
                    fn(vh->routes[k].rbac, arg);
        }
}

static void count_slots(struct md_snap_rbac *r, void *arg)
{
    *(size_t *)arg += r->n_policies + 1;
}

static void number_slots(struct md_snap_rbac *r, void *arg)
{
    struct md_snapshot *s = arg;
    for (size_t i = 0; i <= r->n_policies; i++) {
        size_t slot = s->n_rbac_stats++;
        s->rbac_stats[slot] = (struct md_snap_rbac_stat){
            .scope = scope_names[r->scope],
            .owner = r->owner,
            .policy = i < r->n_policies ? r->policies[i].name : "",
        };
        if (i < r->n_policies)
            r->policies[i].stat = slot;
        else
            r->stat_none = slot;
    }
}

static int cmp_labels(const struct md_snap_rbac_stat *x, const struct md_snap_rbac_stat *y)
{
    int c = strcmp(x->scope, y->scope);
    if (!c)
        c = strcmp(x->owner, y->owner);
    return c ? c : strcmp(x->policy, y->policy);
}

/* By labels, then by slot: the first of equal label sets is the earliest. */
static int cmp_slot(const void *pa, const void *pb, void *stats)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    const struct md_snap_rbac_stat *st = stats;
    int c = cmp_labels(&st[a], &st[b]);
    return c ? c : (a > b) - (a < b);
}

static void remap_slots(struct md_snap_rbac *r, void *arg)
{
    const size_t *final = arg;
    for (size_t i = 0; i < r->n_policies; i++)
        r->policies[i].stat = final[r->policies[i].stat];
    r->stat_none = final[r->stat_none];
}

/* Route names need not be unique, so two Rbacs may carry the same labels:
 * they share one slot, as Prometheus allows one series per label set.
 * Sorted, not pairwise: O(n log n) in slots. */
static int merge_slots(struct md_snapshot *s)
{
    size_t n = s->n_rbac_stats;
    size_t *order = calloc(n + 1, sizeof(*order)), *final = calloc(n + 1, sizeof(*final));
    if (!order || !final) {
        free(order);
        free(final);
        return MD_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof(*order), cmp_slot, s->rbac_stats);
    /* final[i]: first the earliest slot with i's labels, then its number */
    for (size_t k = 0; k < n; k++)
        final[order[k]] =
            k && cmp_labels(&s->rbac_stats[order[k - 1]], &s->rbac_stats[order[k]]) == 0
                ? final[order[k - 1]]
                : order[k];
    size_t next = 0;
    for (size_t i = 0; i < n; i++) { /* number the distinct ones in order, compacted */
        if (final[i] == i) {
            s->rbac_stats[next] = s->rbac_stats[i];
            final[i] = next++;
        } else {
            final[i] = final[final[i]];
        }
    }
    s->n_rbac_stats = next;
    each_rbac(s, remap_slots, final);
    free(order);
    free(final);
    return 0;
}

int md_snapshot_index_rbac(struct md_snapshot *s)
{
    size_t n = 0;
    each_rbac(s, count_slots, &n);
    if (!(s->rbac_stats = calloc(n + 1, sizeof(*s->rbac_stats))))
        return MD_ENOMEM;
    s->n_rbac_stats = 0;
    each_rbac(s, number_slots, s);
    return merge_slots(s);
}

static void free_policy(struct md_snap_rbac_policy *p)
{
    for (size_t k = 0; p->principals && k < p->n_principals; k++)
        free(p->principals[k].text);
    for (size_t k = 0; p->permissions && k < p->n_permissions; k++) {
        struct md_snap_rbac_permission *q = &p->permissions[k];
        free(q->grpc);
        free(q->path_prefix);
        md_snapshot_free_header_matchers(q->headers, q->n_headers);
    }
    free(p->principals);
    free(p->permissions);
    free(p->name);
}

void md_snapshot_free_rbac(struct md_snap_rbac *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_policies; i++)
        free_policy(&r->policies[i]);
    free(r->policies);
    free(r);
}

static void dump_principal(FILE *f, int indent, const struct md_snap_rbac_principal *p)
{
    fprintf(f, "%*sprincipal {\n", indent, "");
    int in = indent + 2;
    switch (p->kind) {
    case MD_RBAC_ID_EXACT: md_snapshot_dump_str(f, in, "spiffe_id", p->text); break;
    case MD_RBAC_ID_PREFIX: md_snapshot_dump_str(f, in, "spiffe_id_prefix", p->text); break;
    case MD_RBAC_ID_TRUST_DOMAIN:
        md_snapshot_dump_str(f, in, "trust_domain", p->text + sizeof("spiffe://") - 1);
        break;
    case MD_RBAC_ID_AUTHENTICATED: fprintf(f, "%*sauthenticated: true\n", in, ""); break;
    case MD_RBAC_ID_UNAUTHENTICATED: fprintf(f, "%*sunauthenticated: true\n", in, ""); break;
    case MD_RBAC_ID_ANY: fprintf(f, "%*sany: true\n", in, ""); break;
    }
    fprintf(f, "%*s}\n", indent, "");
}

static void dump_permission(FILE *f, int indent, const struct md_snap_rbac_permission *p)
{
    fprintf(f, "%*spermission {\n", indent, "");
    int in = indent + 2;
    if (p->grpc)
        /* written as the path it matches, like a route's grpc match */
        fprintf(f, "%*sgrpc: \"%s\"%s\n", in, "", p->grpc,
                p->grpc_any_method ? "  # every method" : "");
    if (p->path_prefix)
        md_snapshot_dump_str(f, in, "path_prefix", p->path_prefix);
    for (size_t i = 0; i < p->n_headers; i++)
        md_snapshot_dump_header_matcher(f, in, &p->headers[i]);
    if (!p->grpc && !p->path_prefix && !p->n_headers)
        fprintf(f, "%*s# any request\n", in, "");
    fprintf(f, "%*s}\n", indent, "");
}

void md_snapshot_dump_rbac(FILE *f, int indent, const struct md_snap_rbac *r)
{
    int in = indent + 2;
    fprintf(f, "%*srbac {\n%*saction: %s\n", indent, "", in, "",
            r->action == MD_RBAC_DENY ? "DENY" : "ALLOW");
    if (r->n_policies == 0)
        fprintf(f, "%*s# no policies: %s\n", in, "",
                r->action == MD_RBAC_DENY ? "every request passes" : "every request is refused");
    for (size_t i = 0; i < r->n_policies; i++) {
        const struct md_snap_rbac_policy *p = &r->policies[i];
        fprintf(f, "%*spolicy {\n", in, "");
        md_snapshot_dump_str(f, in + 2, "name", p->name);
        if (p->n_principals == 0)
            fprintf(f, "%*s# any peer\n", in + 2, "");
        for (size_t k = 0; k < p->n_principals; k++)
            dump_principal(f, in + 2, &p->principals[k]);
        if (p->n_permissions == 0)
            fprintf(f, "%*s# any request\n", in + 2, "");
        for (size_t k = 0; k < p->n_permissions; k++)
            dump_permission(f, in + 2, &p->permissions[k]);
        fprintf(f, "%*s}\n", in, "");
    }
    fprintf(f, "%*s}\n", indent, "");
}
