/* SPDX-License-Identifier: Apache-2.0 */
/* A small HTTP/1.1 server for the admin port, on the control loop. It parses
 * requests with llhttp (keep-alive and pipelining: replies go out in order)
 * and asks a handler for each reply. A connection that opens with the HTTP/2
 * preface is h2c instead, for gRPC health checks (admin/admin_grpc.h).
 * Bounded: 64 connections of either kind, 8 KiB of request line and headers,
 * 30 s idle. */
#ifndef MESHD_ADMIN_ADMIN_H
#define MESHD_ADMIN_ADMIN_H

#include "admin/admin_grpc.h"
#include "core/addr.h"

#include <ev.h>
#include <stddef.h>

struct md_admin;

struct md_admin_reply {
    int status;               /* e.g. 200 */
    const char *content_type; /* NULL: text/plain; charset=utf-8 */
    const char *allow;        /* for 405: the Allow header, else NULL */
    char *body;               /* malloc'd (freed by the server) or NULL */
    size_t len;
};

/* Fills |r| for |method| (e.g. "GET") and |path| (query string removed). */
typedef void md_admin_handler(void *ctx, const char *method, const char *path,
                              struct md_admin_reply *r);

/* Binds |addr| and serves on |loop|; |handler| answers HTTP/1.1 requests and
 * |health| gRPC health checks (NULL: HTTP/1.1 only), both with |ctx|.
 * Returns NULL with *err = -errno or MD_ENOMEM. */
struct md_admin *md_admin_new(struct ev_loop *loop, const struct md_addr *addr, const char *label,
                              md_admin_handler *handler, md_admin_health_fn *health, void *ctx,
                              int *err);
/* Closes the socket and every connection. NULL is ignored. */
void md_admin_free(struct md_admin *a);

/* Sets |r| to |status| with a copy of |text| as body. */
void md_admin_reply_text(struct md_admin_reply *r, int status, const char *text);

#endif
