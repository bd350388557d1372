/* SPDX-License-Identifier: Apache-2.0 */
/* TLS material as a mesh uses it: a workload's identity (certificate chain
 * and key, checked before use), the trust bundle its peers are verified
 * against, and the SPIFFE ID a verified certificate names. Building block
 * of listener and cluster TLS; every failure comes back as one line that
 * says which file and what is wrong with it. */
#ifndef MESHD_TLS_TLS_CTX_H
#define MESHD_TLS_TLS_CTX_H

#include "core/spiffe.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stddef.h>

struct md_tls_files {
    const char *cert_chain; /* PEM: the leaf first, then intermediates */
    const char *private_key;
    const char *trusted_ca; /* PEM bundle peers must chain to; NULL: none */
};

/* Whether peers must present a certificate (mTLS) or may. */
enum md_tls_peer_cert { MD_TLS_PEER_REQUIRED, MD_TLS_PEER_OPTIONAL, MD_TLS_PEER_NONE };

/* Application protocols (ALPN), as a set. */
enum { MD_TLS_ALPN_H2 = 1, MD_TLS_ALPN_HTTP1 = 2 };

/* A server context: TLS 1.2 at least (1.3 preferred), forward-secret AEAD
 * suites only, session tickets on, the identity in |f| loaded and checked,
 * peers verified against f->trusted_ca per |peer|, ALPN choosing among
 * |alpn| (h2 first; a client offering only others is refused). Returns NULL
 * with a reason in |err| (|errlen| bytes). */
SSL_CTX *md_tls_server_ctx_new(const struct md_tls_files *f, enum md_tls_peer_cert peer,
                               unsigned alpn, char *err, size_t errlen);

/* A client context with the same protocol floor and suites: the server
 * verified against f->trusted_ca (required), f's identity presented when
 * f->cert_chain is set, |alpn| (one protocol) offered. */
SSL_CTX *md_tls_client_ctx_new(const struct md_tls_files *f, unsigned alpn, char *err,
                               size_t errlen);

/* Loads and checks the identity in |f| into |ctx|: the chain parses, the key
 * matches the leaf, the leaf is within its validity period and names exactly
 * one SPIFFE ID. Returns 0, or -1 with a reason in |err|. */
int md_tls_load_identity(SSL_CTX *ctx, const struct md_tls_files *f, char *err, size_t errlen);

/* The SPIFFE ID |cert| names in its URI SAN, NUL-terminated into |out|.
 * Returns 0, or -1 with a reason in |err|: none, more than one, or one that
 * breaks the SPIFFE ID rules (md_spiffe_id_invalid). */
int md_tls_spiffe_id(X509 *cert, char *out, size_t outlen, char *err, size_t errlen);

#endif
