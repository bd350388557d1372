/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP/2 message rules (RFC 9113 §8.1-8.3, §8.6; RFC 8441 §4), checked
 * once as a codec takes each field. nghttp2 would check them too, in a pass
 * of its own over every field before the codec's (about a tenth of a small
 * request's instructions): the sessions run with
 * nghttp2_option_set_no_http_messaging and these rules instead.
 *
 * One md_h2_rules per stream and direction: a server's for the request it
 * receives, a client's for the response. A MALFORMED answer is a stream
 * error PROTOCOL_ERROR for the caller to send; |why| names the rule. */
#ifndef MESHD_CODEC_H2_RULES_H
#define MESHD_CODEC_H2_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum md_h2_field {
    MD_H2_FIELD_TAKE,      /* a valid field */
    MD_H2_FIELD_DROP,      /* a field that must not count: left out (content-length in trailers) */
    MD_H2_FIELD_MALFORMED, /* the message breaks a rule: reset the stream */
};

struct md_h2_rules {
    uint32_t flags;         /* MD_H2R_* (h2_rules.c) */
    int status;             /* response: the block's :status */
    int64_t content_length; /* -1: none that binds the body */
    int64_t received;       /* DATA bytes so far */
    const char *why;        /* the rule broken, once MALFORMED */
};

/* A server's rules for a request, or a client's for the response to a
 * request with |method| (HEAD and CONNECT change what the response may
 * carry). */
void md_h2_rules_request_init(struct md_h2_rules *r);
void md_h2_rules_response_init(struct md_h2_rules *r, const char *method, size_t method_len);

/* One field of the current header block; |trailer|: a block after the
 * request's or the final response's headers. */
enum md_h2_field md_h2_rules_field(struct md_h2_rules *r, const uint8_t *name, size_t name_len,
                                   const uint8_t *value, size_t value_len, bool trailer);

/* The end of a header block (|end_stream|: it ended the stream too). Returns
 * false for a malformed message. For a response, *informational is set for a
 * 1xx block (the final response follows; the caller skips its fields). */
bool md_h2_rules_block(struct md_h2_rules *r, bool trailer, bool end_stream, bool *informational);

/* |n| DATA bytes; then the end of the stream on a DATA frame. False: malformed. */
bool md_h2_rules_data(struct md_h2_rules *r, size_t n);
bool md_h2_rules_data_end(struct md_h2_rules *r);

#endif
