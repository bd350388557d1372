/* SPDX-License-Identifier: Apache-2.0 */
/* gRPC health checking (grpc.health.v1.Health/Check) on the admin port, over
 * h2c with prior knowledge: an nghttp2 server session without a socket. The
 * admin server (admin.c) tells HTTP/2 from HTTP/1.1 by the first bytes, feeds
 * this session what it reads and writes out what it produces; the socket,
 * the connection limit and the idle timeout stay there.
 *
 * Answers, per stream:
 *   POST /grpc.health.v1.Health/Check   HealthCheckResponse{status} and
 *       grpc-status 0 when the health callback knows the service; trailers-only
 *       NOT_FOUND (5) when it does not (as grpc's reference server does);
 *       INVALID_ARGUMENT (3) for a malformed, compressed or missing request
 *       message; RESOURCE_EXHAUSTED (8) for a body over 4 KiB.
 *   anything else, Health/Watch included: trailers-only UNIMPLEMENTED (12).
 * Bounded: 8 concurrent streams, 4 KiB of request body per stream. */
#ifndef MESHD_ADMIN_ADMIN_GRPC_H
#define MESHD_ADMIN_ADMIN_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* HealthCheckResponse.ServingStatus, plus "no such service". */
enum md_admin_health {
    MD_ADMIN_HEALTH_SERVING = 1,
    MD_ADMIN_HEALTH_NOT_SERVING = 2,
    MD_ADMIN_HEALTH_UNKNOWN = 3, /* answered with grpc-status NOT_FOUND */
};

/* The status of |service| (|len| bytes, not NUL-terminated; "" is the whole
 * server). Called on the admin's loop, once per Check. */
typedef enum md_admin_health md_admin_health_fn(void *ctx, const char *service, size_t len);

struct md_admin_grpc;

/* A server session that has queued its SETTINGS; |health| and |ctx| are
 * borrowed for its life. Returns NULL with *err = MD_ENOMEM. */
struct md_admin_grpc *md_admin_grpc_new(md_admin_health_fn *health, void *ctx, int *err);
void md_admin_grpc_free(struct md_admin_grpc *g);

/* Takes |n| bytes read from the peer (the client preface first). Returns 0,
 * or MD_EPROTO for bytes that end the connection: a GOAWAY is then queued,
 * and the caller sends what is left and closes. */
int md_admin_grpc_recv(struct md_admin_grpc *g, const uint8_t *b, size_t n);

/* Points *|data| at the next bytes to write (valid until the next call).
 * Returns their count, 0 when nothing is pending, or MD_ENOMEM. */
ssize_t md_admin_grpc_send(struct md_admin_grpc *g, const uint8_t **data);

/* True once the session wants neither to read nor to write (GOAWAY both
 * ways, or after an error): the connection can be closed. */
bool md_admin_grpc_is_done(const struct md_admin_grpc *g);

#endif
