/* SPDX-License-Identifier: Apache-2.0 */
/* gRPC over HTTP/2 details the proxy needs: the grpc-timeout header and the
 * status codes meshd answers with (PROTOCOL-HTTP2.md in grpc/grpc). */
#ifndef MESHD_CODEC_GRPC_H
#define MESHD_CODEC_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* Field 1 of a unary body: |b| (|n| bytes) must be exactly one uncompressed
 * length-prefixed message; its field number 1 (the last one, as protobuf
 * reads repeats) must have wire type |wire| (0: varint into *v; 2: bytes
 * into *p, *len); other fields are skipped. Returns 1 when found, 0 when
 * absent, or -1 when the body or the message is malformed. Enough for the
 * one-field messages of grpc.health.v1. */
int md_grpc_field1(const uint8_t *b, size_t n, int wire, uint64_t *v, const uint8_t **p,
                   size_t *len);

#endif
