/* SPDX-License-Identifier: Apache-2.0 */
#include "errlist.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEPT 200

void md_errlist_init(struct md_errlist *el, const char *file)
{
    memset(el, 0, sizeof(*el));
    el->file = file;
}

void md_errlist_fini(struct md_errlist *el)
{
    for (size_t i = 0; i < el->kept; i++)
        free(el->lines[i]);
    free(el->lines);
    el->lines = NULL;
    el->n = el->kept = 0;
}

void md_errlist_add(struct md_errlist *el, const char *resource, const char *field, const char *fmt,
                    ...)
{
    el->n++;
    if (el->kept == MAX_KEPT)
        return;
    if (!el->lines) {
        el->lines = calloc(MAX_KEPT, sizeof(char *));
        if (!el->lines)
            return; /* the count still makes the bundle fail */
    }
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    char *line = NULL;
    int rc = (field && *field)
                 ? asprintf(&line, "error: %s: %s: %s: %s", el->file, resource, field, reason)
                 : asprintf(&line, "error: %s: %s: %s", el->file, resource, reason);
    if (rc >= 0)
        el->lines[el->kept++] = line;
}

void md_errlist_print(const struct md_errlist *el, FILE *out)
{
    for (size_t i = 0; i < el->kept; i++)
        fprintf(out, "%s\n", el->lines[i]);
    if (el->n > el->kept)
        fprintf(out, "error: %s: ... and %zu more\n", el->file, el->n - el->kept);
}
