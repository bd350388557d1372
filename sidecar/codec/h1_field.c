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
