/* SPDX-License-Identifier: Apache-2.0 */
/* A header as the codecs hand it over: bytes that live in the stream's
 * arena (or the codec's buffers) for the duration of the stream. */
#ifndef MESHD_HTTP_HDRS_H
#define MESHD_HTTP_HDRS_H

#include <stddef.h>
#include <stdint.h>

struct md_hdr {
    const char *name; /* lower case (HTTP/2); pseudo-headers start with ':' */
    size_t name_len;
    const char *value;
    size_t value_len;
};

#endif
