/* SPDX-License-Identifier: Apache-2.0 */
/* RBAC checks, shared by listeners (http.rbac) and routes (routes[i].rbac):
 * policy names, principals (SPIFFE IDs, prefixes, trust domains, flags) and
 * permissions (gRPC service/method, path prefix, header matchers as routes
 * have them). */
#include "validate.h"

#include "core/spiffe.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Nested paths: a policy's, then a principal's or permission's, then a
 * field's; each fits its prefix and what is appended. */
#define POLICY_LEN 192
#define ITEM_LEN 232
#define FIELD_LEN 256

static const char spiffe_scheme[] = "spiffe://";

static void check_flag(struct md_errlist *el, const char *res, const char *f, const char *name,
                       bool v)
{
    /* false would match nobody: almost surely a mistake for another principal */
    if (!v)
        md_errlist_add(el, res, f, "%s must be true when set (false matches no peer)", name);
}

static void check_principal(struct md_errlist *el, const char *res, const char *at,
                            const Mesh__V1__Principal *p)
{
    char f[FIELD_LEN];
    const char *why;
    switch (p->identity_case) {
    case MESH__V1__PRINCIPAL__IDENTITY_SPIFFE_ID:
        snprintf(f, sizeof(f), "%s.spiffe_id", at);
        if ((why = md_spiffe_id_invalid(p->spiffe_id, strlen(p->spiffe_id))))
            md_errlist_add(el, res, f, "\"%.80s\" is not a SPIFFE ID: %s", p->spiffe_id, why);
        break;
    case MESH__V1__PRINCIPAL__IDENTITY_SPIFFE_ID_PREFIX:
        snprintf(f, sizeof(f), "%s.spiffe_id_prefix", at);
        if (strncmp(p->spiffe_id_prefix, spiffe_scheme, sizeof(spiffe_scheme) - 1) != 0)
            md_errlist_add(el, res, f, "\"%.80s\" must start with \"spiffe://\"",
                           p->spiffe_id_prefix);
        break;
    case MESH__V1__PRINCIPAL__IDENTITY_TRUST_DOMAIN:
        snprintf(f, sizeof(f), "%s.trust_domain", at);
        if (strncmp(p->trust_domain, spiffe_scheme, sizeof(spiffe_scheme) - 1) == 0)
            md_errlist_add(el, res, f,
                           "\"%.80s\": a trust domain is the name alone (\"cluster.local\"), "
                           "without spiffe://",
                           p->trust_domain);
        else if ((why = md_spiffe_trust_domain_invalid(p->trust_domain, strlen(p->trust_domain))))
            md_errlist_add(el, res, f, "\"%.80s\" is not a trust domain: %s", p->trust_domain, why);
        break;
    case MESH__V1__PRINCIPAL__IDENTITY_AUTHENTICATED:
        snprintf(f, sizeof(f), "%s.authenticated", at);
        check_flag(el, res, f, "authenticated", p->authenticated);
        break;
    case MESH__V1__PRINCIPAL__IDENTITY_UNAUTHENTICATED:
        snprintf(f, sizeof(f), "%s.unauthenticated", at);
        check_flag(el, res, f, "unauthenticated", p->unauthenticated);
        break;
    case MESH__V1__PRINCIPAL__IDENTITY_ANY:
        snprintf(f, sizeof(f), "%s.any", at);
        check_flag(el, res, f, "any", p->any);
        break;
    default:
        md_errlist_add(el, res, at,
                       "one of spiffe_id, spiffe_id_prefix, trust_domain, authenticated, "
                       "unauthenticated or any is required");
        break;
    }
}

static void check_permission(struct md_errlist *el, const char *res, const char *at,
                             const Mesh__V1__Permission *p)
{
    char f[FIELD_LEN];
    if (p->grpc) {
        snprintf(f, sizeof(f), "%s.grpc", at);
        md_validate_grpc_match(el, res, f, p->grpc);
    }
    if (p->path_prefix[0]) {
        snprintf(f, sizeof(f), "%s.path_prefix", at);
        md_validate_path(el, res, f, p->path_prefix);
    }
    md_validate_header_matchers(el, res, at, p->headers, p->n_headers);
}

void md_validate_rbac(struct md_errlist *el, const char *res, const char *at,
                      const Mesh__V1__Rbac *r)
{
    char f[FIELD_LEN], pp[POLICY_LEN], item[ITEM_LEN];
    snprintf(f, sizeof(f), "%s.action", at);
    md_validate_enum(el, res, f, &mesh__v1__rbac__action__descriptor, (int)r->action);
    if (r->n_policies > MD_VALIDATE_MAX_RESOURCES) {
        /* policy names are checked pairwise */
        snprintf(f, sizeof(f), "%s.policies", at);
        md_errlist_add(el, res, f, "%zu defined, at most %u", r->n_policies,
                       MD_VALIDATE_MAX_RESOURCES);
        return;
    }
    for (size_t i = 0; i < r->n_policies; i++) {
        const Mesh__V1__RbacPolicy *p = r->policies[i];
        snprintf(pp, sizeof(pp), "%s.policies[%zu]", at, i);
        snprintf(f, sizeof(f), "%s.name", pp);
        md_validate_name_at(el, res, f, "policies", (void *const *)r->policies, i,
                            offsetof(Mesh__V1__RbacPolicy, name));
        for (size_t k = 0; k < p->n_principals; k++) {
            snprintf(item, sizeof(item), "%s.principals[%zu]", pp, k);
            check_principal(el, res, item, p->principals[k]);
        }
        for (size_t k = 0; k < p->n_permissions; k++) {
            snprintf(item, sizeof(item), "%s.permissions[%zu]", pp, k);
            check_permission(el, res, item, p->permissions[k]);
        }
    }
}
