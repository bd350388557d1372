/* SPDX-License-Identifier: Apache-2.0 */
/* TLS credentials that can be replaced while in use: the one mutable cell in
 * an otherwise immutable snapshot. Workers take the current context for each
 * new connection; a reload builds a new one from the same files and swaps it
 * in only when it is good. A connection keeps the context it began with
 * (OpenSSL counts its references), so a reload never touches it. */
#ifndef MESHD_TLS_TLS_CREDS_H
#define MESHD_TLS_TLS_CREDS_H

#include "tls/tls_ctx.h"

#include <stdbool.h>
#include <stddef.h>

struct md_tls_creds_cfg {
    bool server;
    struct md_tls_files files;  /* copied */
    enum md_tls_peer_cert peer; /* server only */
    unsigned alpn;              /* MD_TLS_ALPN_*: spoken (server) or offered (client) */
};

struct md_tls_creds;

/* Builds the first context. Returns NULL with why in |err|. */
struct md_tls_creds *md_tls_creds_new(const struct md_tls_creds_cfg *cfg, char *err, size_t errlen);
void md_tls_creds_free(struct md_tls_creds *c);

/* A new connection's TLS state on the current context (any thread).
 * Returns NULL on ENOMEM. */
SSL *md_tls_creds_ssl(struct md_tls_creds *c);

/* Reads the files again; a good result replaces the current context.
 * Returns 0, or -1 with why in |err| (the current context stays). */
int md_tls_creds_reload(struct md_tls_creds *c, char *err, size_t errlen);

/* The files it is built from (for watching). */
const struct md_tls_files *md_tls_creds_files(const struct md_tls_creds *c);

#endif
