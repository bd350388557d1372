/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h1_field.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int md_h1_field_name(struct md_h1_field *f, const char *at, size_t len)
{
    if (f->name_len + len >= sizeof(f->name))
        return -1;
    for (size_t i = 0; i < len; i++)
        f->name[f->name_len++] = (char)((at[i] >= 'A' && at[i] <= 'Z') ? at[i] + 32 : at[i]);
    return 0;
}

int md_h1_field_value(struct md_h1_field *f, const char *at, size_t len, size_t max)
{
    if (f->value_len + len > max)
        return -1;
    if (f->value_len + len > f->value_cap) {
        size_t cap = f->value_cap ? f->value_cap : 256;
        while (cap < f->value_len + len)
            cap *= 2;
        char *v = realloc(f->value, cap);
        if (!v)
            return -1;
        f->value = v;
        f->value_cap = cap;
    }
    memcpy(f->value + f->value_len, at, len);
    f->value_len += len;
    return 0;
}

void md_h1_field_fini(struct md_h1_field *f)
{
    free(f->value);
    f->value = NULL;
    f->value_len = f->value_cap = f->name_len = 0;
}

bool md_h1_connection_lists(const char *value, size_t len, const char *name, size_t name_len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',' && value[i] != ' ' && value[i] != '\t')
            i++;
        if (i - start == name_len && strncasecmp(value + start, name, name_len) == 0)
            return true;
    }
    return false;
}

static bool tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

enum md_h1_te md_h1_transfer_codings(const struct md_hdr *hdrs, size_t n)
{
    bool any = false, chunked = false, last_chunked = false, other = false;
    for (size_t f = 0; f < n; f++) {
        if (!md_hdr_is(&hdrs[f], "transfer-encoding"))
            continue;
        any = true;
        const char *v = hdrs[f].value;
        size_t len = hdrs[f].value_len;
        for (size_t i = 0; i < len;) {
            /* RFC 9110 §5.6.1: a list may hold empty elements; skip them */
            while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
                i++;
            if (i == len)
                break;
            size_t start = i;
            while (i < len && tchar(v[i]))
                i++;
            size_t name_len = i - start;
            while (i < len && (v[i] == ' ' || v[i] == '\t'))
                i++;
            bool params = i < len && v[i] == ';';
            while (params && i < len && v[i] != ',') /* transfer-parameters: refused anyway */
                i++;
            if (name_len == 0 || (i < len && v[i] != ','))
                return MD_H1_TE_MALFORMED;
            bool is_chunked = name_len == 7 && strncasecmp(v + start, "chunked", 7) == 0;
            if (is_chunked && (chunked || params))
                return MD_H1_TE_MALFORMED; /* chunked twice, or with parameters it has none of */
            chunked |= is_chunked;
            other |= !is_chunked;
            last_chunked = is_chunked;
        }
    }
    if (!any)
        return MD_H1_TE_NONE;
    /* §6.3: chunked not last (or absent) leaves the length unknown: 400.
     * §6.1: a coding the server does not implement: 501. */
    if (!last_chunked)
        return MD_H1_TE_MALFORMED;
    return other ? MD_H1_TE_UNSUPPORTED : MD_H1_TE_CHUNKED;
}
