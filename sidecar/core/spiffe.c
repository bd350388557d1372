/* SPDX-License-Identifier: Apache-2.0 */
#include "core/spiffe.h"

#include <stdbool.h>
#include <string.h>

static bool td_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool path_char(char c)
{
    return td_char(c) || (c >= 'A' && c <= 'Z');
}

const char *md_spiffe_trust_domain_invalid(const char *td, size_t n)
{
    if (n == 0)
        return "empty trust domain";
    for (size_t i = 0; i < n; i++)
        if (!td_char(td[i]))
            return "trust domain has a character other than a-z, 0-9, '.', '-', '_'";
    return NULL;
}

const char *md_spiffe_id_invalid(const char *id, size_t n)
{
    static const char scheme[] = "spiffe://";
    if (n > MD_SPIFFE_ID_MAX)
        return "longer than 2048 bytes";
    if (n < sizeof(scheme) - 1 || memcmp(id, scheme, sizeof(scheme) - 1) != 0)
        return "does not start with spiffe://";
    size_t td = sizeof(scheme) - 1, i = td;
    while (i < n && id[i] != '/')
        i++;
    const char *why = md_spiffe_trust_domain_invalid(id + td, i - td);
    if (why)
        return why;
    while (i < n) { /* at a '/': one path segment follows */
        size_t seg = ++i;
        while (i < n && id[i] != '/')
            if (!path_char(id[i++]))
                return "path has a character other than A-Z, a-z, 0-9, '.', '-', '_'";
        if (i == seg)
            return "empty path segment (or a trailing '/')";
        if ((i - seg == 1 && id[seg] == '.') || (i - seg == 2 && memcmp(id + seg, "..", 2) == 0))
            return "path segment '.' or '..'";
    }
    return NULL;
}
