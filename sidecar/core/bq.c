/* SPDX-License-Identifier: Apache-2.0 */
#include "core/bq.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK 16384
/* A queue's first chunk is sized to what arrives when that is small: a gRPC
 * unary message then costs one small (thread-cache) allocation, not 16 KiB. */
#define SMALL_MIN 256

struct md_bq_chunk {
    struct md_bq_chunk *next;
    size_t start, end, cap;
    unsigned char data[];
};

static struct md_bq_chunk *chunk_new(size_t cap)
{
    struct md_bq_chunk *c = malloc(sizeof(*c) + cap);
    if (c) {
        c->next = NULL;
        c->start = c->end = 0;
        c->cap = cap;
    }
    return c;
}

void md_bq_fini(struct md_bq *q)
{
    md_bq_clear(q);
}

size_t md_bq_clear(struct md_bq *q)
{
    size_t n = q->len;
    while (q->head) {
        struct md_bq_chunk *c = q->head;
        q->head = c->next;
        free(c);
    }
    q->tail = NULL;
    q->len = 0;
    return n;
}

int md_bq_append(struct md_bq *q, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t room = q->tail ? q->tail->cap - q->tail->end : 0;
    size_t rest = len > room ? len - room : 0;
    /* Make every chunk first, so a failed allocation appends nothing. */
    struct md_bq_chunk *fresh = NULL, **link = &fresh;
    while (rest > 0) {
        size_t cap =
            !q->head && !fresh && rest < CHUNK / 4 ? (rest < SMALL_MIN ? SMALL_MIN : rest) : CHUNK;
        struct md_bq_chunk *c = chunk_new(cap);
        if (!c) {
            while (fresh) {
                struct md_bq_chunk *n = fresh->next;
                free(fresh);
                fresh = n;
            }
            return MD_ENOMEM;
        }
        *link = c;
        link = &c->next;
        rest -= rest < cap ? rest : cap;
    }
    size_t n = len < room ? len : room;
    if (n) {
        memcpy(q->tail->data + q->tail->end, p, n);
        q->tail->end += n;
    }
    size_t done = n;
    for (struct md_bq_chunk *c = fresh; c; c = c->next) {
        size_t m = len - done < c->cap ? len - done : c->cap;
        memcpy(c->data, p + done, m);
        c->end = m;
        done += m;
    }
    if (fresh) {
        if (q->tail)
            q->tail->next = fresh;
        else
            q->head = fresh;
        struct md_bq_chunk *t = fresh;
        while (t->next)
            t = t->next;
        q->tail = t;
    }
    q->len += len;
    return 0;
}

size_t md_bq_read(struct md_bq *q, void *dst, size_t len)
{
    unsigned char *out = dst;
    size_t done = 0;
    while (done < len && q->head) {
        struct md_bq_chunk *c = q->head;
        size_t m = c->end - c->start;
        if (m > len - done)
            m = len - done;
        memcpy(out + done, c->data + c->start, m);
        c->start += m;
        done += m;
        if (c->start == c->end) {
            q->head = c->next;
            if (!q->head)
                q->tail = NULL;
            free(c);
        }
    }
    q->len -= done;
    return done;
}
