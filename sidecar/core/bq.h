/* SPDX-License-Identifier: Apache-2.0 */
/* A queue of body bytes in fixed 16 KiB chunks, written by one side of a
 * stream and read by the other. It is bounded by its producer: HTTP/2 flow
 * control lets a peer send only what the consumer has taken. */
#ifndef MESHD_CORE_BQ_H
#define MESHD_CORE_BQ_H

#include <stddef.h>

struct md_bq_chunk;

struct md_bq {
    struct md_bq_chunk *head, *tail;
    size_t len; /* bytes queued */
};

static inline void md_bq_init(struct md_bq *q)
{
    q->head = q->tail = NULL;
    q->len = 0;
}
void md_bq_fini(struct md_bq *q);
/* Copies |len| bytes in. Returns 0 or MD_ENOMEM (nothing appended then). */
int md_bq_append(struct md_bq *q, const void *data, size_t len);
/* Copies up to |len| bytes out into |dst| and drops them; returns how many. */
size_t md_bq_read(struct md_bq *q, void *dst, size_t len);
/* Drops every byte; returns how many were dropped. */
size_t md_bq_clear(struct md_bq *q);

#endif
