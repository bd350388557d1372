/* SPDX-License-Identifier: Apache-2.0 */
#include "core/buf.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

int md_buf_init(struct md_buf *b, size_t cap)
{
    b->data = malloc(cap);
    if (!b->data)
        return MD_ENOMEM;
    b->cap = cap;
    b->head = b->tail = 0;
    return 0;
}

void md_buf_fini(struct md_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = b->head = b->tail = 0;
}

uint8_t *md_buf_reserve(struct md_buf *b, size_t *room)
{
    if (b->head == b->tail) {
        b->head = b->tail = 0;
    } else if (b->tail == b->cap && b->head > 0) {
        /* Compaction costs a memmove of what is pending; it only happens when
         * the tail hit the end, so each byte moves at most once per fill. */
        memmove(b->data, b->data + b->head, b->tail - b->head);
        b->tail -= b->head;
        b->head = 0;
    }
    *room = b->cap - b->tail;
    return b->data + b->tail;
}

void md_buf_commit(struct md_buf *b, size_t n)
{
    b->tail += n;
}

void md_buf_consume(struct md_buf *b, size_t n)
{
    b->head += n;
    if (b->head == b->tail)
        b->head = b->tail = 0;
}

size_t md_buf_append(struct md_buf *b, const void *src, size_t len)
{
    size_t done = 0;
    /* Two rounds at most: what fits after the tail, then after compaction. */
    for (int round = 0; round < 2 && done < len; round++) {
        size_t room;
        uint8_t *p = md_buf_reserve(b, &room);
        size_t n = len - done < room ? len - done : room;
        memcpy(p, (const uint8_t *)src + done, n);
        md_buf_commit(b, n);
        done += n;
    }
    return done;
}
