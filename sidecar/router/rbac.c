/* SPDX-License-Identifier: Apache-2.0 */
/* RBAC matching. Linear in policies x (principals + permissions): policy
 * lists are short and read-only; the order is the configuration's. Path and
 * header parts use the route matcher, so a permission and a route read a
 * request the same way. */
#include "router/rbac.h"

#include "http/stream.h"
#include "router/route_match.h"

#include <string.h>

static bool starts_with(const char *s, size_t n, const char *prefix, size_t len)
{
    return n >= len && memcmp(s, prefix, len) == 0;
}

static bool principal_matches(const struct md_snap_rbac_principal *p, const char *id, size_t n)
{
    switch (p->kind) {
    case MD_RBAC_ID_EXACT: return id && n == p->len && memcmp(id, p->text, n) == 0;
    case MD_RBAC_ID_PREFIX: return id && starts_with(id, n, p->text, p->len);
    case MD_RBAC_ID_TRUST_DOMAIN:
        /* "spiffe://td" itself or "spiffe://td/...": never "spiffe://td2/..." */
        return id && starts_with(id, n, p->text, p->len) && (n == p->len || id[p->len] == '/');
    case MD_RBAC_ID_AUTHENTICATED: return id != NULL;
    case MD_RBAC_ID_UNAUTHENTICATED: return id == NULL;
    case MD_RBAC_ID_ANY: return true;
    }
    return false;
}

static bool permission_matches(const struct md_snap_rbac_permission *p,
                               const struct md_route_input *in)
{
    if (p->grpc &&
        !md_route_match_path(MD_PATH_MATCH_GRPC, p->grpc, p->grpc_len, p->grpc_any_method, in))
        return false;
    if (p->path_prefix &&
        !md_route_match_path(MD_PATH_MATCH_PREFIX, p->path_prefix, p->path_prefix_len, false, in))
        return false;
    return md_route_match_headers(p->headers, p->n_headers, in);
}

static bool policy_matches(const struct md_snap_rbac_policy *p, const struct md_route_input *in,
                           const char *id, size_t id_len)
{
    size_t i = 0;
    while (i < p->n_principals && !principal_matches(&p->principals[i], id, id_len))
        i++;
    if (p->n_principals && i == p->n_principals)
        return false;
    i = 0;
    while (i < p->n_permissions && !permission_matches(&p->permissions[i], in))
        i++;
    return !p->n_permissions || i < p->n_permissions;
}

bool md_rbac_check(const struct md_snap_rbac *rbac, const struct md_hdr *hdrs, size_t n_hdrs,
                   bool grpc, const char *peer_id, struct md_rbac_decision *out)
{
    const struct md_hdr *path = md_hdrs_find(hdrs, n_hdrs, ":path");
    /* Pseudo-headers stay in the list: header matchers never name one
     * (validation), so they cannot match them. */
    struct md_route_input in = {
        .path = path ? path->value : NULL,
        .path_len = path ? path->value_len : 0,
        .grpc = grpc,
        .hdrs = hdrs,
        .n_hdrs = n_hdrs,
    };
    size_t id_len = peer_id ? strlen(peer_id) : 0;
    for (size_t i = 0; i < rbac->n_policies; i++) {
        const struct md_snap_rbac_policy *p = &rbac->policies[i];
        if (policy_matches(p, &in, peer_id, id_len)) {
            *out = (struct md_rbac_decision){rbac->action == MD_RBAC_ALLOW, p, p->stat};
            return out->allowed;
        }
    }
    *out = (struct md_rbac_decision){rbac->action == MD_RBAC_DENY, NULL, rbac->stat_none};
    return out->allowed;
}
