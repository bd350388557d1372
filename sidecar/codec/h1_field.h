/* SPDX-License-Identifier: Apache-2.0 */
/* Gathers one HTTP/1 header field from llhttp's callbacks, which may deliver
 * the name and the value in pieces: the name lower-cased (as HTTP/2 and the
 * router want it), the value as it came. Used by both HTTP/1 codecs. */
#ifndef MESHD_CODEC_H1_FIELD_H
#define MESHD_CODEC_H1_FIELD_H

#include "http/hdrs.h"

#include <stdbool.h>
#include <stddef.h>

struct md_h1_field {
    char name[256];
    size_t name_len;
    char *value; /* owned, grows up to the caller's limit */
    size_t value_len, value_cap;
};

/* Returns 0, or -1 when the name passes 255 bytes. */
int md_h1_field_name(struct md_h1_field *f, const char *at, size_t len);
/* Returns 0, or -1 when the value would pass |max| bytes or memory runs out. */
int md_h1_field_value(struct md_h1_field *f, const char *at, size_t len, size_t max);
/* Forgets the field (keeps the value buffer for the next one). */
static inline void md_h1_field_reset(struct md_h1_field *f)
{
    f->name_len = f->value_len = 0;
}
static inline const char *md_h1_field_value_ptr(const struct md_h1_field *f)
{
    return f->value ? f->value : "";
}
void md_h1_field_fini(struct md_h1_field *f);

/* Does a Connection header value (comma-separated tokens, any case) name the
 * field |name| (lower case)? Those fields are hop-by-hop (RFC 9110 §7.6.1). */
bool md_h1_connection_lists(const char *value, size_t len, const char *name, size_t name_len);

/* What a request's Transfer-Encoding fields say (RFC 9112 §6.1, §6.3). */
enum md_h1_te {
    MD_H1_TE_NONE,        /* no Transfer-Encoding field */
    MD_H1_TE_CHUNKED,     /* exactly "chunked" (any case, over one or more fields) */
    MD_H1_TE_MALFORMED,   /* empty, not tokens, chunked not last or twice: 400 */
    MD_H1_TE_UNSUPPORTED, /* another coding before a final chunked: 501 */
};

/* Reads every transfer-encoding field of |hdrs| (|n| of them, names lower
 * case) as one list of codings. chunked is the only coding meshd applies. */
enum md_h1_te md_h1_transfer_codings(const struct md_hdr *hdrs, size_t n);

#endif
