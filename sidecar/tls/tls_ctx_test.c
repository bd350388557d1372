/* SPDX-License-Identifier: Apache-2.0 */
/* Against certificates minted at test time by certs/mint (and openssl for a
 * certificate without a SPIFFE ID). */
#include "tls/tls_ctx.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[] = "/tmp/meshd-tls-test-XXXXXX";
static char path[8][512];

static const char *file(int slot, const char *name)
{
    snprintf(path[slot], sizeof(path[slot]), "%s/%s", dir, name);
    return path[slot];
}

static int mint_all(void **state)
{
    char cmd[2048];
    if (!mkdtemp(dir))
        return -1;
    snprintf(cmd, sizeof(cmd),
             "set -e; m=%s/certs/mint; d=%s; exec >/dev/null 2>&1;"
             "$m ca $d --trust-domain mesh.test; $m workload $d web --ns shop --sa web;"
             "$m workload $d other --ns shop --sa other; $m workload $d gone --ns shop --sa gone "
             "--expired; echo 'not a certificate' > $d/junk.pem;"
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
             "-subj /CN=plain -addext subjectAltName=DNS:plain.test -keyout $d/plain.key "
             "-out $d/plain.pem;"
             "openssl pkey -in $d/web.key -aes256 -passout pass:secret -out $d/sealed.key",
             MESHD_SOURCE_DIR, dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int remove_all(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static SSL_CTX *server(const char *chain, const char *key, const char *ca,
                       enum md_tls_peer_cert peer, char *err, size_t errlen)
{
    struct md_tls_files f = {chain, key, ca};
    return md_tls_server_ctx_new(&f, peer, MD_TLS_ALPN_H2 | MD_TLS_ALPN_HTTP1, err, errlen);
}

static void test_identity_loads_and_names_its_spiffe_id(void **state)
{
    char err[512] = "";
    SSL_CTX *ctx = server(file(0, "web-chain.pem"), file(1, "web.key"), file(2, "bundle.pem"),
                          MD_TLS_PEER_REQUIRED, err, sizeof(err));
    assert_non_null(ctx);
    char id[MD_SPIFFE_ID_MAX + 1];
    assert_int_equal(
        md_tls_spiffe_id(SSL_CTX_get0_certificate(ctx), id, sizeof(id), err, sizeof(err)), 0);
    assert_string_equal(id, "spiffe://mesh.test/ns/shop/sa/web");
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx),
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    SSL_CTX_free(ctx);
}

static void expect_refused(const char *chain, const char *key, const char *ca,
                           enum md_tls_peer_cert peer, const char *want)
{
    char err[512] = "";
    SSL_CTX *ctx = server(chain, key, ca, peer, err, sizeof(err));
    if (ctx)
        SSL_CTX_free(ctx);
    assert_null(ctx);
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not say \"%s\"", err, want);
}

static void test_bad_material_is_refused_with_a_reason(void **state)
{
    expect_refused(file(0, "web.pem"), file(1, "other.key"), NULL, MD_TLS_PEER_NONE,
                   "does not match the certificate");
    expect_refused(file(0, "gone.pem"), file(1, "gone.key"), NULL, MD_TLS_PEER_NONE,
                   "the certificate has expired");
    expect_refused(file(0, "junk.pem"), file(1, "web.key"), NULL, MD_TLS_PEER_NONE,
                   "not a readable PEM certificate chain");
    expect_refused(file(0, "web.pem"), file(1, "junk.pem"), NULL, MD_TLS_PEER_NONE,
                   "not a readable PEM private key");
    expect_refused(file(0, "web.pem"), file(1, "missing.key"), NULL, MD_TLS_PEER_NONE,
                   "missing.key: not a readable PEM private key");
    expect_refused(file(0, "plain.pem"), file(1, "plain.key"), NULL, MD_TLS_PEER_NONE,
                   "no SPIFFE ID");
    /* An encrypted key: refused at once, no passphrase prompt. */
    expect_refused(file(0, "web.pem"), file(1, "sealed.key"), NULL, MD_TLS_PEER_NONE,
                   "an encrypted one");
    expect_refused(file(0, "web.pem"), file(1, "web.key"), NULL, MD_TLS_PEER_OPTIONAL,
                   "trusted_ca_file is required");
    expect_refused(file(0, "web.pem"), file(1, "web.key"), file(2, "junk.pem"),
                   MD_TLS_PEER_REQUIRED, "trusted_ca");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_loads_and_names_its_spiffe_id),
        cmocka_unit_test(test_bad_material_is_refused_with_a_reason),
    };
    return cmocka_run_group_tests(tests, mint_all, remove_all);
}
