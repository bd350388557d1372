/* SPDX-License-Identifier: Apache-2.0 */
/* RBAC in the snapshot (snapshot_rbac.c): policies, stats slots, the
 * config_dump, and every allocation failing in turn. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_rbac_snapshot(void **state)
{
    struct rfix r;
    rfix_init(&r);
    struct md_snapshot *s = load_snapshot(&r.h.f.b);
    const struct md_snap_rbac *l = s->listeners[1].http.rbac;
    assert_null(s->listeners[0].http.rbac);
    assert_non_null(l);
    assert_int_equal(l->scope, MD_RBAC_SCOPE_LISTENER);
    assert_string_equal(l->owner, "web");
    assert_int_equal(l->action, MD_RBAC_ALLOW);
    assert_int_equal(l->n_policies, 2);
    const struct md_snap_rbac_policy *p = &l->policies[0];
    assert_string_equal(p->name, "grpc-echo");
    assert_int_equal(p->n_principals, 6);
    assert_int_equal(p->principals[0].kind, MD_RBAC_ID_EXACT);
    assert_string_equal(p->principals[0].text, "spiffe://mesh.test/ns/shop/sa/web");
    assert_int_equal(p->principals[1].kind, MD_RBAC_ID_PREFIX);
    assert_int_equal(p->principals[2].kind, MD_RBAC_ID_TRUST_DOMAIN);
    assert_string_equal(p->principals[2].text, "spiffe://partner.test");
    assert_int_equal(p->principals[2].len, strlen("spiffe://partner.test"));
    assert_int_equal(p->principals[3].kind, MD_RBAC_ID_AUTHENTICATED);
    assert_int_equal(p->principals[4].kind, MD_RBAC_ID_UNAUTHENTICATED);
    assert_int_equal(p->principals[5].kind, MD_RBAC_ID_ANY);
    assert_string_equal(p->permissions[0].grpc, "/test.v1.Echo/Unary");
    assert_false(p->permissions[0].grpc_any_method);
    assert_null(p->permissions[0].path_prefix);
    assert_null(p->permissions[1].grpc);
    assert_string_equal(p->permissions[1].path_prefix, "/admin/");
    assert_int_equal(p->permissions[1].n_headers, 1);
    assert_string_equal(p->permissions[1].headers[0].value, "ops");
    assert_int_equal(l->policies[1].n_principals, 0);
    assert_int_equal(l->policies[1].n_permissions, 0);

    const struct md_snap_rbac *rr = s->route_configs[0].vhosts[0].routes[0].rbac;
    assert_non_null(rr);
    assert_null(s->route_configs[0].vhosts[0].routes[1].rbac);
    assert_int_equal(rr->scope, MD_RBAC_SCOPE_ROUTE);
    assert_string_equal(rr->owner, "api/routes[0]");
    assert_int_equal(rr->action, MD_RBAC_DENY);

    /* stats slots: listener policies, its "none", then the route's */
    assert_int_equal(s->n_rbac_stats, 5);
    assert_int_equal(l->policies[0].stat, 0);
    assert_int_equal(l->policies[1].stat, 1);
    assert_int_equal(l->stat_none, 2);
    assert_int_equal(rr->policies[0].stat, 3);
    assert_int_equal(rr->stat_none, 4);
    assert_string_equal(s->rbac_stats[1].scope, "listener");
    assert_string_equal(s->rbac_stats[1].owner, "web");
    assert_string_equal(s->rbac_stats[1].policy, "open");
    assert_string_equal(s->rbac_stats[2].policy, "");
    assert_string_equal(s->rbac_stats[3].scope, "route");
    assert_string_equal(s->rbac_stats[3].owner, "api/routes[0]");
    assert_string_equal(s->rbac_stats[3].policy, "deny-web");

    static const char *const want[] = {
        "    rbac {\n      action: ALLOW\n      policy {\n        name: \"grpc-echo\"\n",
        "          spiffe_id: \"spiffe://mesh.test/ns/shop/sa/web\"\n",
        "          trust_domain: \"partner.test\"\n",
        "          unauthenticated: true\n",
        "          grpc: \"/test.v1.Echo/Unary\"\n",
        "          path_prefix: \"/admin/\"\n          header { name: \"x-role\" exact: \"ops\" "
        "}\n",
        "        name: \"open\"\n        # any peer\n        # any request\n",
        "      rbac {\n        action: DENY\n",
    };
    assert_dump_has(s, want, sizeof(want) / sizeof(want[0]));
    md_snapshot_unref(s);
}

/* Routes need not have unique names: Rbacs with the same labels share
 * slots (one Prometheus series per label set), others keep their own. */
static void test_rbac_stats_shared_labels(void **state)
{
    struct rfix r;
    rfix_init(&r);
    r.h.r[0].name = "same";
    r.h.r[2].name = "same";
    r.h.r[2].rbac = &r.rr;
    r.h.r[3].rbac = &r.rr; /* unnamed: "api/routes[3]" */
    struct md_snapshot *s = load_snapshot(&r.h.f.b);
    const struct md_snap_route *rt = s->route_configs[0].vhosts[0].routes;
    assert_int_equal(s->n_rbac_stats, 3 + 2 + 2);
    assert_int_equal(rt[0].rbac->policies[0].stat, 3);
    assert_int_equal(rt[0].rbac->stat_none, 4);
    assert_int_equal(rt[2].rbac->policies[0].stat, 3);
    assert_int_equal(rt[2].rbac->stat_none, 4);
    assert_int_equal(rt[3].rbac->policies[0].stat, 5);
    assert_int_equal(rt[3].rbac->stat_none, 6);
    assert_string_equal(s->rbac_stats[4].owner, "same");
    assert_string_equal(s->rbac_stats[4].policy, "");
    assert_string_equal(s->rbac_stats[5].owner, "api/routes[3]");
    assert_string_equal(s->rbac_stats[5].policy, "deny-web");
    md_snapshot_unref(s);
}

static void test_rbac_snapshot_enomem(void **state)
{
    struct rfix r;
    rfix_init(&r);
    long points = 0;
    for (;; points++) {
        alloc_fail_at = points;
        alloc_count = 0;
        struct md_snapshot *s = NULL;
        int rc = md_snapshot_build(&r.h.f.b, &s);
        if (rc == 0) {
            md_snapshot_unref(s);
            break;
        }
        assert_int_equal(rc, MD_ENOMEM);
        assert_null(s);
    }
    alloc_fail_at = -1;
    assert_true(points > 60);
}

static void test_rbac_empty_is_valid(void **state)
{
    /* no policies: ALLOW refuses everything, DENY passes everything; both
     * are meaningful configurations */
    struct rfix r;
    rfix_init(&r);
    r.lr.n_policies = 0;
    r.rr.n_policies = 0;
    struct md_snapshot *s = load_snapshot(&r.h.f.b);
    assert_int_equal(s->n_rbac_stats, 2);
    assert_int_equal(s->listeners[1].http.rbac->stat_none, 0);
    assert_int_equal(s->route_configs[0].vhosts[0].routes[0].rbac->stat_none, 1);
    md_snapshot_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rbac_snapshot),
        cmocka_unit_test(test_rbac_stats_shared_labels),
        cmocka_unit_test(test_rbac_snapshot_enomem),
        cmocka_unit_test(test_rbac_empty_is_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
