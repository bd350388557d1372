/* SPDX-License-Identifier: Apache-2.0 */
/* RBAC checks (validate_rbac.c): action, policy names, principals and
 * permissions, on listeners and routes. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_rbac_action_and_names(void **state)
{
    struct rfix r;
    rfix_init(&r);
    r.lr.action = 7;
    expect_error(&r.h.f.b,
                 "error: t.pb: " LRBAC "action: unknown enum value 7 (known: ALLOW, DENY)");
    r.lr.action = 0;
    r.p[1].name = "";
    expect_error(&r.h.f.b, LRBAC "policies[1].name: required");
    r.p[1].name = "a b";
    expect_error(&r.h.f.b, LRBAC "policies[1].name: \"a b\" must match [a-zA-Z0-9_.-]{1,64}");
    r.p[1].name = "grpc-echo";
    expect_error(&r.h.f.b, LRBAC "policies[1].name: duplicate of policies[0]");
    /* unique within one Rbac only: the route's may reuse a listener's name */
    r.p[1].name = "open";
    r.p[2].name = "open";
    int rc;
    size_t n;
    free(load(&r.h.f.b, 0, NULL, &rc, &n));
    assert_int_equal(rc, 0);
}

static void test_rbac_principals(void **state)
{
    struct rfix r;
    rfix_init(&r);
    r.pr[3].identity_case = MESH__V1__PRINCIPAL__IDENTITY__NOT_SET;
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[3]: one of spiffe_id, spiffe_id_prefix, "
                                 "trust_domain, authenticated, unauthenticated or any is required");
    rfix_init(&r);
    r.pr[0].spiffe_id = "spiffe://Mesh.test/x";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[0].spiffe_id: \"spiffe://Mesh.test/x\" is "
                                 "not a SPIFFE ID: trust domain has a character other than");
    /* the route's policy shares the principal: reported at its own path too */
    expect_error(&r.h.f.b, RRBAC "policies[0].principals[0].spiffe_id: \"spiffe://Mesh.test/x\"");
    r.pr[0].spiffe_id = "spiffe://mesh.test/a//b";
    expect_error(&r.h.f.b, "is not a SPIFFE ID: empty path segment");
    r.pr[0].spiffe_id = "";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[0].spiffe_id: \"\" is not a SPIFFE ID: "
                                 "does not start with spiffe://");
    rfix_init(&r);
    r.pr[1].spiffe_id_prefix = "mesh.test/ns/";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[1].spiffe_id_prefix: \"mesh.test/ns/\" "
                                 "must start with \"spiffe://\"");
    rfix_init(&r);
    r.pr[2].trust_domain = "";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[2].trust_domain: \"\" is not a trust "
                                 "domain: empty trust domain");
    r.pr[2].trust_domain = "Partner.test";
    expect_error(&r.h.f.b,
                 LRBAC "policies[0].principals[2].trust_domain: \"Partner.test\" is not a "
                       "trust domain: trust domain has a character other than");
    r.pr[2].trust_domain = "spiffe://partner.test";
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[2].trust_domain: "
                                 "\"spiffe://partner.test\": a trust domain is the name alone");
    rfix_init(&r);
    r.pr[3].authenticated = false;
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[3].authenticated: authenticated must be "
                                 "true when set (false matches no peer)");
    rfix_init(&r);
    r.pr[4].unauthenticated = false;
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[4].unauthenticated: unauthenticated must "
                                 "be true when set");
    rfix_init(&r);
    r.pr[5].any = false;
    expect_error(&r.h.f.b, LRBAC "policies[0].principals[5].any: any must be true when set");
}

static void test_rbac_permissions(void **state)
{
    struct rfix r;
    rfix_init(&r);
    r.g.service = "";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[0].grpc.service: required");
    r.g.service = "test v1";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[0].grpc.service: \"test v1\" is not a "
                                 "dotted identifier");
    r.g.service = "test.v1.Echo";
    r.g.method = "Un-ary";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[0].grpc.method: \"Un-ary\" is not an "
                                 "identifier");
    rfix_init(&r);
    r.pm[1].path_prefix = "admin/";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].path_prefix: \"admin/\" must start "
                                 "with '/'");
    r.pm[1].path_prefix = "/admin?x";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].path_prefix: \"/admin?x\": character "
                                 "'?' is not allowed in a path");
    /* header matchers: the routes' rules, at the permission's path */
    rfix_init(&r);
    r.hm.name = "X-Role";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].headers[0].name: \"X-Role\" must be "
                                 "lower case");
    r.hm.name = ":authority";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].headers[0].name: \":authority\": "
                                 "pseudo-headers cannot be matched here");
    r.hm.name = "x-role";
    r.hm.match_case = MESH__V1__HEADER_MATCHER__MATCH__NOT_SET;
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].headers[0]: exact or present is "
                                 "required");
    r.hm.match_case = MESH__V1__HEADER_MATCHER__MATCH_EXACT;
    r.hm.exact = "a\nb";
    expect_error(&r.h.f.b, LRBAC "policies[0].permissions[1].headers[0].exact: contains CR or LF");
    /* on a route: the same checks at the route's path */
    rfix_init(&r);
    r.p[2].n_permissions = 2;
    r.p[2].permissions = r.pms;
    r.pm[1].path_prefix = "x";
    expect_error(&r.h.f.b, RRBAC "policies[0].permissions[1].path_prefix: \"x\" must start with "
                                 "'/'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rbac_action_and_names),
        cmocka_unit_test(test_rbac_principals),
        cmocka_unit_test(test_rbac_permissions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
