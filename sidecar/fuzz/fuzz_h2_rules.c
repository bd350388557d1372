/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/2 messages as a lying peer could send them, through codec/h2_rules.c.
 * Input: byte 0 picks request or response rules (bit 0) and the response's
 * method (bits 1-2: GET, HEAD, CONNECT); then records
 * [op][len][len bytes]: op & 3 = 0: a field (the bytes split at the first
 * ':' after the first byte into name and value), 1: the end of a header
 * block (op & 4: END_STREAM), 2: DATA of |len| bytes, 3: DATA's END_STREAM.
 * A field the rules take must be one HTTP/2 allows: that is what is checked. */
#include "codec/h2_rules.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_taken(const uint8_t *n, size_t nl, const uint8_t *v, size_t vl)
{
    if (nl == 0)
        abort();
    for (size_t i = 0; i < nl; i++)
        if ((n[i] >= 'A' && n[i] <= 'Z') || n[i] <= ' ' || n[i] >= 0x7f || (i && n[i] == ':'))
            abort();
    for (size_t i = 0; i < vl; i++)
        if ((v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            abort();
    if (n[0] != ':' && vl && (v[0] == ' ' || v[0] == '\t' || v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const char *const methods[] = {"GET", "HEAD", "CONNECT", "GET"};
    struct md_h2_rules r;
    if (data[0] & 1) {
        const char *m = methods[(data[0] >> 1) & 3];
        md_h2_rules_response_init(&r, m, strlen(m));
    } else {
        md_h2_rules_request_init(&r);
    }
    bool trailer = false, info;
    size_t at = 1;
    while (at + 2 <= size) {
        uint8_t op = data[at], len = data[at + 1];
        const uint8_t *p = data + at + 2;
        if ((size_t)len > size - at - 2)
            len = (uint8_t)(size - at - 2);
        at += 2 + (size_t)len;
        switch (op & 3) {
        case 0: {
            const uint8_t *colon = len > 1 ? memchr(p + 1, ':', len - 1) : NULL;
            size_t nl = colon ? (size_t)(colon - p) : len;
            const uint8_t *v = colon ? colon + 1 : p + len;
            size_t vl = colon ? len - nl - 1 : 0;
            if (md_h2_rules_field(&r, p, nl, v, vl, trailer) == MD_H2_FIELD_TAKE)
                check_taken(p, nl, v, vl);
            break;
        }
        case 1:
            if (md_h2_rules_block(&r, trailer, op & 4, &info) && !info)
                trailer = true;
            break;
        case 2: md_h2_rules_data(&r, len); break;
        case 3: md_h2_rules_data_end(&r); break;
        }
        if (r.why && !*r.why)
            abort(); /* a malformed message always names its rule */
    }
    return 0;
}
