/* SPDX-License-Identifier: Apache-2.0 */
#include "tls/tls_ctx.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* TLS 1.2 suites: ECDHE (forward secrecy) with an AEAD only. TLS 1.3's are
 * all of that kind already. */
#define TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* OpenSSL's reason for the last failure, when it has one. */
    unsigned long e = ERR_peek_last_error();
    if (e && n >= 0 && (size_t)n < errlen) {
        const char *r = ERR_reason_error_string(e);
        snprintf(err + n, errlen - (size_t)n, " (%s)", r ? r : "openssl error");
    }
    ERR_clear_error();
    return -1;
}

int md_tls_spiffe_id(X509 *cert, char *out, size_t outlen, char *err, size_t errlen)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    const char *found = NULL;
    size_t found_len = 0;
    int n_spiffe = 0;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI)
            continue;
        const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        size_t len = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (len >= 7 && strncasecmp(u, "spiffe:", 7) == 0 && n_spiffe++ == 0) {
            found = u;
            found_len = len;
        }
    }
    int rc = 0;
    const char *why;
    if (n_spiffe == 0) {
        rc = fail(err, errlen, "no SPIFFE ID: the certificate has no spiffe:// URI SAN");
    } else if (n_spiffe > 1) {
        rc = fail(err, errlen, "%d spiffe:// URI SANs: a SVID names exactly one", n_spiffe);
    } else if (memchr(found, 0, found_len) || (why = md_spiffe_id_invalid(found, found_len))) {
        rc = fail(err, errlen, "SPIFFE ID \"%.*s\": %s", (int)(found_len > 200 ? 200 : found_len),
                  found, memchr(found, 0, found_len) ? "contains a NUL byte" : why);
    } else if (found_len >= outlen) {
        rc = fail(err, errlen, "SPIFFE ID longer than %zu bytes", outlen - 1);
    } else {
        memcpy(out, found, found_len);
        out[found_len] = 0;
    }
    GENERAL_NAMES_free(names);
    return rc;
}

int md_tls_load_identity(SSL_CTX *ctx, const struct md_tls_files *f, char *err, size_t errlen)
{
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, f->cert_chain) != 1)
        return fail(err, errlen, "certificate_chain_file %s: not a readable PEM certificate chain",
                    f->cert_chain);
    /* Parsed apart from using it, so that a bad file and a wrong key say so. */
    BIO *b = BIO_new_file(f->private_key, "r");
    /* No passphrase callback would make OpenSSL prompt on the terminal (or
     * stdin), on the control thread: an encrypted key is refused instead. */
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!key)
        return fail(err, errlen,
                    "private_key_file %s: not a readable PEM private key (or an encrypted one: "
                    "keys are read without a passphrase)",
                    f->private_key);
    int used = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    if (used != 1 || SSL_CTX_check_private_key(ctx) != 1)
        return fail(err, errlen, "private_key_file %s does not match the certificate in %s",
                    f->private_key, f->cert_chain);
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0)
        return fail(err, errlen, "certificate_chain_file %s: the certificate has expired",
                    f->cert_chain);
    if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
        return fail(err, errlen, "certificate_chain_file %s: the certificate is not valid yet",
                    f->cert_chain);
    char id[MD_SPIFFE_ID_MAX + 1], why[512];
    if (md_tls_spiffe_id(leaf, id, sizeof(id), why, sizeof(why)) < 0)
        return fail(err, errlen, "certificate_chain_file %s: %s", f->cert_chain, why);
    return 0;
}

/* What every context shares: the protocol floor, the suites, no
 * renegotiation, small idle connections, and writes that resume after a
 * full socket from a buffer that may have moved. */
static SSL_CTX *ctx_new(const SSL_METHOD *m, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(m);
    if (!ctx) {
        fail(err, errlen, "out of memory for a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* A peer that closes without close_notify ends the stream like a FIN:
     * HTTP's own framing tells a cut message from a whole one. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        fail(err, errlen, "cipher suites");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int load_ca(SSL_CTX *ctx, const char *ca, char *err, size_t errlen)
{
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1)
        return 0;
    return fail(err, errlen, "trusted_ca_file %s: not a readable PEM certificate bundle", ca);
}

/* Does the client's ALPN list |in| (RFC 7301 §3.1 wire form) offer |p|? */
static const unsigned char *offered(const unsigned char *in, unsigned inlen, const char *p)
{
    size_t plen = strlen(p);
    for (unsigned i = 0; i < inlen; i += 1u + in[i])
        if (in[i] == plen && i + 1 + plen <= inlen && memcmp(in + i + 1, p, plen) == 0)
            return in + i + 1;
    return NULL;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned speaks = (unsigned)(uintptr_t)arg;
    const unsigned char *p;
    if ((speaks & MD_TLS_ALPN_H2) && (p = offered(in, inlen, "h2"))) {
        *out = p;
        *outlen = 2;
        return SSL_TLSEXT_ERR_OK;
    }
    if ((speaks & MD_TLS_ALPN_HTTP1) && (p = offered(in, inlen, "http/1.1"))) {
        *out = p;
        *outlen = 8;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
}

SSL_CTX *md_tls_server_ctx_new(const struct md_tls_files *f, enum md_tls_peer_cert peer,
                               unsigned alpn, char *err, size_t errlen)
{
    if (peer != MD_TLS_PEER_NONE && !f->trusted_ca) {
        fail(err, errlen, "peer certificates are verified: trusted_ca_file is required");
        return NULL;
    }
    SSL_CTX *ctx = ctx_new(TLS_server_method(), err, errlen);
    if (!ctx)
        return NULL;
    if (md_tls_load_identity(ctx, f, err, errlen) < 0 ||
        (f->trusted_ca && load_ca(ctx, f->trusted_ca, err, errlen) < 0))
        goto bad;
    SSL_CTX_set_verify(ctx,
                       peer == MD_TLS_PEER_REQUIRED
                           ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                       : peer == MD_TLS_PEER_OPTIONAL ? SSL_VERIFY_PEER
                                                      : SSL_VERIFY_NONE,
                       NULL);
    /* Sessions resumed with a verified client must be ours (RFC 5077
     * tickets are on by default; this names whose they are). */
    static const unsigned char sid_ctx[] = "meshd";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, (void *)(uintptr_t)alpn);
    return ctx;
bad:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *md_tls_client_ctx_new(const struct md_tls_files *f, unsigned alpn, char *err,
                               size_t errlen)
{
    if (!f->trusted_ca) {
        fail(err, errlen, "the server is verified: trusted_ca_file is required");
        return NULL;
    }
    SSL_CTX *ctx = ctx_new(TLS_client_method(), err, errlen);
    if (!ctx)
        return NULL;
    if ((f->cert_chain && md_tls_load_identity(ctx, f, err, errlen) < 0) ||
        load_ca(ctx, f->trusted_ca, err, errlen) < 0)
        goto bad;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char h2[] = "\x02h2", h1[] = "\x08http/1.1";
    /* SSL_CTX_set_alpn_protos returns 0 on success */
    if (alpn && SSL_CTX_set_alpn_protos(ctx, alpn == MD_TLS_ALPN_H2 ? h2 : h1,
                                        alpn == MD_TLS_ALPN_H2 ? sizeof(h2) - 1 : sizeof(h1) - 1)) {
        fail(err, errlen, "out of memory for ALPN");
        goto bad;
    }
    return ctx;
bad:
    SSL_CTX_free(ctx);
    return NULL;
}
