/* SPDX-License-Identifier: Apache-2.0 */
/* TLS checks for listeners and clusters: required files, modes, peer
 * identities, and the files themselves (each context is built once here,
 * so that a bad certificate is a bundle error, not a failed handshake). */
#include "core/spiffe.h"
#include "tls/tls_ctx.h"
#include "validate.h"

#include <stdio.h>
#include <string.h>

#define MAX_HANDSHAKE_TIMEOUT_MS 60000u
#define MAX_SNI 253u

/* Fills |f| from |c| (NULL: no identity). Returns false after adding
 * errors for missing files. */
static bool check_certificate(struct md_errlist *el, const char *res, const char *at,
                              const Mesh__V1__TlsCertificate *c, struct md_tls_files *f)
{
    char field[96];
    bool ok = true;
    if (!c[0].certificate_chain_file[0]) {
        snprintf(field, sizeof(field), "%s.certificate_chain_file", at);
        md_errlist_add(el, res, field, "required");
        ok = false;
    }
    if (!c[0].private_key_file[0]) {
        snprintf(field, sizeof(field), "%s.private_key_file", at);
        md_errlist_add(el, res, field, "required");
        ok = false;
    }
    f->cert_chain = c->certificate_chain_file;
    f->private_key = c->private_key_file;
    return ok;
}

void md_validate_downstream_tls(struct md_errlist *el, const char *res,
                                const Mesh__V1__DownstreamTlsContext *t, unsigned alpn)
{
    struct md_tls_files f = {0};
    bool ok = true;
    if (!t->certificate) {
        md_errlist_add(el, res, "tls.certificate", "required: the identity meshd presents");
        ok = false;
    } else {
        ok = check_certificate(el, res, "tls.certificate", t->certificate, &f);
    }
    md_validate_enum(el, res, "tls.client_certificate",
                     &mesh__v1__downstream_tls_context__client_certificate__descriptor,
                     (int)t->client_certificate);
    enum md_tls_peer_cert peer =
        t->client_certificate == MESH__V1__DOWNSTREAM_TLS_CONTEXT__CLIENT_CERTIFICATE__NONE
            ? MD_TLS_PEER_NONE
        : t->client_certificate == MESH__V1__DOWNSTREAM_TLS_CONTEXT__CLIENT_CERTIFICATE__OPTIONAL
            ? MD_TLS_PEER_OPTIONAL
            : MD_TLS_PEER_REQUIRED;
    if (t->trusted_ca_file[0]) {
        f.trusted_ca = t->trusted_ca_file;
    } else if (peer != MD_TLS_PEER_NONE) {
        md_errlist_add(el, res, "tls.trusted_ca_file",
                       "required: client certificates are verified against it (client_certificate "
                       "%s)",
                       peer == MD_TLS_PEER_REQUIRED ? "REQUIRE" : "OPTIONAL");
        ok = false;
    }
    md_validate_range0(el, res, "tls.handshake_timeout_ms", t->handshake_timeout_ms, 1,
                       MAX_HANDSHAKE_TIMEOUT_MS, " ms");
    char why[1024];
    SSL_CTX *ctx = ok ? md_tls_server_ctx_new(&f, peer, alpn, why, sizeof(why)) : NULL;
    if (ok && !ctx)
        md_errlist_add(el, res, "tls", "%s", why);
    SSL_CTX_free(ctx);
}

/* '_' is not a host name character, but SRV labels ("_grpc._tcp") use it. */
static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

void md_validate_host_name(struct md_errlist *el, const char *res, const char *field,
                           const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < len || len == 0; i++) {
        if (len == 0 || !name_char(name[i]) || len > MAX_SNI) {
            md_errlist_add(el, res, field,
                           "\"%.80s\" is not a host name (letters, digits, '-', '.', '_'; 1 to %u)",
                           name, MAX_SNI);
            break;
        }
    }
}

void md_validate_upstream_tls(struct md_errlist *el, const char *res,
                              const Mesh__V1__UpstreamTlsContext *t, unsigned alpn)
{
    struct md_tls_files f = {0};
    bool ok = !t->certificate || check_certificate(el, res, "tls.certificate", t->certificate, &f);
    if (t->trusted_ca_file[0]) {
        f.trusted_ca = t->trusted_ca_file;
    } else {
        md_errlist_add(el, res, "tls.trusted_ca_file",
                       "required: the server's certificate is verified against it");
        ok = false;
    }
    if (t->sni[0])
        md_validate_host_name(el, res, "tls.sni", t->sni);
    for (size_t i = 0; i < t->n_match_spiffe_ids; i++) {
        const char *id = t->match_spiffe_ids[i];
        const char *why = md_spiffe_id_invalid(id, strlen(id));
        if (why) {
            char field[64];
            snprintf(field, sizeof(field), "tls.match_spiffe_ids[%zu]", i);
            md_errlist_add(el, res, field, "\"%.80s\" is not a SPIFFE ID: %s", id, why);
        }
    }
    char why[1024];
    SSL_CTX *ctx = ok ? md_tls_client_ctx_new(&f, alpn, why, sizeof(why)) : NULL;
    if (ok && !ctx)
        md_errlist_add(el, res, "tls", "%s", why);
    SSL_CTX_free(ctx);
}
