/* SPDX-License-Identifier: Apache-2.0 */
/* SPIFFE ID and trust domain syntax: what is accepted, and that each refusal
 * says why. */
#include "core/spiffe.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct refusal {
    const char *text, *why;
};

static void test_spiffe_id_rules(void **state)
{
    static const char *const ok[] = {"spiffe://mesh.test", "spiffe://mesh.test/ns/a/sa/b",
                                     "spiffe://a-b_c.d/Path.With-Chars_1"};
    static const struct refusal bad[] = {
        {"https://mesh.test/x", "spiffe://"},
        {"spiffe:///ns/a", "empty trust domain"},
        {"spiffe://", "empty trust domain"},
        {"spiffe://Mesh.Test/x", "trust domain"},
        {"spiffe://mesh.test/", "empty path segment"},
        {"spiffe://mesh.test/a//b", "empty path segment"},
        {"spiffe://mesh.test/a/../b", "'..'"},
        {"spiffe://mesh.test/a?b", "path has a character"},
        {"spiffe://mesh.test:8443/a", "trust domain"},
    };
    for (size_t i = 0; i < N_ELEMS(ok); i++)
        assert_null(md_spiffe_id_invalid(ok[i], strlen(ok[i])));
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        const char *why = md_spiffe_id_invalid(bad[i].text, strlen(bad[i].text));
        if (!why || !strstr(why, bad[i].why))
            fail_msg("%s: %s", bad[i].text, why ? why : "accepted");
    }
    char longid[MD_SPIFFE_ID_MAX + 2];
    memset(longid, 'a', sizeof(longid));
    memcpy(longid, "spiffe://", 9);
    assert_non_null(md_spiffe_id_invalid(longid, sizeof(longid)));
}

static void test_trust_domain_rules(void **state)
{
    static const char *const ok[] = {"mesh.test", "cluster.local", "a-b_c.9"};
    static const struct refusal bad[] = {
        {"", "empty trust domain"},
        {"Mesh.test", "trust domain has a character"},
        {"mesh.test/ns", "trust domain has a character"},
        {"spiffe://mesh.test", "trust domain has a character"},
        {"mesh.test:8443", "trust domain has a character"},
    };
    for (size_t i = 0; i < N_ELEMS(ok); i++)
        assert_null(md_spiffe_trust_domain_invalid(ok[i], strlen(ok[i])));
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        const char *why = md_spiffe_trust_domain_invalid(bad[i].text, strlen(bad[i].text));
        if (!why || !strstr(why, bad[i].why))
            fail_msg("\"%s\": %s", bad[i].text, why ? why : "accepted");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spiffe_id_rules),
        cmocka_unit_test(test_trust_domain_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
