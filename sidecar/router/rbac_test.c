/* SPDX-License-Identifier: Apache-2.0 */
/* RBAC decisions over hand-built snapshot rules: every principal kind against
 * set and absent peer IDs, permissions (gRPC, path prefix, headers), ALLOW
 * and DENY, first match wins, empty lists. */
#include "router/rbac.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define TEXT(t) .text = (t), .len = sizeof(t) - 1
#define HDR(n, v)                                                                                  \
    {                                                                                              \
        .name = (n), .name_len = sizeof(n) - 1, .value = (v), .value_len = sizeof(v) - 1           \
    }

#define WEB "spiffe://mesh.test/ns/shop/sa/web"
static const char *const web = WEB;

/* A request: pseudo-headers first, as the codecs deliver them. */
static const struct md_hdr grpc_unary[] = {
    HDR(":method", "POST"),   HDR(":path", "/test.v1.Echo/Unary"),
    HDR(":authority", "svc"), HDR("content-type", "application/grpc"),
    HDR("x-role", "ops"),
};
static const struct md_hdr grpc_stream[] = {
    HDR(":method", "POST"),
    HDR(":path", "/test.v1.Echo/ServerStream"),
    HDR("content-type", "application/grpc"),
};
static const struct md_hdr admin_get[] = {
    HDR(":method", "GET"),
    HDR(":path", "/admin/users?x=1"),
    HDR("x-role", "dev"),
    HDR("x-role", "ops"),
};
static const struct md_hdr plain_get[] = {
    HDR(":method", "GET"),
    HDR(":path", "/"),
};

struct req {
    const struct md_hdr *h;
    size_t n;
    bool grpc;
};
#define REQ(a, g) ((struct req){(a), N_ELEMS(a), (g)})

/* One ALLOW rule with a single policy holding |pr| and |pm|. */
static bool allows(struct md_snap_rbac_principal *pr, size_t n_pr,
                   struct md_snap_rbac_permission *pm, size_t n_pm, struct req r, const char *id)
{
    struct md_snap_rbac_policy p = {.name = "p",
                                    .stat = 3,
                                    .n_principals = n_pr,
                                    .principals = pr,
                                    .n_permissions = n_pm,
                                    .permissions = pm};
    struct md_snap_rbac rbac = {
        .action = MD_RBAC_ALLOW, .n_policies = 1, .policies = &p, .stat_none = 9};
    struct md_rbac_decision d;
    bool ok = md_rbac_check(&rbac, r.h, r.n, r.grpc, id, &d);
    assert_int_equal(ok, d.allowed);
    assert_ptr_equal(d.policy, ok ? &p : NULL);
    assert_int_equal(d.stat, ok ? 3 : 9);
    return ok;
}

static bool principal_allows(struct md_snap_rbac_principal pr, const char *id)
{
    return allows(&pr, 1, NULL, 0, REQ(plain_get, false), id);
}

static void test_principal_exact(void **state)
{
    struct md_snap_rbac_principal p = {.kind = MD_RBAC_ID_EXACT, TEXT(WEB)};
    assert_true(principal_allows(p, web));
    assert_false(principal_allows(p, "spiffe://mesh.test/ns/shop/sa/web2"));
    assert_false(principal_allows(p, "spiffe://mesh.test/ns/shop/sa"));
    assert_false(principal_allows(p, NULL));
}

static void test_principal_prefix(void **state)
{
    struct md_snap_rbac_principal p = {.kind = MD_RBAC_ID_PREFIX,
                                       TEXT("spiffe://mesh.test/ns/shop/")};
    assert_true(principal_allows(p, web));
    assert_true(principal_allows(p, "spiffe://mesh.test/ns/shop/sa/db"));
    assert_false(principal_allows(p, "spiffe://mesh.test/ns/shopping/sa/web"));
    assert_false(principal_allows(p, "spiffe://mesh.test/ns/shop"));
    assert_false(principal_allows(p, NULL));
}

static void test_principal_trust_domain(void **state)
{
    struct md_snap_rbac_principal p = {.kind = MD_RBAC_ID_TRUST_DOMAIN, TEXT("spiffe://td")};
    assert_true(principal_allows(p, "spiffe://td"));
    assert_true(principal_allows(p, "spiffe://td/ns/a/sa/b"));
    assert_false(principal_allows(p, "spiffe://td2/ns/a/sa/b"));
    assert_false(principal_allows(p, "spiffe://td2"));
    assert_false(principal_allows(p, "spiffe://t"));
    assert_false(principal_allows(p, "spiffe://other/td"));
    assert_false(principal_allows(p, NULL));
}

