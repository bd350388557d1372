/* SPDX-License-Identifier: Apache-2.0 */
/* gRPC over HTTP/2 details the proxy needs: the grpc-timeout header and the
 * status codes meshd answers with (PROTOCOL-HTTP2.md in grpc/grpc). */
#ifndef MESHD_CODEC_GRPC_H
#define MESHD_CODEC_GRPC_H

#include <stdbool.h>
#include <stddef.h>

enum md_grpc_status {
    MD_GRPC_OK = 0,
    MD_GRPC_CANCELLED = 1,
    MD_GRPC_INTERNAL = 13,
    MD_GRPC_DEADLINE_EXCEEDED = 4,
    MD_GRPC_PERMISSION_DENIED = 7,
    MD_GRPC_RESOURCE_EXHAUSTED = 8,
    MD_GRPC_UNIMPLEMENTED = 12,
    MD_GRPC_UNAVAILABLE = 14,
};

/* Parses a grpc-timeout value ("1..8 digits" + H|M|S|m|u|n) into seconds.
 * Returns false when malformed (the header is then ignored, as gRPC does). */
bool md_grpc_timeout_parse(const char *v, size_t len, double *seconds);

/* Formats |seconds| (> 0) as a grpc-timeout value in the finest unit that
 * fits 8 digits, rounding down so the upstream never sees more than is left
 * (but at least 1 unit).
 * Writes at most 10 bytes plus NUL into |buf|; returns the length. */
size_t md_grpc_timeout_format(double seconds, char *buf);

/* Is |v| an application/grpc content type ("application/grpc" or "+proto"...)? */
bool md_grpc_is_content_type(const char *v, size_t len);

#endif
