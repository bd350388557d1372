/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration errors, collected so that one run reports all of them.
 * Each prints as one line:  error: FILE: RESOURCE: FIELD: REASON */
#ifndef MESHD_XDS_ERRLIST_H
#define MESHD_XDS_ERRLIST_H

#include <stddef.h>
#include <stdio.h>

struct md_errlist {
    const char *file; /* borrowed; the bundle's name as the user gave it */
    char **lines;     /* owned */
    size_t n;         /* errors added (may exceed what is kept) */
    size_t kept;
};

void md_errlist_init(struct md_errlist *el, const char *file);
void md_errlist_fini(struct md_errlist *el);

/* Adds one error. |resource| names the object ("listener \"in\" (listeners[0])"),
 * |field| the path inside it ("tcp_proxy.cluster"; NULL or "" for the object
 * itself), |fmt| the reason. Past 200 errors only the count grows. */
void md_errlist_add(struct md_errlist *el, const char *resource, const char *field, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

/* Writes every kept line, then "... and N more" if some were dropped. */
void md_errlist_print(const struct md_errlist *el, FILE *out);

#endif