static void test_principal_flags(void **state)
{
    struct md_snap_rbac_principal authn = {.kind = MD_RBAC_ID_AUTHENTICATED};
    struct md_snap_rbac_principal unauthn = {.kind = MD_RBAC_ID_UNAUTHENTICATED};
    struct md_snap_rbac_principal any = {.kind = MD_RBAC_ID_ANY};
    assert_true(principal_allows(authn, web));
    assert_false(principal_allows(authn, NULL));
    assert_false(principal_allows(unauthn, web));
    assert_true(principal_allows(unauthn, NULL));
    assert_true(principal_allows(any, web));
    assert_true(principal_allows(any, NULL));
}

static void test_principals_are_or(void **state)
{
    struct md_snap_rbac_principal pr[] = {
        {.kind = MD_RBAC_ID_EXACT, TEXT("spiffe://mesh.test/a")},
        {.kind = MD_RBAC_ID_TRUST_DOMAIN, TEXT("spiffe://partner.test")},
    };
    struct req r = REQ(plain_get, false);
    assert_true(allows(pr, 2, NULL, 0, r, "spiffe://mesh.test/a"));
    assert_true(allows(pr, 2, NULL, 0, r, "spiffe://partner.test/x"));
    assert_false(allows(pr, 2, NULL, 0, r, "spiffe://mesh.test/b"));
    /* no principals: any peer, identified or not */
    assert_true(allows(NULL, 0, NULL, 0, r, NULL));
    assert_true(allows(NULL, 0, NULL, 0, r, web));
}

static void test_permission_grpc(void **state)
{
    struct md_snap_rbac_permission unary = {.grpc = "/test.v1.Echo/Unary",
                                            .grpc_len = strlen("/test.v1.Echo/Unary")};
    struct md_snap_rbac_permission svc = {
        .grpc = "/test.v1.Echo/", .grpc_len = strlen("/test.v1.Echo/"), .grpc_any_method = true};
    assert_true(allows(NULL, 0, &unary, 1, REQ(grpc_unary, true), NULL));
    assert_false(allows(NULL, 0, &unary, 1, REQ(grpc_stream, true), NULL));
    /* the path alone is not enough: the request must be gRPC */
    assert_false(allows(NULL, 0, &unary, 1, REQ(grpc_unary, false), NULL));
    assert_true(allows(NULL, 0, &svc, 1, REQ(grpc_unary, true), NULL));
    assert_true(allows(NULL, 0, &svc, 1, REQ(grpc_stream, true), NULL));
    assert_false(allows(NULL, 0, &svc, 1, REQ(plain_get, true), NULL));
}

static void test_permission_path_and_headers(void **state)
{
    struct md_snap_header_matcher ops = {.name = "x-role",
                                         .name_len = 6,
                                         .kind = MD_HDR_MATCH_EXACT,
                                         .value = "ops",
                                         .value_len = 3};
    struct md_snap_header_matcher no_debug = {
        .name = "x-debug", .name_len = 7, .kind = MD_HDR_MATCH_ABSENT};
    struct md_snap_header_matcher has_role = {
        .name = "x-role", .name_len = 6, .kind = MD_HDR_MATCH_PRESENT};
    struct md_snap_rbac_permission admin = {.path_prefix = "/admin/", .path_prefix_len = 7};
    assert_true(allows(NULL, 0, &admin, 1, REQ(admin_get, false), NULL));
    assert_false(allows(NULL, 0, &admin, 1, REQ(plain_get, false), NULL));
    struct md_snap_header_matcher hm[] = {ops, no_debug};
    struct md_snap_rbac_permission role = {.n_headers = 2, .headers = hm};
    /* x-role repeated: any of its values may be the one */
    assert_true(allows(NULL, 0, &role, 1, REQ(admin_get, false), NULL));
    assert_true(allows(NULL, 0, &role, 1, REQ(grpc_unary, true), NULL));
    assert_false(allows(NULL, 0, &role, 1, REQ(grpc_stream, true), NULL));
    struct md_snap_rbac_permission present = {.n_headers = 1, .headers = &has_role};
    assert_true(allows(NULL, 0, &present, 1, REQ(admin_get, false), NULL));
    assert_false(allows(NULL, 0, &present, 1, REQ(plain_get, false), NULL));
    /* every part of one permission must hold */
    struct md_snap_rbac_permission both = {
        .path_prefix = "/admin/", .path_prefix_len = 7, .n_headers = 1, .headers = &ops};
    assert_true(allows(NULL, 0, &both, 1, REQ(admin_get, false), NULL));
    assert_false(allows(NULL, 0, &both, 1, REQ(grpc_unary, true), NULL));
}

