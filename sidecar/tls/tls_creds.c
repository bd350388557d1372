/* SPDX-License-Identifier: Apache-2.0 */
#include "tls/tls_creds.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct md_tls_creds {
    pthread_mutex_t mu; /* guards ctx: taken once per handshake and per reload */
    SSL_CTX *ctx;
    struct md_tls_creds_cfg cfg; /* file names owned */
};

static SSL_CTX *build(const struct md_tls_creds_cfg *cfg, char *err, size_t errlen)
{
    return cfg->server ? md_tls_server_ctx_new(&cfg->files, cfg->peer, cfg->alpn, err, errlen)
                       : md_tls_client_ctx_new(&cfg->files, cfg->alpn, err, errlen);
}

static char *dup_or_null(const char *s, bool *ok)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *ok = false;
    return d;
}

struct md_tls_creds *md_tls_creds_new(const struct md_tls_creds_cfg *cfg, char *err, size_t errlen)
{
    struct md_tls_creds *c = calloc(1, sizeof(*c));
    bool ok = c != NULL;
    if (c) {
        c->cfg = *cfg;
        c->cfg.files.cert_chain = dup_or_null(cfg->files.cert_chain, &ok);
        c->cfg.files.private_key = dup_or_null(cfg->files.private_key, &ok);
        c->cfg.files.trusted_ca = dup_or_null(cfg->files.trusted_ca, &ok);
    }
    if (!ok) {
        snprintf(err, errlen, "out of memory");
        md_tls_creds_free(c);
        return NULL;
    }
    if (!(c->ctx = build(&c->cfg, err, errlen))) {
        md_tls_creds_free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void md_tls_creds_free(struct md_tls_creds *c)
{
    if (!c)
        return;
    if (c->ctx) {
        SSL_CTX_free(c->ctx);
        pthread_mutex_destroy(&c->mu);
    }
    free((char *)c->cfg.files.cert_chain);
    free((char *)c->cfg.files.private_key);
    free((char *)c->cfg.files.trusted_ca);
    free(c);
}

SSL *md_tls_creds_ssl(struct md_tls_creds *c)
{
    /* The lock covers taking a reference only: SSL_new's allocations run
     * outside it, so handshakes on all workers do not queue on one lock. */
    pthread_mutex_lock(&c->mu);
    SSL_CTX *ctx = c->ctx;
    SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&c->mu);
    SSL *ssl = SSL_new(ctx); /* holds its own reference to the context */
    SSL_CTX_free(ctx);
    return ssl;
}

int md_tls_creds_reload(struct md_tls_creds *c, char *err, size_t errlen)
{
    SSL_CTX *fresh = build(&c->cfg, err, errlen);
    if (!fresh)
        return -1;
    pthread_mutex_lock(&c->mu);
    SSL_CTX *old = c->ctx;
    c->ctx = fresh;
    pthread_mutex_unlock(&c->mu);
    SSL_CTX_free(old); /* connections made with it keep it alive */
    return 0;
}

const struct md_tls_files *md_tls_creds_files(const struct md_tls_creds *c)
{
    return &c->cfg.files;
}