static void test_permissions_are_or_and_principal_and(void **state)
{
    struct md_snap_rbac_permission pm[] = {
        {.grpc = "/test.v1.Echo/Unary", .grpc_len = strlen("/test.v1.Echo/Unary")},
        {.path_prefix = "/admin/", .path_prefix_len = 7},
    };
    struct md_snap_rbac_principal shop = {.kind = MD_RBAC_ID_PREFIX,
                                          TEXT("spiffe://mesh.test/ns/shop/")};
    assert_true(allows(NULL, 0, pm, 2, REQ(grpc_unary, true), NULL));
    assert_true(allows(NULL, 0, pm, 2, REQ(admin_get, false), NULL));
    assert_false(allows(NULL, 0, pm, 2, REQ(grpc_stream, true), NULL));
    /* a principal and a permission must both match */
    assert_true(allows(&shop, 1, pm, 2, REQ(grpc_unary, true), web));
    assert_false(allows(&shop, 1, pm, 2, REQ(grpc_unary, true), NULL));
    assert_false(allows(&shop, 1, pm, 2, REQ(grpc_stream, true), web));
}

/* Two policies: "unary" (Echo/Unary for anyone), then "web" (anything for
 * the web identity). */
static struct md_snap_rbac_permission unary_pm = {.grpc = "/test.v1.Echo/Unary",
                                                  .grpc_len = sizeof("/test.v1.Echo/Unary") - 1};
static struct md_snap_rbac_principal web_pr = {.kind = MD_RBAC_ID_EXACT, TEXT(WEB)};
static struct md_snap_rbac_policy two[] = {
    {.name = "unary", .stat = 0, .n_permissions = 1, .permissions = &unary_pm},
    {.name = "web", .stat = 1, .n_principals = 1, .principals = &web_pr},
};

static struct md_rbac_decision decide(enum md_rbac_action action, size_t n_policies, struct req r,
                                      const char *id)
{
    struct md_snap_rbac rbac = {
        .action = action, .n_policies = n_policies, .policies = two, .stat_none = 2};
    struct md_rbac_decision d;
    bool ok = md_rbac_check(&rbac, r.h, r.n, r.grpc, id, &d);
    assert_int_equal(ok, d.allowed);
    return d;
}

static void test_allow_semantics(void **state)
{
    struct md_rbac_decision d = decide(MD_RBAC_ALLOW, 2, REQ(grpc_unary, true), web);
    /* both match: the first decides */
    assert_true(d.allowed);
    assert_string_equal(d.policy->name, "unary");
    assert_int_equal(d.stat, 0);
    d = decide(MD_RBAC_ALLOW, 2, REQ(grpc_stream, true), web);
    assert_true(d.allowed);
    assert_string_equal(d.policy->name, "web");
    assert_int_equal(d.stat, 1);
    d = decide(MD_RBAC_ALLOW, 2, REQ(grpc_stream, true), NULL);
    assert_false(d.allowed);
    assert_null(d.policy);
    assert_int_equal(d.stat, 2);
    /* no policies: nothing is allowed */
    d = decide(MD_RBAC_ALLOW, 0, REQ(grpc_unary, true), web);
    assert_false(d.allowed);
    assert_null(d.policy);
    assert_int_equal(d.stat, 2);
}

static void test_deny_semantics(void **state)
{
    struct md_rbac_decision d = decide(MD_RBAC_DENY, 2, REQ(grpc_unary, true), NULL);
    assert_false(d.allowed);
    assert_string_equal(d.policy->name, "unary");
    assert_int_equal(d.stat, 0);
    d = decide(MD_RBAC_DENY, 2, REQ(plain_get, false), web);
    assert_false(d.allowed);
    assert_string_equal(d.policy->name, "web");
    d = decide(MD_RBAC_DENY, 2, REQ(grpc_stream, true), NULL);
    assert_true(d.allowed);
    assert_null(d.policy);
    assert_int_equal(d.stat, 2);
    /* no policies: everything passes */
    d = decide(MD_RBAC_DENY, 0, REQ(grpc_unary, true), web);
    assert_true(d.allowed);
    assert_int_equal(d.stat, 2);
}

static void test_request_without_path(void **state)
{
    static const struct md_hdr no_path[] = {HDR(":method", "GET")};
    struct md_snap_rbac_permission admin = {.path_prefix = "/admin/", .path_prefix_len = 7};
    assert_false(allows(NULL, 0, &admin, 1, REQ(no_path, false), NULL));
    assert_false(allows(NULL, 0, &unary_pm, 1, REQ(no_path, true), NULL));
    assert_true(allows(NULL, 0, NULL, 0, REQ(no_path, false), NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_principal_exact),
        cmocka_unit_test(test_principal_prefix),
        cmocka_unit_test(test_principal_trust_domain),
        cmocka_unit_test(test_principal_flags),
        cmocka_unit_test(test_principals_are_or),
        cmocka_unit_test(test_permission_grpc),
        cmocka_unit_test(test_permission_path_and_headers),
        cmocka_unit_test(test_permissions_are_or_and_principal_and),
        cmocka_unit_test(test_allow_semantics),
        cmocka_unit_test(test_deny_semantics),
        cmocka_unit_test(test_request_without_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
